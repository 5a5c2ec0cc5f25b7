"""conv2d's CPU speed path: `ops.conv.Conv2d` with three of its steps replaced.

1. im2col and col2im run as two halves on two threads (`threads.split_work`), channel by
   channel: the same copies and sums, so the same numbers.
2. The 3x3 stride-1 layers with 16 channels or more (VGG16's conv1_2 to conv4_3, vgg-tiny's
   all but the first) take Winograd's F(2x2, 3x3) (`winograd.py`): 2.25x fewer
   multiplications, the same results to float rounding; wide layers on large maps (VGG16's
   conv1_2 to conv2_2 at 224x224) take F(4x4, 3x3) (`winograd4.py`): 4x fewer, ~1e-5 relative.
3. dx of a stride-1 layer with K <= C on a large map is computed as the "full" convolution of
   gy (padded by k-1-p) with the flipped, transposed kernel: one im2col copy and one product
   instead of a product and col2im's scattered adds; the same sum in another order.
4. Where the unfolded input would exceed BAND_BYTES (VGG16's conv1_2 at 600x800: 1.1 GB an
   image) the forward pass unfolds and multiplies a band of output rows at a time, and
   backward unfolds again (as above KEEP_COLS_BYTES). Each output is the same dot product;
   BLAS may block a narrower product differently, a difference of float rounding at most.
"""
import numpy as np

from ..ops import conv
from . import winograd, winograd4
from .threads import split_work

FULL_CONV_MIN_PIXELS = 2500          # 3. pays on large maps only (BENCHMARKS.md, session 2)
BAND_BYTES = 64 * 2 ** 20            # 4. the most an unfolded band may take


def im2col(x, kh, kw, stride, padding):
    """`ops.conv.im2col` on the CPU, its copy cut by channels over two threads."""
    view = conv.windows(x, kh, kw, stride, padding)          # (N, C, kh, kw, Ho, Wo)
    cols = np.empty(view.shape, dtype=x.dtype)

    def copy(lo, hi):                               # channels lo:hi
        cols[:, lo:hi] = view[:, lo:hi]
    split_work(view.shape[1], cols.size, copy)
    N, C, _, _, Ho, Wo = view.shape
    return cols.reshape(N, C * kh * kw, Ho * Wo)


def col2im(cols, shape, kh, kw, stride, padding):
    """`ops.conv.col2im` on the CPU, its sums cut by channels over two threads."""
    N, C, H, W = shape
    Ho = conv.conv_output_size(H, kh, stride, padding)
    Wo = conv.conv_output_size(W, kw, stride, padding)
    gx = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=cols.dtype)
    cols = cols.reshape(N, C, kh, kw, Ho, Wo)

    def fold(lo, hi):                               # channels lo:hi
        for i in range(kh):
            for j in range(kw):
                rows, columns = slice(i, i + stride * Ho, stride), slice(j, j + stride * Wo, stride)
                gx[:, lo:hi, rows, columns] += cols[:, lo:hi, i, j]
    split_work(C, cols.size, fold)
    return gx[:, :, padding:padding + H, padding:padding + W] if padding else gx


def band_rows(x, w, stride, padding):
    """How many output rows a band of the forward pass takes (4. above), or None where the
    whole unfolded input fits in BAND_BYTES."""
    N, C, H, W = x.shape
    _, _, kh, kw = w.shape
    row_bytes = C * kh * kw * conv.conv_output_size(W, kw, stride, padding) * x.itemsize
    if N * conv.conv_output_size(H, kh, stride, padding) * row_bytes <= BAND_BYTES:
        return None
    return max(1, BAND_BYTES // row_bytes)


def forward_in_bands(x, w, b, stride, padding, rows):
    """The convolution `rows` output rows at a time: each band unfolded (on two threads) and
    multiplied on its own, so the unfolded input never exceeds a band (4. above)."""
    N, C, H, W = x.shape
    K, _, kh, kw = w.shape
    view = conv.windows(x, kh, kw, stride, padding)          # (N, C, kh, kw, Ho, Wo), no copy
    Ho, Wo = view.shape[-2:]
    w2 = w.reshape(K, -1)
    y = np.empty((N, K, Ho, Wo), dtype=x.dtype)
    whole = np.empty((C, kh, kw, min(rows, Ho), Wo), dtype=x.dtype)   # one buffer for the bands
    for n in range(N):
        for top in range(0, Ho, rows):
            band = view[n, :, :, :, top:top + rows]           # (C, kh, kw, rows, Wo)
            cols = whole if band.shape == whole.shape else np.empty(band.shape, dtype=x.dtype)

            def copy(lo, hi):                               # channels lo:hi
                cols[lo:hi] = band[lo:hi]
            split_work(C, cols.size, copy)
            y[n, :, top:top + rows] = (w2 @ cols.reshape(C * kh * kw, -1)).reshape(K, -1, Wo)
    if b is not None:
        y += b.reshape(1, K, 1, 1)
    return y


class FastConv2d(conv.Conv2d):
    im2col = staticmethod(im2col)
    col2im = staticmethod(col2im)

    def forward(self, x, w, b=None, stride=1, padding=0):
        self.winograd = None                                    # or the module that computes it
        if w.dtype == x.dtype:
            for module, use in ((winograd4, winograd4.use_winograd4), (winograd, winograd.use_winograd)):
                if use(x.shape, w.shape, stride, x.dtype):
                    self.winograd = module
                    break
        rows = None if self.winograd else band_rows(x, w, stride, padding)
        if not self.winograd and rows is None:
            return super().forward(x, w, b, stride, padding)
        self.x_shape, self.w, self.has_b = x.shape, w, b is not None
        self.stride, self.padding = stride, padding
        if rows is not None:                                    # backward unfolds x again
            self.cols, self.x = None, x
            return forward_in_bands(x, w, b, stride, padding, rows)
        y, self.saved = self.winograd.forward(x, w, b, padding)
        if self.saved[1].nbytes > conv.KEEP_COLS_BYTES:         # recomputed from x in backward
            self.saved, self.x = None, x
        return y

    def backward(self, gy):
        if not self.winograd:
            return super().backward(gy)
        saved = self.saved or self.winograd.transforms(self.x, self.w, self.padding)
        need = self.needs_input_grad
        return self.winograd.backward(gy, saved, need[0], need[1], self.has_b and need[2])

    def input_grad(self, gy):
        """dL/dx as the full convolution of gy where that is cheaper (see the module's 3.)."""
        w, (K, C, kh, kw) = self.w, self.w.shape
        N, _, H, W = self.x_shape
        Ho = conv.conv_output_size(H, kh, self.stride, self.padding)
        Wo = conv.conv_output_size(W, kw, self.stride, self.padding)
        if not (self.stride == 1 and kh == kw and self.padding <= kh - 1 and K <= C
                and Ho * Wo >= FULL_CONV_MIN_PIXELS):
            return super().input_grad(gy)
        wt = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(C, -1)
        gcols = self.im2col(gy.reshape(N, K, Ho, Wo), kh, kw, 1, kh - 1 - self.padding)
        gx = np.empty((N, C, H * W), dtype=gy.dtype)
        for n in range(N):
            np.matmul(wt, gcols[n], out=gx[n])                   # (C, H*W)
        return gx.reshape(self.x_shape)
