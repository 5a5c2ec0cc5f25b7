"""RoI pooling's CPU speed path: both passes in C++, or the forward vectorised over an RoI's bins.

The reference (`ops.roi_pool._forward_numpy`) visits every bin of every RoI in Python, and its
backward calls np.add.at once per RoI. Where g++ builds it, `roi_pool.cpp` reads the map
channels-last and scans each bin's pixels once for all its channels (each channel in the CUDA
kernel's scan order; RoIs split over two threads), and adds the gradients back in the
reference's order (channels split over two threads). Without a compiler, each RoI is
one NumPy step (`forward_numpy`): the bins' windows are gathered as index arrays (padded to the
longest bin by repeating an index, harmless under max) and reduced in two passes, over columns
then rows. A max over windows loses which pixel won, so the max is taken over int64 keys that
order pixels by value and then by scan position: its low bits give the argmax. Same outputs as
the reference either way, bit for bit.
"""
import numpy as np

from ..ops.roi_pool import RoIPool, _backward_numpy, bin_edges
from . import native
from .threads import split_work

_P, _I = native.pointer, native.i64
MAX_PIXELS = 2 ** 31 - 1              # roi_pool.cpp keeps a plane's pixel indices in 32 bits
_SIGNATURES = {'roi_pool_forward': [_P] * 8 + [_I] * 7,             # as in roi_pool.cpp
               'roi_pool_backward': [_P] * 4 + [_I] * 7}


def _compiled(name, dtype):
    return native.typed('roi_pool.cpp', name, dtype, _SIGNATURES,
                        'RoI pooling runs its NumPy passes', optimise='-O3')   # vectorised


def _order_keys(x):
    """int64 keys of x, channels last (N, H, W, C), that order pixels the way the kernel's scan
    picks its winner: by value, then the earlier pixel (smaller h * W + w) first.

    key = rank(value) << 32 | (2**32 - 1 - (h * W + w)), where rank is any integer that orders
    like the value (-0.0 ties with 0.0 and every NaN ranks above everything, as in the kernel).
    The max of keys over a window is then its first maximum, so one np.max gives max and argmax
    together, and windows may overlap or repeat pixels without changing the answer.
    """
    N, C, H, W = x.shape
    if x.dtype == np.float32:  # the bits of a float32, sign-folded, order like its value
        bits = np.where(np.isnan(x), np.float32(np.nan), x + np.float32(0)).view(np.int32)
        rank = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    else:                      # float64 has no spare bits: rank by sorting (slower; for checks)
        rank = np.unique(x, return_inverse=True)[1].reshape(x.shape)
    first = 0xFFFFFFFF - np.arange(H * W, dtype=np.int64).reshape(H, W)
    return ((rank.astype(np.int64) << 32) | first).transpose(0, 2, 3, 1).copy()


def _window_indices(start, end, size):
    """(B, k) indices of bins start:end, each padded to the longest bin, k, by repeating its last
    index (harmless under max). Empty bins get some valid index; the caller masks them."""
    k = max(int((end - start).max()), 1)
    return np.clip(np.minimum(start[:, None] + np.arange(k), end[:, None] - 1), 0, size - 1)


def forward_numpy(x, rois, output_size, spatial_scale):
    """`ops.roi_pool._forward_numpy`, bit for bit: y and argmax (R, C, out_h, out_w).

    One step per RoI, vectorised over channels and bins; the max over each bin is taken in two
    passes, over its columns and then over its rows, on the keys of `_order_keys`, which carry
    the argmax along (the first maximum in scan order h then w, as in the kernel)."""
    N, C, H, W = x.shape
    out_h, out_w = output_size
    R = len(rois)
    hstart, hend, wstart, wend = bin_edges(rois, spatial_scale, output_size, H, W)
    empty = (hend <= hstart)[:, :, None] | (wend <= wstart)[:, None, :]     # (R, out_h, out_w)
    batch = rois[:, 0].astype(np.int64)
    keys = _order_keys(x)                                                   # (N, H, W, C)
    x_flat = x.ravel()
    plane = np.arange(C).reshape(C, 1, 1) * (H * W)                        # offset of (n=0, c)
    y = np.empty((R, C, out_h, out_w), dtype=x.dtype)
    argmax = np.empty((R, C, out_h, out_w), dtype=np.int64)
    for r in range(R):
        rows = _window_indices(hstart[r], hend[r], H)                      # (out_h, kh)
        cols = _window_indices(wstart[r], wend[r], W)                      # (out_w, kw)
        h0, h1 = rows.min(), rows.max() + 1
        best = keys[batch[r], h0:h1][:, cols].max(axis=2)                  # (h1-h0, out_w, C)
        best = best[rows - h0].max(axis=1)                                  # (out_h, out_w, C)
        at = (0xFFFFFFFF - (best & 0xFFFFFFFF)).transpose(2, 0, 1)         # (C, out_h, out_w)
        value = x_flat.take(batch[r] * (C * H * W) + plane + at)           # (C, out_h, out_w)
        argmax[r] = np.where(empty[r], -1, at)
        y[r] = np.where(empty[r], 0, value)
    return y, argmax


def forward(x, rois, output_size, spatial_scale):
    """`ops.roi_pool._forward_numpy`, bit for bit, in C++ (`roi_pool.cpp`) where it builds, else
    `forward_numpy`."""
    N, C, H, W = x.shape
    fn = _compiled('roi_pool_forward', x.dtype)
    if fn is None or H * W > MAX_PIXELS:
        return forward_numpy(x, rois, output_size, spatial_scale)
    out_h, out_w = output_size
    R = len(rois)
    edges = [np.ascontiguousarray(e) for e in bin_edges(rois, spatial_scale, output_size, H, W)]
    batch = rois[:, 0].astype(np.int64)
    xt = np.ascontiguousarray(x.transpose(0, 2, 3, 1))     # channels last: one vector a pixel
    y = np.empty((R, C, out_h, out_w), dtype=x.dtype)
    argmax = np.empty((R, C, out_h, out_w), dtype=np.int64)
    args = [a.ctypes.data for a in [xt, batch] + edges + [y, argmax]] + [C, H, W, out_h, out_w]
    split_work(R, y.size * 4, lambda r0, r1: fn(*args, r0, r1))
    return y, argmax


def backward(gy, argmax, rois, shape):
    """`ops.roi_pool._backward_numpy`, bit for bit: each output's gradient added to its winner
    in the reference's order, in C++ where it builds."""
    fn = _compiled('roi_pool_backward', gy.dtype)
    if fn is None:
        return _backward_numpy(gy, argmax, rois, shape)
    N, C, H, W = shape
    gy, argmax = np.ascontiguousarray(gy), np.ascontiguousarray(argmax, dtype=np.int64)
    batch = rois[:, 0].astype(np.int64)
    gx = np.zeros(shape, dtype=gy.dtype)
    args = [a.ctypes.data for a in (gy, argmax, batch, gx)] + [len(rois), C, H, W,
                                                               argmax.shape[2] * argmax.shape[3]]
    split_work(C, gx.size + gy.size, lambda c0, c1: fn(*args, c0, c1))
    return gx


class FastRoIPool(RoIPool):
    forward_numpy = staticmethod(forward)

    def backward(self, gy):
        if self.on_gpu:
            return super().backward(gy)
        return backward(gy, self.argmax, self.rois, self.shape), None
