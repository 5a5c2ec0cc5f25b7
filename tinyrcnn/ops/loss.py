"""The two halves of Fast R-CNN's multi-task loss (Sec. 2.3): log loss and smooth L1."""
import numpy as np

from .. import backend
from ..tensor import Function, Tensor


def _labels_array(labels):
    """labels as an int64 array where they are: NumPy (lists too) or CuPy."""
    labels = labels.data if isinstance(labels, Tensor) else labels
    labels = labels if backend.is_cupy_array(labels) else np.asarray(labels)
    if labels.dtype.kind not in 'iu':
        raise ValueError(f'cross_entropy expects integer labels, got dtype {labels.dtype}')
    return labels.astype(np.int64, copy=False)


def _label_range(labels):
    """(min, max) of labels as ints. Labels on the GPU are read back for it, both in one copy
    (each int() would make the host wait once more); training passes them from the host,
    where this costs no wait, and they are uploaded after the check."""
    xp = backend.get_array_module(labels)
    lo, hi = backend.to_device(xp.stack([labels.min(), labels.max()]), 'cpu')
    return int(lo), int(hi)


class CrossEntropy(Function):
    def forward(self, logits, labels):
        xp = backend.get_array_module(logits)
        N = logits.shape[0]
        shifted = logits - logits.max(axis=1, keepdims=True)    # stable: exp never overflows
        log_z = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        log_p = shifted - log_z                                  # (N, K) log softmax
        self.p, self.labels = xp.exp(log_p), labels
        return -log_p[xp.arange(N), labels].mean()

    def backward(self, gy):
        xp = backend.get_array_module(self.p)
        N = self.p.shape[0]
        g = self.p.copy()
        g[xp.arange(N), self.labels] -= 1                        # softmax - one_hot
        return g * (gy / N), None


def cross_entropy(logits, labels):
    """Mean over rows of -log softmax(logits)[label]. logits (N, K), labels (N,) in [0, K)."""
    if logits.ndim != 2:
        raise ValueError(f'cross_entropy expects logits of shape (N, K), got {tuple(logits.shape)}')
    labels = _labels_array(labels)
    N, K = logits.shape
    if labels.shape != (N,):
        raise ValueError(f'cross_entropy expects labels of shape ({N},), got {tuple(labels.shape)}')
    if N == 0:
        raise ValueError('cross_entropy needs at least one row')
    lo, hi = _label_range(labels)
    if lo < 0 or hi >= K:
        raise ValueError(f'cross_entropy: labels must be in [0, {K - 1}], got values in [{lo}, {hi}]')
    device = backend.device_of(logits.data if isinstance(logits, Tensor) else logits)
    return CrossEntropy.apply(logits, backend.to_device(labels, device))


class SmoothL1(Function):
    def forward(self, x, t, weight, sigma):
        xp = backend.get_array_module(x)
        s2 = sigma * sigma
        d = x - t
        small = xp.abs(d) < 1.0 / s2
        f = xp.where(small, 0.5 * s2 * d * d, xp.abs(d) - 0.5 / s2)
        g = xp.where(small, s2 * d, xp.sign(d))                   # d f / d x
        if weight is not None:
            f, g = f * weight, g * weight
        self.g, self.N = g, x.shape[0]
        return (f.sum() / self.N).astype(x.dtype)

    def backward(self, gy):
        gx = self.g * (gy / self.N)
        return gx, -gx, None


def smooth_l1_loss(input, target, weight=None, sigma=1.0):
    """sum(weight * smoothL1(input - target)) / N, N = rows of input (Fast R-CNN eq. 3).

    smoothL1(d) = 0.5 (sigma d)^2 if |d| < 1/sigma^2 else |d| - 0.5/sigma^2; sigma = 1 is the
    paper's loss, sigma = 3 the RPN's in the Faster R-CNN code. `weight` masks which of the
    4(K+1) outputs count (only the true class's four, only for foreground RoIs).
    """
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(f'smooth_l1_loss: input {tuple(input.shape)} and target '
                         f'{tuple(target.shape)} must have the same shape')
    if weight is not None:
        weight = weight.data if isinstance(weight, Tensor) else weight
        if tuple(weight.shape) != tuple(input.shape):
            raise ValueError(f'smooth_l1_loss: weight {tuple(weight.shape)} must have the shape of '
                             f'input {tuple(input.shape)}')
    if sigma <= 0:
        raise ValueError(f'smooth_l1_loss expects sigma > 0, got {sigma}')
    if input.ndim == 0 or input.shape[0] == 0:
        raise ValueError('smooth_l1_loss needs at least one row')
    if not isinstance(target, Tensor):
        target = Tensor(target)
    return SmoothL1.apply(input, target, weight, sigma=float(sigma))
