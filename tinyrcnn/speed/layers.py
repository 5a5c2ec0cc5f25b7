"""CPU speed paths of max pooling, ReLU and the fully connected layer: the same numbers as the
reference ops, except the linear layer's products (the same sums in another BLAS blocking)."""
import numpy as np

from ..ops import activation, linear, pool
from . import native
from .threads import split_work

_P, _I = native.pointer, native.i64
_POOL_SIGNATURES = {'max_pool_2x2': [_P, _P, _P] + [_I] * 6 + [_P],       # as in max_pool.cpp
                    'max_pool_2x2_backward': [_P, _P, _P] + [_I] * 6}


# ----- max pooling: VGG's 2x2 windows, stride 2 -------------------------------------------------
def _quarters(x, Ho, Wo):
    """The four pixels of every 2x2 window, as four strided (N, C, Ho, Wo) views, in row-major
    window order."""
    v = x[:, :, :2 * Ho, :2 * Wo]
    return v[:, :, 0::2, 0::2], v[:, :, 0::2, 1::2], v[:, :, 1::2, 0::2], v[:, :, 1::2, 1::2]


def _compiled(name, x):
    """max_pool.cpp's function `name` for x's dtype where x is C-contiguous, else None."""
    if not x.flags.c_contiguous:
        return None
    return native.typed('max_pool.cpp', name, x.dtype, _POOL_SIGNATURES,
                        'max pooling runs its NumPy passes', optimise='-O2')


def _forward_2x2(x, Ho, Wo):
    """y and `winner` (N, C, Ho, Wo) int8 in 0..3, the first of the four pixels equal to the
    maximum; None when a NaN makes the comparisons useless (the reference then handles it).
    One pass in C++ (`max_pool.cpp`) where g++ builds it, else three element-wise maxima
    instead of a reduction over a copied window array; both on two threads."""
    N, C, H, W = x.shape
    y = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    winner = np.empty((N, C, Ho, Wo), dtype=np.int8)
    fn = _compiled('max_pool_2x2', x)
    if fn is not None:
        flags = np.zeros(2, dtype=np.int64)                 # a NaN flag for each thread
        args = x.ctypes.data, y.ctypes.data, winner.ctypes.data, H, W, Ho, Wo
        split_work(N * C, x.size,
                   lambda lo, hi: fn(*args, lo, hi, flags.ctypes.data + 8 * (lo > 0)))
        return None if flags.any() else (y, winner)
    nan = []

    def part(lo, hi):                                   # channels lo:hi
        a, b, c, d = _quarters(x[:, lo:hi], Ho, Wo)
        m = y[:, lo:hi]
        np.maximum(a, b, out=m)
        np.maximum(m, c, out=m)
        np.maximum(m, d, out=m)
        w = winner[:, lo:hi]
        w[...] = np.where(c == m, np.int8(2), np.int8(3))
        w[b == m] = 1
        w[a == m] = 0                    # written last: the first maximum wins, as argmax
        zero = m == 0                    # -0 == 0: a maximum may carry another pixel's sign
        if zero.any():
            for q, pixel in enumerate((a, b, c, d)):
                np.copyto(m, pixel, where=zero & (w == q))    # the winner's own value
        nan.append(bool(np.isnan(m).any()))
    split_work(C, x.size, part)
    return None if any(nan) else (y, winner)


def _backward_2x2(gy, winner, shape):
    """gx: gy at each window's winner, zero elsewhere (the reference's assignment)."""
    N, C, H, W = shape
    fn = _compiled('max_pool_2x2_backward', gy)
    if fn is not None:
        gx = np.empty(shape, dtype=gy.dtype)
        args = gy.ctypes.data, winner.ctypes.data, gx.ctypes.data, H, W, gy.shape[2], gy.shape[3]
        split_work(N * C, gx.size, lambda lo, hi: fn(*args, lo, hi))
        return gx
    gx = np.zeros(shape, dtype=gy.dtype)

    def part(lo, hi):                                   # channels lo:hi
        for q, view in enumerate(_quarters(gx[:, lo:hi], gy.shape[2], gy.shape[3])):
            np.copyto(view, gy[:, lo:hi], where=winner[:, lo:hi] == q)
    split_work(C, gx.size, part)
    return gx


class FastMaxPool2d(pool.MaxPool2d):
    def forward(self, x, kernel_size, stride):
        self.winner = None
        if kernel_size == 2 and stride == 2:
            fast = _forward_2x2(x, x.shape[2] // 2, x.shape[3] // 2)
            if fast is not None:
                self.shape = x.shape
                y, self.winner = fast
                return y
        return super().forward(x, kernel_size, stride)

    def backward(self, gy):
        if self.winner is None:
            return super().backward(gy)
        return (_backward_2x2(gy, self.winner, self.shape),)


# ----- ReLU: one pass in two halves -------------------------------------------------------------
def _halves(fn, a, *more):
    """fn(a, out=out, *more) element-wise over C-contiguous arrays, on two threads when large."""
    out = np.empty_like(a)
    flat, others, dst = a.reshape(-1), [m.reshape(-1) for m in more], out.reshape(-1)

    def part(lo, hi):
        fn(flat[lo:hi], dst[lo:hi], *[m[lo:hi] for m in others])
    split_work(flat.size, flat.size, part)
    return out


class FastReLU(activation.ReLU):
    def forward(self, x):
        if not x.flags.c_contiguous:
            return super().forward(x)
        self.y = _halves(lambda a, out: np.maximum(a, 0, out=out), x)
        return self.y

    def backward(self, gy):
        if not (isinstance(gy, np.ndarray) and gy.flags.c_contiguous and self.y.flags.c_contiguous):
            return super().backward(gy)
        return (_halves(lambda g, out, y: np.multiply(g, y > 0, out=out), gy, self.y),)


# ----- the fully connected layer: products in the orientation OpenBLAS runs fastest -------------
def matmul(a, b):
    """a @ b for 2-D arrays. When one operand is row-major and the other a transposed view
    (the products of linear's forward and backward), OpenBLAS on a few cores runs several times
    faster when the output has at least as many rows as columns (BENCHMARKS.md, notes), so
    then (b^T a^T)^T is computed: the same products, summed in another blocking."""
    mixed = a.flags.c_contiguous != b.flags.c_contiguous
    if a.ndim == 2 and b.ndim == 2 and mixed and a.shape[0] < b.shape[1]:
        return (b.T @ a.T).T
    return a @ b


class FastLinear(linear.Linear):
    def forward(self, x, w, b=None):
        self.x, self.w, self.has_b = x, w, b is not None
        y = matmul(x, w.T)                            # (N, out)
        return y + b if b is not None else y

    def backward(self, gy):
        gx = matmul(gy, self.w)                       # (N, in)
        gw = gy.T @ self.x                            # (out, in), as the reference
        gb = gy.sum(axis=0) if self.has_b else None
        return gx, gw, gb
