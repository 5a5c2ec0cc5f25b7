"""The parts of a training step on parallel threads (the hook 'backward_parts').

`train.parts.backward_parts` computes a mini-batch's parts (its images, or chunks of a batch of
crops) one after the other. NumPy and OpenBLAS release Python's lock while they compute, so two
threads that each run the forward and backward pass of their own part keep two cores busy,
where one graph leaves OpenBLAS's second thread idle on a CPU-sized network's small matrices.

Each thread builds its graph on its own replica of the model: new module and Parameter objects
that share the model's arrays (and its other attributes). With two parts, a replica's gradient
goes straight into the model's .grad as soon as it is computed, the second to arrive added in
place to the first: g0 + g1 and g1 + g0 are the same floats (IEEE addition is commutative,
though not associative), so the result is the sequential loop's, bit for bit, whatever the
threads' timing, and a step holds one set of gradients instead of one per thread (VGG16's fc
layers: 0.5 GB). With more parts each replica keeps its own .grad, added into the model's in
part order after the threads end. This is data parallelism in the manner of Krizhevsky's "one
weird trick" (2014), on threads. What it assumes of the model: its forward pass changes no
state of its own (a replica's changes would be lost; no tinyrcnn layer does), and no other
thread turns off graph recording meanwhile (`no_grad` is one flag for the whole process).
"""
import copy
import threading

from ..nn import Module, Parameter
from .threads import blas_threads, thread_pool


class _IntoModelGrad(Parameter):
    """A replica's parameter whose gradient, when the engine stores it, is added into the
    model parameter's .grad under a lock (it reads as None, so the engine hands over a copy
    of its own to keep)."""

    def _add(self, g):
        if g is None:
            return
        with self._lock:
            if self._model_param.grad is None:
                self._model_param.grad = g
            else:
                self._model_param.grad += g          # in place: the copy the engine made

    grad = property(lambda self: None, _add)


def replicate(model):
    """A copy of `model` for one thread: each module a new object, each parameter a new
    Parameter on the same array (no copy), and every other attribute the model's own object,
    shared rather than copied (the forward pass changes no state; see the module's docstring).
    A module or parameter reached twice is copied once. About 0.1 ms for a detection network,
    where `copy.deepcopy` of everything but the arrays took 3 ms a replica (session 11)."""
    memo = {}

    def copied(value):
        if id(value) not in memo:
            twin = memo[id(value)] = copy.copy(value)      # new object, the same attributes
            if isinstance(value, Parameter):
                twin.grad = None
            else:
                for name, v in vars(value).items():
                    if isinstance(v, (Module, Parameter)):
                        vars(twin)[name] = copied(v)
        return memo[id(value)]
    return copied(model)


def backward_parts_on_threads(run, parts, model, threads):
    """`train.parts.backward_parts` with the parts on `threads` threads, one BLAS thread each."""
    replicas = [replicate(model) for _ in parts]
    params = model.parameters()
    for p in params:                                         # no stale gradient survives an error
        p.grad = None
    shared = len(parts) == 2                                 # see the module's docstring
    if shared:
        lock = threading.Lock()
        for replica in replicas:
            for p, q in zip(params, replica.parameters()):
                q.__class__, q._model_param, q._lock = _IntoModelGrad, p, lock

    def one(k):
        losses, weight = run(replicas[k], parts[k])
        (losses[0] * weight).backward()
        return [v.item() * weight for v in losses]

    with blas_threads(1):                                    # each worker's products on one core
        try:
            values = list(thread_pool(threads).map(one, range(len(parts))))
        except BaseException:
            for p in params:                                 # no half-summed gradient survives
                p.grad = None
            raise
    if not shared:
        for replica in replicas:                             # fixed order: part 0, 1, ...
            for p, q in zip(params, replica.parameters()):
                if q.grad is not None:
                    p.grad = q.grad if p.grad is None else p.grad + q.grad
    return [sum(v[k] for v in values) for k in range(len(values[0]))]
