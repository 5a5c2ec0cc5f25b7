"""Adaptive average pooling to a fixed (out_h, out_w) grid, as torchvision's VGG `avgpool`.

Bin i along an axis of length S covers [floor(i*S/out), ceil((i+1)*S/out)), PyTorch's rule;
at 224x224 input VGG16's map is already 7x7 and every bin is one pixel.
"""
import numpy as np

from .. import backend
from ..tensor import Function


def _edges(size, out):
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


class AdaptiveAvgPool2d(Function):
    def forward(self, x, output_size):
        xp = backend.get_array_module(x)
        N, C, H, W = x.shape
        oh, ow = output_size
        self.shape, self.rows, self.cols = x.shape, _edges(H, oh), _edges(W, ow)
        if (H, W) == (oh, ow):
            return x.copy()
        y = xp.empty((N, C, oh, ow), dtype=x.dtype)
        for i, (h0, h1) in enumerate(self.rows):
            for j, (w0, w1) in enumerate(self.cols):
                y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
        return y

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        if self.shape[2:] == gy.shape[2:]:
            return (gy.copy(),)
        gx = xp.zeros(self.shape, dtype=gy.dtype)
        for i, (h0, h1) in enumerate(self.rows):
            for j, (w0, w1) in enumerate(self.cols):
                area = (h1 - h0) * (w1 - w0)
                gx[:, :, h0:h1, w0:w1] += (gy[:, :, i, j] / area)[:, :, None, None]
        return (gx,)


def adaptive_avg_pool2d(x, output_size):
    """x (N, C, H, W) -> (N, C, out_h, out_w), averaging over PyTorch's adaptive bins."""
    if x.ndim != 4:
        raise ValueError(f'adaptive_avg_pool2d expects (N, C, H, W), got {tuple(x.shape)}')
    oh, ow = (output_size, output_size) if np.isscalar(output_size) else output_size
    if oh < 1 or ow < 1:
        raise ValueError(f'adaptive_avg_pool2d output size must be >= 1, got {output_size}')
    return AdaptiveAvgPool2d.apply(x, output_size=(int(oh), int(ow)))
