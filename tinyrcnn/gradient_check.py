"""Gradient checking: autograd against float64 central differences (CS231n's rel_error idea).

Shared by the tests and the notebooks. The scalar that is differentiated is
sum(fn(*inputs) * r) for a fixed random r, so every output element takes part and a gradient
routed to the wrong place cannot cancel out.
"""
import numpy as np

from . import backend
from .tensor import Tensor


def gradcheck(fn, inputs, eps=1e-6, rtol=1e-5, atol=1e-8, seed=0):
    """Compare autograd gradients of `fn(*inputs)` with central differences.

    inputs: Tensors; those with requires_grad=True are checked and must be float64 (float32
    differences are too coarse to check anything). Other arguments (labels, rois) pass through.
    Returns True; raises AssertionError naming the input and the worst relative error
    |analytic - numeric| / max(|analytic|, |numeric|) when some element is off by more than
    atol + rtol * |numeric|.
    """
    inputs = list(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError('gradcheck needs at least one input Tensor with requires_grad=True')
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise ValueError(f'gradcheck needs float64 inputs, input {i} is {inputs[i].dtype}')
        xp = backend.get_array_module(inputs[i].data)
        inputs[i].data = xp.ascontiguousarray(inputs[i].data)  # so reshape(-1) below is a view

    out = fn(*inputs)
    xp = backend.get_array_module(out.data)
    r = xp.asarray(np.random.default_rng(seed).standard_normal(out.shape))  # fixed projection

    def scalar():
        return float((fn(*inputs).data * r).sum())

    for i in checked:
        inputs[i].grad = None
    (out * Tensor(r)).sum().backward()

    for i in checked:
        t = inputs[i]
        analytic = backend.to_device(t.grad if t.grad is not None else xp.zeros_like(t.data), 'cpu')
        numeric = np.zeros(t.shape)
        flat = t.data.reshape(-1)  # a view: perturbing it perturbs the input
        for k in range(flat.size):
            old = flat[k].item()
            flat[k] = old + eps
            f_plus = scalar()
            flat[k] = old - eps
            f_minus = scalar()
            flat[k] = old
            numeric.flat[k] = (f_plus - f_minus) / (2 * eps)
        err = np.abs(analytic - numeric)
        bad = err > atol + rtol * np.abs(numeric)
        if bad.any():
            rel = err / np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), 1e-300)
            worst = int(np.argmax(np.where(bad, rel, -1)))
            raise AssertionError(
                f'gradcheck failed for input {i} (shape {t.shape}): worst relative error '
                f'{rel.flat[worst]:.3e} at flat index {worst} (analytic {analytic.flat[worst]:.6e}, '
                f'numeric {numeric.flat[worst]:.6e}); {int(bad.sum())} of {bad.size} elements off')
    return True


def rel_error(a, b):
    """max |a - b| / max(|a|, |b|): the one number a check reports."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1e-300, np.maximum(np.abs(a), np.abs(b)))))
