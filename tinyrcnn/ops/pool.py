"""2-D max pooling; forward saves the argmax, backward scatters the gradient to it.

The argmax is the flat index y*W + x of the winner inside its (H, W) plane, the same
bookkeeping as RoI pooling (Fast R-CNN, Sec. 2.3). CPU: a strided window view and NumPy's
argmax (the first maximum wins). GPU: `kernels/max_pool.cu`. `tinyrcnn.speed` registers a
faster CPU path for VGG's 2x2/stride-2 windows (hook 'max_pool2d', same numbers).
"""
import numpy as np

from .. import backend
from ..tensor import Function


def _forward_cpu(x, k, stride, Ho, Wo):
    N, C, H, W = x.shape
    sN, sC, sH, sW = x.strides
    windows = np.lib.stride_tricks.as_strided(
        x, shape=(N, C, Ho, Wo, k, k), strides=(sN, sC, sH * stride, sW * stride, sH, sW),
        writeable=False).reshape(N, C, Ho, Wo, k * k)      # (N, C, Ho, Wo, k*k)
    local = windows.argmax(axis=-1)                         # index inside the window
    y = np.take_along_axis(windows, local[..., None], axis=-1)[..., 0]
    i, j = np.divmod(local, k)
    oy = np.arange(Ho).reshape(Ho, 1) * stride
    ox = np.arange(Wo).reshape(1, Wo) * stride
    argmax = (oy + i) * W + (ox + j)                        # flat index in the (H, W) plane
    return y, argmax


def _backward_cpu(gy, argmax, shape, overlapping):
    N, C, H, W = shape
    NC = N * C
    flat = (argmax.reshape(NC, -1) + np.arange(NC).reshape(NC, 1) * (H * W)).ravel()
    if overlapping:   # two windows can share a winner: accumulate
        gx = np.bincount(flat, weights=gy.ravel(), minlength=NC * H * W).astype(gy.dtype)
    else:             # each input pixel wins at most once: plain assignment
        gx = np.zeros(NC * H * W, dtype=gy.dtype)
        gx[flat] = gy.ravel()
    return gx.reshape(shape)


def _forward_gpu(x, k, stride, Ho, Wo):
    xp = backend.get_array_module(x)
    N, C, H, W = x.shape
    y = xp.empty((N, C, Ho, Wo), dtype=x.dtype)
    argmax = xp.empty((N, C, Ho, Wo), dtype=np.int64)
    kern = backend.kernel('max_pool.cu', 'max_pool_forward', x.dtype)
    backend.launch(kern, y.size, (xp.ascontiguousarray(x), y, argmax, N * C, H, W, k, stride,
                                  Ho, Wo), x.dtype)
    return y, argmax


def _backward_gpu(gy, argmax, shape, overlapping):
    xp = backend.get_array_module(gy)
    N, C, H, W = shape
    gx = xp.zeros(shape, dtype=gy.dtype)
    kern = backend.kernel('max_pool.cu', 'max_pool_backward', gy.dtype)
    backend.launch(kern, gy.size, (xp.ascontiguousarray(gy), argmax, gx, N * C, H, W,
                                   gy.shape[2], gy.shape[3]), gy.dtype)
    return gx


class MaxPool2d(Function):
    def forward(self, x, kernel_size, stride):
        Ho = (x.shape[2] - kernel_size) // stride + 1
        Wo = (x.shape[3] - kernel_size) // stride + 1
        self.gpu = backend.get_array_module(x) is not np
        self.shape, self.overlapping = x.shape, stride < kernel_size
        fwd = _forward_gpu if self.gpu else _forward_cpu
        y, self.argmax = fwd(x, kernel_size, stride, Ho, Wo)
        return y

    def backward(self, gy):
        bwd = _backward_gpu if self.gpu else _backward_cpu
        return (bwd(gy, self.argmax, self.shape, self.overlapping),)


def max_pool2d(x, kernel_size, stride=None):
    """Max pooling over k x k windows. x (N, C, H, W) -> (N, C, Ho, Wo), Ho = (H - k)//s + 1."""
    k = int(kernel_size)
    s = k if stride is None else int(stride)
    if x.ndim != 4:
        raise ValueError(f'max_pool2d expects x of shape (N, C, H, W), got {tuple(x.shape)}')
    if k < 1 or s < 1:
        raise ValueError(f'max_pool2d expects kernel_size and stride >= 1, got {k}, {s}')
    if x.shape[2] < k or x.shape[3] < k:
        raise ValueError(f'max_pool2d: input {tuple(x.shape[2:])} is smaller than the window {k}')
    op = backend.fast_cpu('max_pool2d', x) or MaxPool2d          # the CPU speed hook
    return op.apply(x, kernel_size=k, stride=s)
