"""2-D convolution as im2col + one matrix product (the Caffe approach).

The image is unfolded so that every receptive field becomes a column; the convolution is then
w (K, C*kh*kw) @ cols (C*kh*kw, Ho*Wo), and the result is already NCHW. Backward is two more
products and the adjoint of the unfolding (col2im). On the CPU the unfolding is a strided view
copied by NumPy; on the GPU it is the kernels in `kernels/im2col.cu`, and the products go
through cuBLAS. `tinyrcnn.speed` has a faster CPU version (`speed/conv.py`: the copies on two
threads, Winograd for big 3x3 layers), registered as the hook 'conv2d'.
"""
import numpy as np

from .. import backend
from ..tensor import Function

# Keep the unfolded input for backward when it is at most this many bytes; above it (large
# images, batches) backward unfolds again rather than hold gigabytes.
KEEP_COLS_BYTES = 64 * 2 ** 20


def conv_output_size(size, k, stride, padding):
    return (size + 2 * padding - k) // stride + 1


def windows(x, kh, kw, stride, padding):
    """A read-only view (N, C, kh, kw, Ho, Wo) of the NumPy x (N, C, H, W), zero-padded:
    [n, c, i, j, y, x] is x[n, c, y*stride + i - padding, x*stride + j - padding]. No copy."""
    N, C, H, W = x.shape
    Ho, Wo = conv_output_size(H, kh, stride, padding), conv_output_size(W, kw, stride, padding)
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    sN, sC, sH, sW = x.strides
    return np.lib.stride_tricks.as_strided(
        x, shape=(N, C, kh, kw, Ho, Wo), strides=(sN, sC, sH, sW, sH * stride, sW * stride),
        writeable=False)


def im2col(x, kh, kw, stride, padding):
    """Unfold x (N, C, H, W) into cols (N, C*kh*kw, Ho*Wo): row (c, i, j) of column (y, x)
    is x[c, y*stride + i - padding, x*stride + j - padding] (0 outside the image)."""
    N, C, H, W = x.shape
    Ho, Wo = conv_output_size(H, kh, stride, padding), conv_output_size(W, kw, stride, padding)
    xp = backend.get_array_module(x)
    if xp is not np:
        cols = xp.empty((N, C * kh * kw, Ho * Wo), dtype=x.dtype)
        k = backend.kernel('im2col.cu', 'im2col', x.dtype)
        backend.launch(k, cols.size, (xp.ascontiguousarray(x), cols, N, C, H, W, kh, kw, stride,
                                      padding, Ho, Wo), x.dtype)
        return cols
    return windows(x, kh, kw, stride, padding).copy().reshape(N, C * kh * kw, Ho * Wo)


def col2im(cols, shape, kh, kw, stride, padding):
    """The adjoint of im2col: add every column entry back onto the pixel it was read from,
    giving (N, C, H, W); pixels read by several windows sum their entries."""
    N, C, H, W = shape
    Ho, Wo = conv_output_size(H, kh, stride, padding), conv_output_size(W, kw, stride, padding)
    xp = backend.get_array_module(cols)
    if xp is not np:
        gx = xp.empty(shape, dtype=cols.dtype)
        k = backend.kernel('im2col.cu', 'col2im', cols.dtype)
        backend.launch(k, gx.size, (xp.ascontiguousarray(cols), gx, N, C, H, W, kh, kw, stride,
                                    padding, Ho, Wo), cols.dtype)
        return gx
    gx = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=cols.dtype)
    cols = cols.reshape(N, C, kh, kw, Ho, Wo)
    for i in range(kh):      # each kernel tap adds its block of columns back where it came from
        for j in range(kw):
            rows, columns = slice(i, i + stride * Ho, stride), slice(j, j + stride * Wo, stride)
            gx[:, :, rows, columns] += cols[:, :, i, j]
    return gx[:, :, padding:padding + H, padding:padding + W] if padding else gx


class Conv2d(Function):
    """y[n] = w (K, C*kh*kw) @ im2col(x)[n] + b; backward: gw = sum_n gy[n] @ cols[n]^T,
    gx = col2im(w^T @ gy[n]), gb = sum of gy. `im2col`, `col2im` and `input_grad` are methods
    so that the CPU speed path (`tinyrcnn.speed`) can replace them one by one."""

    im2col = staticmethod(im2col)
    col2im = staticmethod(col2im)

    def forward(self, x, w, b=None, stride=1, padding=0):
        N, C, H, W = x.shape
        K, _, kh, kw = w.shape
        Ho = conv_output_size(H, kh, stride, padding)
        Wo = conv_output_size(W, kw, stride, padding)
        self.x_shape, self.w, self.has_b = x.shape, w, b is not None
        self.stride, self.padding = stride, padding
        xp = backend.get_array_module(x)
        cols = self.im2col(x, kh, kw, stride, padding)       # (N, C*kh*kw, Ho*Wo)
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
        w, (K, _, kh, kw) = self.w, self.w.shape
        N = gy.shape[0]
        xp = backend.get_array_module(gy)
        gy = xp.ascontiguousarray(gy).reshape(N, K, -1)     # (N, K, Ho*Wo)
        gw = None
        if self.needs_input_grad[1]:                         # not for frozen layers (conv1, conv2)
            cols = self.cols if self.cols is not None else self.im2col(self.x, kh, kw, self.stride,
                                                                        self.padding)
            gw = xp.matmul(gy[0], cols[0].T)                 # (K, C*kh*kw), row-major like w
            for n in range(1, N):
                gw += xp.matmul(gy[n], cols[n].T)
            gw = gw.reshape(w.shape)
        gx = self.input_grad(gy) if self.needs_input_grad[0] else None
        gb = gy.sum(axis=(0, 2)) if self.has_b and self.needs_input_grad[2] else None
        return gx, gw, gb

    def input_grad(self, gy):
        """dL/dx from gy (N, K, Ho*Wo): w^T @ gy[n] per image, then col2im."""
        w, (K, C, kh, kw) = self.w, self.w.shape
        N, _, H, W = self.x_shape
        xp = backend.get_array_module(gy)
        w2 = w.reshape(K, -1)
        gcols = xp.empty((N, C * kh * kw, gy.shape[2]), dtype=gy.dtype)
        for n in range(N):
            xp.matmul(w2.T, gy[n], out=gcols[n])              # (C*kh*kw, Ho*Wo)
        return self.col2im(gcols, self.x_shape, kh, kw, self.stride, self.padding)


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
    op = backend.fast_cpu('conv2d', x) or Conv2d                # the CPU speed hook
    return op.apply(x, w, b, stride=int(stride), padding=int(padding))
