"""Two cores for one training step: independent parts of a mini-batch on parallel threads.

NumPy and OpenBLAS release Python's lock while they compute, so two threads that each run the
forward and backward pass of their own images (or crops) keep two cores busy, where one big
graph leaves OpenBLAS's second thread idle on the small matrices of a CPU-sized network. Each
part gets its own graph; its gradients are kept apart (`tensor.backward_into`) and added into
the parameters' .grad in part order, so thread timing never changes a bit of the result. This
is data parallelism in the manner of Krizhevsky's "one weird trick" (2014), on threads.

Inside one op, on the main thread: `split_work` cuts NumPy's single-core loops (im2col, col2im,
pooling, ReLU, the Winograd transforms) in two halves, and `matmul_stack` runs a stack of
small products as two halves on one-thread BLAS.
"""
import functools
import os
import threading

import numpy as np

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


# ---------------------------------------------------------------------------------------------
# Inside one op: the memory-bound NumPy loops (im2col, col2im, pooling, ReLU, the Winograd
# transforms) split in two
# ---------------------------------------------------------------------------------------------
INTRA_OP_MIN_ELEMENTS = 1 << 18      # below this a thread hand-off costs about what it saves


@functools.lru_cache(maxsize=None)
def _helper():
    from concurrent.futures import ThreadPoolExecutor
    return ThreadPoolExecutor(1)     # the second half's thread (no BLAS setting of its own)


def _forget_pools():
    """A forked child (selective search's worker processes) inherits the pools but not their
    threads: work submitted there would wait forever. It starts new ones instead."""
    _helper.cache_clear()
    thread_pool.cache_clear()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_forget_pools)


def usable_cores():
    """Cores this process may run on (its CPU affinity where the OS tells, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                  # macOS, Windows
        return os.cpu_count() or 1


def intra_op_threads():
    """Whether `split_work` splits: two or more cores, the main thread (training's per-image
    threads already keep the cores busy), and matrix products whose idle threads go to sleep.
    OpenBLAS's workers spin for 2^28 cycles (about 0.1 s) after each product unless
    OPENBLAS_THREAD_TIMEOUT was set before NumPy loaded it, and a spinning worker takes the
    core our second half needs: measured on the 2-core machine, the VGG16 trunk went 630 ->
    650 ms with the split and a spinning BLAS, 630 -> 610 ms with it asleep. `import tinyrcnn`
    sets the variable when NumPy is not loaded yet (see tinyrcnn/__init__.py)."""
    if usable_cores() < 2 or threading.current_thread() is not threading.main_thread():
        return False
    return backend.blas_idle_sleeps()


def split_work(n, elements, fn):
    """Call fn(lo, hi) to cover range(n): in two halves on two threads when `intra_op_threads()`
    and the work has at least INTRA_OP_MIN_ELEMENTS elements, else as one call.

    For element-wise and copying work that NumPy runs on one core: the main thread does one
    half, a helper thread the other (NumPy releases Python's lock inside its loops). The halves
    must write disjoint parts of the output; the numbers are the same either way.
    """
    if n < 2 or elements < INTRA_OP_MIN_ELEMENTS or not intra_op_threads():
        fn(0, n)
        return
    mid = n // 2
    other = _helper().submit(fn, mid, n)
    try:
        fn(0, mid)
    finally:
        other.result()


def matmul_stack(a, b):
    """a (B, m, k) @ b (B, k, n) -> (B, m, n): NumPy's stacked product, but with the stack cut
    in two halves on two threads of one-threaded BLAS where `intra_op_threads()` allows.
    For the Winograd products (sixteen (K, C) @ (C, tiles) per layer) each product is too
    small for OpenBLAS to keep two threads busy; measured on the 2-core machine, stacks of 16
    products of VGG16's sizes ran at 137-200 GFLOP/s on BLAS's threads and 160-240 GFLOP/s
    split this way. The numbers are the same either way (each product runs whole). Only on
    exactly two usable cores, the case measured: with more, two one-thread halves would leave
    cores idle that OpenBLAS's own threads use.
    """
    B, m = a.shape[0], a.shape[1]
    out = np.empty((B, m, b.shape[2]), dtype=np.result_type(a, b))

    def products(lo, hi):
        np.matmul(a[lo:hi], b[lo:hi], out=out[lo:hi])
    if (B < 2 or out.size < INTRA_OP_MIN_ELEMENTS or usable_cores() != 2
            or backend._openblas_threads_setter() is None or not intra_op_threads()):
        products(0, B)                                       # whole, on BLAS's own threads
    else:
        with backend.blas_threads(1):
            split_work(B, out.size, products)
    return out
