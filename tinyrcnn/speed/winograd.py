"""3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, 2016).

Each 2x2 block of outputs needs a 4x4 tile of input. In the transformed domain the nine
multiply-adds per output and channel pair become sixteen products per tile, that is four per
output: 2.25x fewer than im2col's. With the three transforms (tile d, filter g, output m)

    V = B^T d B,    U = G g G^T,    Y = A^T M A,    M[xi] = sum_c U[xi, k, c] V[xi, c, tile]

the sum over channels is sixteen matrix products, one per position xi of the 4x4 tile:
(K, C) @ (C, tiles). Backward runs the same pipeline transposed: dM = A dY A^T, then
dU[xi] = dM[xi] @ V[xi]^T (filter gradient, back through G) and dV[xi] = U[xi]^T @ dM[xi]
(input gradient, back through B, with overlapping tiles added).

    B^T = [[1,  0, -1,  0],     G = [[1,    0,   0],     A^T = [[1, 1,  1,  0],
           [0,  1,  1,  0],          [1/2,  1/2, 1/2],          [0, 1, -1, -1]]
           [0, -1,  1,  0],          [1/2, -1/2, 1/2],
           [0,  1,  0, -1]]          [0,    0,   1]]

All entries are 0, +-1 or 1/2, so the rounding error stays near im2col's (float32: ~1e-6
relative; float64: ~1e-15, see the tests). One difference in kind: an infinite input can give
NaN here (inf - inf inside a transform) where im2col gives +-inf. The filter transforms are one
matrix product with kron(G, G); the tile transforms are written below as a few NumPy passes over
strided views, and run, where g++ builds it, as `winograd.cpp`: the same additions in one pass
over memory, bit-identical (NATIVE = False keeps NumPy's). Both split over two threads where
`threads.split_work` allows. `speed.conv.FastConv2d` takes this
path for the layers where it measured faster (`use_winograd`); `conv3x3` takes it always.
"""
import numpy as np

from ..tensor import Function
from . import native
from .threads import matmul_stack, split_work

_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])
_GG = np.kron(_G, _G)                  # (16, 9): vec(G g G^T) = kron(G, G) vec(g)


WINOGRAD_MIN_CHANNELS = 16
WINOGRAD_MIN_PIXELS = 28 * 28
WINOGRAD_MAX_BYTES = 256 * 2 ** 20
NATIVE = True                          # the tile transforms in C++ (winograd.cpp) where it builds
_P, _I = native.pointer, native.i64
_SIGNATURES = {'winograd_input': [_P, _P] + [_I] * 9,                 # as in winograd.cpp
               'winograd_output': [_P, _P, _P] + [_I] * 8,
               'winograd_output_adjoint': [_P, _P] + [_I] * 8,
               'winograd_input_adjoint': [_P, _P] + [_I] * 9}


def _native(name, *arrays):
    """winograd.cpp's function `name` for these arrays' one dtype, or None (`compiled`)."""
    return compiled('winograd.cpp', f'winograd_{name}', arrays, _SIGNATURES,
                    'Winograd runs its NumPy transforms', '-O3')   # -O3: vectorised


def compiled(filename, name, arrays, signatures, fallback, optimise):
    """`native.typed`'s function `name` of `filename` for these arrays' one dtype, or None:
    NATIVE off, no compiler, mixed dtypes or one it is not built for. (The callers make the
    arrays contiguous.) winograd4.py's transforms come through here too."""
    dtypes = {a.dtype for a in arrays if a is not None}
    if not NATIVE or len(dtypes) != 1:
        return None
    return native.typed(filename, name, dtypes.pop(), signatures, fallback, optimise=optimise)


def _split(fn, channels, elements, *args):
    """fn(*args, lo, hi) over channels lo:hi, on two threads where split_work allows (ctypes
    lets go of Python's lock during the call). `args` keeps the arrays alive until it returns."""
    addresses = [a.ctypes.data if isinstance(a, np.ndarray) else a for a in args]
    split_work(channels, elements, lambda lo, hi: fn(*addresses, lo, hi))


def use_winograd(x_shape, w_shape, stride, dtype):
    """Whether FastConv2d takes this path: 3x3, stride 1, a float dtype, at least
    WINOGRAD_MIN_CHANNELS channels in and out, WINOGRAD_MIN_PIXELS pixels per image, and an
    image's transformed tiles and products within WINOGRAD_MAX_BYTES each: the layers where it
    measured faster (BENCHMARKS.md, sessions 3 and 10). With the one-pass transforms of winograd.cpp
    that is every layer of VGG16 and vgg-tiny but the first (3 channels in: 27 columns for
    im2col, 3 for each of Winograd's sixteen products) and the 14x14 maps (sixteen products
    with 49 columns per image lose to one with 196, or tie in a batch). Per image, so that a
    batch takes its images' algorithm and the per-image threads (speed/parts.py) give the
    batched step's numbers. Above WINOGRAD_MAX_BYTES (VGG16's conv1_2 at 600x800: 494 MB of
    tiles for one image, and as much for the products) the unfolding in bands of `speed.conv`
    holds less; conv2_2 there (249 MB) is the largest layer that takes Winograd."""
    N, C, H, W = x_shape
    K, _, kh, kw = w_shape
    tiles = ((H + 1) // 2 + 1) * ((W + 1) // 2 + 1)          # an image's, at most, padding <= 1
    return (kh == 3 and kw == 3 and stride == 1 and np.dtype(dtype).kind == 'f'
            and C >= WINOGRAD_MIN_CHANNELS and K >= WINOGRAD_MIN_CHANNELS
            and H * W >= WINOGRAD_MIN_PIXELS
            and 16 * max(C, K) * tiles * np.dtype(dtype).itemsize <= WINOGRAD_MAX_BYTES)


def filter_transform(w, GG=_GG):
    """w (K, C, 3, 3) -> U (P, K, C) = kron(G, G) vec(g) for every filter: P = 16 here, 36 with
    F(4x4, 3x3)'s matrix (winograd4.py passes its own)."""
    K, C = w.shape[:2]
    return np.matmul(GG.astype(w.dtype), w.reshape(K * C, 9).T).reshape(len(GG), K, C)


def filter_transform_adjoint(gU, GG=_GG):
    """dU (P, K, C) -> dw (K, C, 3, 3), the transpose of `filter_transform` with the same GG."""
    P, K, C = gU.shape
    return np.matmul(gU.reshape(P, K * C).T, GG.astype(gU.dtype)).reshape(K, C, 3, 3)


class Geometry:
    """Tiling of an (N, C, H, W) input with `padding`: Th x Tw tiles of 2x2 outputs over the
    map padded to (2 Th + 2) x (2 Tw + 2) (odd output sizes get one extra row/column of
    zeros, cropped again)."""

    def __init__(self, shape, padding):
        self.N, self.C, self.H, self.W = shape
        self.p = padding
        self.Ho, self.Wo = self.H + 2 * padding - 2, self.W + 2 * padding - 2
        self.Th, self.Tw = (self.Ho + 1) // 2, (self.Wo + 1) // 2
        self.tiles = self.N * self.Th * self.Tw

    def column_halves(self):
        """For the padded map's even and odd columns: (first column of x, its index in the
        half, how many columns of x). Tiles start on even columns, so in each half a tile's
        columns are neighbours: the transforms then read and write contiguous memory, and only
        the split into halves and the final merge touch the stride-2 interleave."""
        out = []
        for parity in (0, 1):
            first = (parity - self.p) % 2                   # x column landing on this parity
            out.append((first, (first + self.p) // 2, max(0, (self.W - first + 1) // 2)))
        return out


def _rows(d0, d1, d2, d3, out):
    """B^T along one axis: the four combinations of a tile's four rows (or columns)."""
    np.subtract(d0, d2, out=out[0])
    np.add(d1, d2, out=out[1])
    np.subtract(d2, d1, out=out[2])
    np.subtract(d1, d3, out=out[3])


def input_transform(x, geo):
    """x (N, C, H, W) -> V (16, C, tiles), tiles ordered (n, i, j)."""
    N, C, Th, Tw, p = geo.N, geo.C, geo.Th, geo.Tw, geo.p
    fn = _native('input', x)
    if fn is not None:
        V = np.empty((16, C, geo.tiles), dtype=x.dtype)
        _split(fn, C, V.size, np.ascontiguousarray(x), V, N, C, geo.H, geo.W, p, Th, Tw)
        return V
    V = np.empty((4, 4, C, N, Th, Tw), dtype=x.dtype)
    halves = geo.column_halves()

    def part(lo, hi):                                       # channels lo:hi
        t = []
        for first, j0, count in halves:                     # even, odd padded columns
            d = np.zeros((N, hi - lo, 2 * Th + 2, Tw + 1), dtype=x.dtype)
            d[:, :, p:p + geo.H, j0:j0 + count] = x[:, lo:hi, :, first::2]
            t.append(np.empty((4, N, hi - lo, Th, Tw + 1), dtype=x.dtype))
            _rows(*(d[:, :, k:k + 2 * Th:2] for k in range(4)), out=t[-1])   # rows 2i .. 2i+3
        even, odd = t
        for r in range(4):                                  # columns 2j .. 2j+3
            out = V[r, :, lo:hi].transpose(0, 2, 1, 3, 4)   # (4, N, c, Th, Tw) view of V
            _rows(even[r][..., :Tw], odd[r][..., :Tw], even[r][..., 1:], odd[r][..., 1:], out)
    split_work(C, V.size, part)
    return V.reshape(16, C, geo.tiles)


def output_transform(M, geo, b=None):
    """M (16, K, tiles) -> y (N, K, Ho, Wo), plus the bias b (K,) if given."""
    K, N, Th, Tw = M.shape[1], geo.N, geo.Th, geo.Tw
    fn = _native('output', M, b)
    if fn is not None and M.flags.c_contiguous:
        y = np.empty((N, K, geo.Ho, geo.Wo), dtype=M.dtype)
        b = None if b is None else np.ascontiguousarray(b)
        _split(fn, K, y.size, M, 0 if b is None else b, y, N, K, geo.Ho, geo.Wo, Th, Tw)
        return y
    M = M.reshape(4, 4, K, N, Th, Tw)
    y = np.empty((N, K, 2 * Th, 2 * Tw), dtype=M.dtype)

    def part(lo, hi):                                       # output channels lo:hi
        m = M[:, :, lo:hi]
        if b is not None:              # A^T e1 e1^T A is all ones: b added to M[1, 1] lands on
            m[1, 1] += b[lo:hi].reshape(-1, 1, 1, 1)     # all four outputs of every tile
        r = np.empty((2, 4) + m.shape[2:], dtype=M.dtype)
        for j in range(4):                                  # A^T along the tile's rows
            np.add(m[0, j], m[1, j], out=r[0, j])
            r[0, j] += m[2, j]
            np.subtract(m[1, j], m[2, j], out=r[1, j])
            r[1, j] -= m[3, j]
        scratch = np.empty(m.shape[2:], dtype=M.dtype)
        for a in range(2):                                  # ... and its columns, into y
            np.add(r[a, 0], r[a, 1], out=scratch)
            np.add(scratch, r[a, 2], out=y[:, lo:hi, a::2, 0::2].transpose(1, 0, 2, 3))
            np.subtract(r[a, 1], r[a, 2], out=scratch)
            np.subtract(scratch, r[a, 3], out=y[:, lo:hi, a::2, 1::2].transpose(1, 0, 2, 3))
    split_work(K, y.size, part)
    if 2 * Th != geo.Ho or 2 * Tw != geo.Wo:
        y = y[:, :, :geo.Ho, :geo.Wo]
    return y


def output_transform_adjoint(gy, geo):
    """dy (N, K, Ho, Wo) -> dM (16, K, tiles): each 2x2 block g spreads to A g A^T."""
    N, K, Th, Tw = gy.shape[0], gy.shape[1], geo.Th, geo.Tw
    fn = _native('output_adjoint', gy)
    if fn is not None:
        gM = np.empty((16, K, geo.tiles), dtype=gy.dtype)
        _split(fn, K, gM.size, np.ascontiguousarray(gy), gM, N, K, geo.Ho, geo.Wo, Th, Tw)
        return gM
    if 2 * Th != geo.Ho or 2 * Tw != geo.Wo:
        padded = np.zeros((N, K, 2 * Th, 2 * Tw), dtype=gy.dtype)
        padded[:, :, :geo.Ho, :geo.Wo] = gy
        gy = padded
    gM = np.empty((4, 4, K, N, Th, Tw), dtype=gy.dtype)

    def spread(g0, g1, out):           # A along one axis: [g0, g0 + g1, g0 - g1, -g1]
        out[0] = g0                    # g0 and g1 are read once each (they may be strided)
        np.negative(g1, out=out[3])
        np.subtract(out[0], out[3], out=out[1])
        np.add(out[0], out[3], out=out[2])

    def part(lo, hi):                                       # output channels lo:hi
        r = np.empty((4, 2, hi - lo, N, Th, Tw), dtype=gy.dtype)
        for c in range(2):
            g0 = gy[:, lo:hi, 0::2, c::2].transpose(1, 0, 2, 3)
            g1 = gy[:, lo:hi, 1::2, c::2].transpose(1, 0, 2, 3)
            spread(g0, g1, r[:, c])
        for i in range(4):
            spread(r[i, 0], r[i, 1], gM[i, :, lo:hi])
    split_work(K, gM.size, part)
    return gM.reshape(16, K, geo.tiles)


def _fold(t0, t1, t2, t3, even, odd, axis):
    """The adjoint of `_rows` along `axis` (-1 or -2): tile i's four gradient rows go to
    padded rows 2i .. 2i+3, that is rows i and i+1 of the `even` and `odd` halves, where
    neighbouring tiles share rows and add. even and odd have n + 1 rows along axis."""
    n = t0.shape[axis]

    def at(index):
        return (Ellipsis, index) if axis == -1 else (Ellipsis, index, slice(None))
    first, second = at(slice(0, n)), at(slice(1, n + 1))
    even[first] = t0                                        # row 2i:   d0 <- t0
    even[at(n)] = 0
    np.add(t1, t2, out=odd[first])                          # (scratch: odd rows come next)
    even[second] += odd[first]                              # row 2i+2: d2 <- t1 + t2 - t0
    even[second] -= t0
    np.subtract(t1, t2, out=odd[first])                     # row 2i+1: d1 <- t1 - t2 + t3
    odd[first] += t3
    odd[at(n)] = 0
    odd[second] -= t3                                       # row 2i+3: d3 <- -t3


def input_transform_adjoint(gV, geo):
    """dV (16, C, tiles) -> dx (N, C, H, W): B dV B^T per tile, overlapping tiles added."""
    N, C, Th, Tw, p = geo.N, geo.C, geo.Th, geo.Tw, geo.p
    gx = np.empty((N, C, geo.H, geo.W), dtype=gV.dtype)
    fn = _native('input_adjoint', gV)
    if fn is not None and gV.flags.c_contiguous:
        _split(fn, C, gV.size, gV, gx, N, C, geo.H, geo.W, p, Th, Tw)
        return gx
    gV = gV.reshape(4, 4, C, N, Th, Tw)
    halves = geo.column_halves()

    def part(lo, hi):                                       # channels lo:hi
        g = gV[:, :, lo:hi].transpose(0, 1, 3, 2, 4, 5)     # (4, 4, N, c, Th, Tw)
        t = np.empty((2, 4, N, hi - lo, Th, Tw + 1), dtype=gV.dtype)   # even, odd columns
        for r in range(4):                                  # B along the tile's columns
            _fold(*g[r], even=t[0, r], odd=t[1, r], axis=-1)
        for (first, j0, count), half in zip(halves, t):     # ... and along its rows
            d = np.empty((N, hi - lo, 2 * Th + 2, Tw + 1), dtype=gV.dtype)
            _fold(*half, even=d[:, :, 0::2], odd=d[:, :, 1::2], axis=-2)
            gx[:, lo:hi, :, first::2] = d[:, :, p:p + geo.H, j0:j0 + count]
    split_work(C, gV.size, part)
    return gx


def transforms(x, w, padding):
    """The transformed filters and input tiles, (U, V, geometry): what backward needs."""
    geo = Geometry(x.shape, padding)
    return filter_transform(w), input_transform(x, geo), geo


def per_image(a, b, images):
    """a (P, m, k) @ b (P, k, tiles) as one product per image's tiles (ordered (n, i, j)), as
    the reference conv runs one GEMM per image: an image in a batch then gets the very bits it
    gets alone (BLAS rounds a column by where it falls in a wider product, about 1 ulp, which
    can flip a tie in a max pool downstream), for a given number of BLAS threads."""
    if images == 1:
        return matmul_stack(a, b)
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=np.result_type(a, b))
    step = b.shape[2] // images
    for n in range(0, b.shape[2], step):
        out[:, :, n:n + step] = matmul_stack(a, b[:, :, n:n + step])
    return out


def forward(x, w, b, padding):
    """y = conv2d(x, w, b, stride=1, padding); returns y and `transforms(x, w, padding)`."""
    U, V, geo = saved = transforms(x, w, padding)
    M = per_image(U, V, geo.N)                              # sixteen (K, C) @ (C, tiles)
    return output_transform(M, geo, b), saved


def backward(gy, saved, need_x=True, need_w=True, need_b=True):
    """Gradients (dx, dw, db) of forward's output; None where not needed."""
    U, V, geo = saved
    gM = output_transform_adjoint(np.ascontiguousarray(gy), geo)
    gw = filter_transform_adjoint(matmul_stack(gM, V.transpose(0, 2, 1))) if need_w else None
    gx = input_transform_adjoint(per_image(U.transpose(0, 2, 1), gM, geo.N), geo) if need_x else None
    gb = gM[5].sum(axis=1) if need_b else None            # M[1, 1] carries the bias
    return gx, gw, gb


class Winograd3x3(Function):
    """3x3, stride-1 convolution by F(2x2, 3x3), for any size (`conv3x3`). A subclass with
    other `pipeline` functions runs another tiling (`winograd4.Winograd4x4`)."""
    pipeline = staticmethod(forward), staticmethod(backward)

    def forward(self, x, w, b=None, padding=1):
        self.has_b = b is not None
        y, self.saved = self.pipeline[0](x, w, b, padding)
        return y

    def backward(self, gy):
        need = self.needs_input_grad
        return self.pipeline[1](gy, self.saved, need[0], need[1], self.has_b and need[2])


def conv3x3(x, w, b=None, padding=1):
    """`F.conv2d(x, w, b, stride=1, padding)` for a 3x3 kernel w (K, C, 3, 3), always computed
    by Winograd's F(2x2, 3x3) on the CPU: x (N, C, H, W) -> (N, K, H + 2p - 2, W + 2p - 2)."""
    check_conv3x3(x, w, padding, 'conv3x3')
    return Winograd3x3.apply(x, w, b, padding=int(padding))


def check_conv3x3(x, w, padding, name):
    """One clear error for shapes a 3x3 Winograd convolution cannot take."""
    if x.ndim != 4 or tuple(w.shape[1:]) != (x.shape[1], 3, 3):
        raise ValueError(f'{name} expects x (N, C, H, W) and w (K, C, 3, 3), got {tuple(x.shape)} '
                         f'and {tuple(w.shape)}')
    if x.shape[2] + 2 * padding < 3 or x.shape[3] + 2 * padding < 3:
        raise ValueError(f'{name}: input {tuple(x.shape[2:])} with padding {padding} is smaller than 3x3')
