"""2-D convolution as im2col + one matrix product (the Caffe approach).

The image is unfolded so that every receptive field becomes a column; the convolution is then
w (K, C*kh*kw) @ cols (C*kh*kw, Ho*Wo), and the result is already NCHW. Backward is two more
products and the adjoint of the unfolding (col2im). On the CPU the unfolding is a strided view
copied by NumPy; on the GPU it is the kernels in `kernels/im2col.cu`, and the products go
through cuBLAS.

On the CPU, the big 3x3 stride-1 layers (VGG16's conv2_2 to conv4_3) take Winograd's F(2x2, 3x3)
instead (`winograd.py`: 2.25x fewer multiplications, same results to rounding), where it
measured faster; `winograd.use_winograd` says which.
"""
import numpy as np

from .. import backend
from ..parallel import split_work
from ..tensor import Function
from . import winograd

# Keep the unfolded input for backward when it is at most this many bytes; above it (large
# images, batches) backward unfolds again rather than hold gigabytes.
KEEP_COLS_BYTES = 512 * 2 ** 20


def conv_output_size(size, k, stride, padding):
    return (size + 2 * padding - k) // stride + 1


def _im2col_cpu(x, kh, kw, stride, padding, Ho, Wo):
    N, C, H, W = x.shape
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    sN, sC, sH, sW = x.strides
    view = np.lib.stride_tricks.as_strided(
        x, shape=(N, C, kh, kw, Ho, Wo), strides=(sN, sC, sH, sW, sH * stride, sW * stride),
        writeable=False)
    cols = np.empty((N, C, kh, kw, Ho, Wo), dtype=x.dtype)

    def copy(lo, hi):                               # channels lo:hi
        cols[:, lo:hi] = view[:, lo:hi]
    split_work(C, cols.size, copy)                  # two threads for the big early layers
    return cols.reshape(N, C * kh * kw, Ho * Wo)


def _col2im_cpu(cols, shape, kh, kw, stride, padding, Ho, Wo):
    N, C, H, W = shape
    gx = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=cols.dtype)
    cols = cols.reshape(N, C, kh, kw, Ho, Wo)

    def fold(lo, hi):                               # channels lo:hi
        for i in range(kh):  # each kernel tap adds its column block back where it came from
            for j in range(kw):
                rows, columns = slice(i, i + stride * Ho, stride), slice(j, j + stride * Wo, stride)
                gx[:, lo:hi, rows, columns] += cols[:, lo:hi, i, j]
    split_work(C, cols.size, fold)
    return gx[:, :, padding:padding + H, padding:padding + W] if padding else gx


def _im2col_gpu(x, kh, kw, stride, padding, Ho, Wo):
    xp = backend.get_array_module(x)
    N, C, H, W = x.shape
    cols = xp.empty((N, C * kh * kw, Ho * Wo), dtype=x.dtype)
    k = backend.kernel('im2col.cu', 'im2col', x.dtype)
    backend.launch(k, cols.size, (xp.ascontiguousarray(x), cols, N, C, H, W, kh, kw, stride,
                                  padding, Ho, Wo), x.dtype)
    return cols


def _col2im_gpu(cols, shape, kh, kw, stride, padding, Ho, Wo):
    xp = backend.get_array_module(cols)
    N, C, H, W = shape
    gx = xp.empty(shape, dtype=cols.dtype)
    k = backend.kernel('im2col.cu', 'col2im', cols.dtype)
    backend.launch(k, gx.size, (xp.ascontiguousarray(cols), gx, N, C, H, W, kh, kw, stride,
                                padding, Ho, Wo), cols.dtype)
    return gx


def im2col(x, kh, kw, stride, padding):
    """Unfold x (N, C, H, W) into (N, C*kh*kw, Ho*Wo)."""
    Ho = conv_output_size(x.shape[2], kh, stride, padding)
    Wo = conv_output_size(x.shape[3], kw, stride, padding)
    fn = _im2col_cpu if backend.get_array_module(x) is np else _im2col_gpu
    return fn(x, kh, kw, stride, padding, Ho, Wo)


def col2im(cols, shape, kh, kw, stride, padding):
    """The adjoint of im2col: sum columns back into an (N, C, H, W) array."""
    Ho = conv_output_size(shape[2], kh, stride, padding)
    Wo = conv_output_size(shape[3], kw, stride, padding)
    fn = _col2im_cpu if backend.get_array_module(cols) is np else _col2im_gpu
    return fn(cols, shape, kh, kw, stride, padding, Ho, Wo)


class Conv2d(Function):
    def forward(self, x, w, b=None, stride=1, padding=0):
        N, C, H, W = x.shape
        K, _, kh, kw = w.shape
        Ho = conv_output_size(H, kh, stride, padding)
        Wo = conv_output_size(W, kw, stride, padding)
        self.x_shape, self.w, self.has_b = x.shape, w, b is not None
        self.stride, self.padding = stride, padding
        xp = backend.get_array_module(x)
        self.winograd = (xp is np and w.dtype == x.dtype
                         and winograd.use_winograd(x.shape, w.shape, stride, x.dtype))
        if self.winograd:                                     # 3x3, stride 1, big layers (CPU)
            y, self.saved = winograd.forward(x, w, b, padding)
            if self.saved[1].nbytes > KEEP_COLS_BYTES:        # recomputed from x in backward
                self.saved, self.x = None, x
            return y
        cols = im2col(x, kh, kw, stride, padding)            # (N, C*kh*kw, Ho*Wo)
        w2 = w.reshape(K, -1)                                 # (K, C*kh*kw)
        y = xp.empty((N, K, Ho * Wo), dtype=x.dtype)
        for n in range(N):                                    # one GEMM per image
            xp.matmul(w2, cols[n], out=y[n])
        if b is not None:
            y += b.reshape(1, K, 1)
        if cols.nbytes <= KEEP_COLS_BYTES:
            self.cols, self.x = cols, None
        else:
            self.cols, self.x = None, x
        return y.reshape(N, K, Ho, Wo)

    def backward(self, gy):
        w, (K, C, kh, kw) = self.w, self.w.shape
        if self.winograd:                                     # tiles recomputed if not kept
            saved = self.saved or winograd.transforms(self.x, w, self.padding)
            need = self.needs_input_grad
            return winograd.backward(gy, saved, need[0], need[1], self.has_b and need[2])
        N = gy.shape[0]
        xp = backend.get_array_module(gy)
        gy = xp.ascontiguousarray(gy).reshape(N, K, -1)     # (N, K, Ho*Wo)
        gw = None
        if self.needs_input_grad[1]:                         # not for frozen layers (conv1, conv2)
            cols = self.cols if self.cols is not None else im2col(self.x, kh, kw, self.stride,
                                                                   self.padding)
            gw = xp.matmul(gy[0], cols[0].T)                 # (K, C*kh*kw), row-major like w
            for n in range(1, N):
                gw += xp.matmul(gy[n], cols[n].T)
            gw = gw.reshape(w.shape)
        gx = self.input_grad(gy) if self.needs_input_grad[0] else None
        gb = gy.sum(axis=(0, 2)) if self.has_b and self.needs_input_grad[2] else None
        return gx, gw, gb

    def input_grad(self, gy):
        """dL/dx from gy (N, K, Ho*Wo). In general w^T @ gy, then col2im. On the CPU, for stride
        1 it is cheaper as a convolution of gy, padded by k-1-p, with the flipped and transposed
        kernel (the "full" convolution): one im2col copy and one product, no scattered adds.
        It unfolds gy (K channels) instead of folding C: used where K <= C and the map is large
        (VGG16 at 224: conv1_2, conv2_1, conv3_1 gain 20-55%; on 28x28 maps it loses)."""
        w, (K, C, kh, kw) = self.w, self.w.shape
        N, _, H, W = self.x_shape
        xp = backend.get_array_module(gy)
        Ho = conv_output_size(H, kh, self.stride, self.padding)
        Wo = conv_output_size(W, kw, self.stride, self.padding)
        if (xp is np and self.stride == 1 and kh == kw and self.padding <= kh - 1
                and K <= C and Ho * Wo >= 2500):              # measured: wins on large maps only
            wt = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(C, -1)
            gcols = im2col(gy.reshape(N, K, Ho, Wo), kh, kw, 1, kh - 1 - self.padding)
            gx = np.empty((N, C, H * W), dtype=gy.dtype)
            for n in range(N):
                np.matmul(wt, gcols[n], out=gx[n])            # (C, H*W)
            return gx.reshape(self.x_shape)
        w2 = w.reshape(K, -1)
        gcols = xp.empty((N, C * kh * kw, Ho * Wo), dtype=gy.dtype)
        for n in range(N):
            xp.matmul(w2.T, gy[n], out=gcols[n])              # (C*kh*kw, Ho*Wo)
        return col2im(gcols, self.x_shape, kh, kw, self.stride, self.padding)


def conv2d(x, w, b=None, stride=1, padding=0):
    """2-D convolution. x (N, C, H, W), w (K, C, kh, kw), b (K,) -> (N, K, Ho, Wo)."""
    if x.ndim != 4:
        raise ValueError(f'conv2d expects x of shape (N, C, H, W), got {tuple(x.shape)}')
    if w.ndim != 4:
        raise ValueError(f'conv2d expects w of shape (K, C, kh, kw), got {tuple(w.shape)}')
    if x.shape[1] != w.shape[1]:
        raise ValueError(f'conv2d: input has {x.shape[1]} channels but w expects {w.shape[1]} '
                         f'(w shape {tuple(w.shape)})')
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise ValueError(f'conv2d expects b of shape ({w.shape[0]},), got {tuple(b.shape)}')
    if int(stride) < 1 or int(padding) < 0:
        raise ValueError(f'conv2d expects stride >= 1 and padding >= 0, got {stride}, {padding}')
    Ho = conv_output_size(x.shape[2], w.shape[2], stride, padding)
    Wo = conv_output_size(x.shape[3], w.shape[3], stride, padding)
    if Ho < 1 or Wo < 1:
        raise ValueError(f'conv2d: input {tuple(x.shape[2:])} is smaller than the kernel '
                         f'{tuple(w.shape[2:])} with padding {padding}')
    return Conv2d.apply(x, w, b, stride=int(stride), padding=int(padding))
