"""A training step's gradient as a weighted sum over parts: the images of a mini-batch, or
chunks of a batch of crops, each in its own graph.

The loss of a mini-batch is the sum over its parts of each part's loss times its weight (its
share of the RoIs, or 1/N). `backward_parts` computes the parts one after the other, and each
`backward()` adds its gradients into `.grad` in part order. Computed this way a mini-batch no
longer needs one zero-padded blob for its images, and the parts are independent: the CPU speed
path (`tinyrcnn.speed`, hook 'backward_parts') runs them on parallel threads and adds their
gradients in the same order, so that the result does not change by a bit.
"""
from .. import backend, nn


def usable_threads(model, threads, parts, device='cpu'):
    """How many parts a step of `model` is cut into: at most `threads` and `parts`, and 1 off
    the CPU or with dropout active (its masks come from one shared generator, whose draws
    parallel threads would interleave unpredictably)."""
    dropout = any(m.p > 0 for m in model.modules() if isinstance(m, nn.Dropout))
    return 1 if device != 'cpu' or dropout else max(1, min(threads, parts))


def backward_parts(run, parts, model, threads=1):
    """Gradients of a loss that is a weighted sum over `parts`, left in model's parameters'
    .grad (old gradients are cleared first).

    run(model, part) -> (list of loss Tensors, weight); the first loss is the one minimised.
    With the CPU speed path enabled, the parts run on up to `threads` threads where
    `usable_threads` allows (not with dropout active). Returns the weighted sums of the
    losses, as floats."""
    params = model.parameters()
    on_threads = backend.fast_cpu('backward_parts', params[0]) if params else None
    threads = usable_threads(model, threads, len(parts), params[0].device) if params else 1
    if on_threads is not None and threads > 1:
        return on_threads(run, parts, model, threads)
    for p in params:
        p.grad = None
    arrays, weights = [], []
    for part in parts:                                       # fixed order: part 0, 1, ...
        losses, weight = run(model, part)
        (losses[0] * weight).backward()                      # adds into p.grad
        arrays += [v.data for v in losses]
        weights.append(weight)
    # All the step's loss values in one device -> host copy: on a GPU each .item() would make
    # the host wait for the device once more.
    xp = backend.get_array_module(*arrays)
    host = backend.to_device(xp.stack(arrays), 'cpu').reshape(len(parts), -1)   # (parts, losses)
    values = [[float(v) * w for v in row] for row, w in zip(host, weights)]
    return [sum(v[k] for v in values) for k in range(len(values[0]))]
