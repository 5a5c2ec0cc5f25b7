"""Two cores for one training step: independent parts of a mini-batch on parallel threads.

NumPy and OpenBLAS release Python's lock while they compute, so two threads that each run the
forward and backward pass of their own images (or crops) keep two cores busy, where one big
graph leaves OpenBLAS's second thread idle on the small matrices of a CPU-sized network. Each
part gets its own graph; its gradients are kept apart (`tensor.backward_into`) and added into
the parameters' .grad in part order, so thread timing never changes a bit of the result. This
is data parallelism in the manner of Krizhevsky's "one weird trick" (2014), on threads.
"""
import functools

from . import backend
from .tensor import backward_into


@functools.lru_cache(maxsize=None)
def thread_pool(threads):
    """A pool of `threads` worker threads (`backward_parts` runs them with one BLAS thread each)."""
    from concurrent.futures import ThreadPoolExecutor
    return ThreadPoolExecutor(threads)


def usable_threads(model, threads, parts, device='cpu'):
    """How many threads `parts` parts of a step of `model` may use: at most `threads` and
    `parts`, and 1 off the CPU or with dropout active (its masks come from one shared
    generator, whose draws threads would interleave unpredictably)."""
    from . import nn
    dropout = any(m.p > 0 for m in model.modules() if isinstance(m, nn.Dropout))
    return 1 if device != 'cpu' or dropout else max(1, min(threads, parts))


def backward_parts(run, parts, params, threads=1):
    """Gradients of a loss that is a weighted sum over `parts`.

    run(part) -> (list of loss Tensors, weight); the first loss is the one minimised. With
    threads > 1 the parts run on `thread_pool(threads)`, else one after the other. The
    gradients of every part are summed, in part order, into p.grad of `params` (whose old
    gradients are cleared first). Returns the weighted sums of the losses, as floats.
    """
    def one(part):
        losses, weight = run(part)
        sink = {}
        backward_into(losses[0] * weight, None, sink)
        return [v.item() * weight for v in losses], sink

    if threads > 1:
        with backend.blas_threads(1):                        # each worker's products on one core
            results = list(thread_pool(threads).map(one, parts))
    else:
        results = list(map(one, parts))
    for p in params:
        p.grad = None
    for _, sink in results:                                  # fixed order: part 0, 1, ...
        for p, g in sink.values():
            p.grad = g.copy() if p.grad is None else p.grad + g
    return [sum(r[0][k] for r in results) for k in range(len(results[0][0]))]
