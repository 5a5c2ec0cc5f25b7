"""3x3 stride-1 convolution by Winograd's F(4x4, 3x3) (Lavin & Gray, 2016), for wide layers.

`winograd.py` computes 2x2 outputs from each 4x4 input tile: four products per output. Here a
6x6 tile gives 4x4 outputs: 36 products per 16 outputs, 2.25 per output, another 1.78x fewer
multiplications, and the transformed tiles take 36/16 = 2.25x the input's memory instead of 4x.
The price is precision. The interpolation points are 0, 1, -1, 2, -2 (and infinity), so the
transforms hold 4, 5 and 8 and the filter's 1/6, 1/12 and 1/24: float32 results then differ
from a direct convolution by ~1e-5 of their scale (F(2x2, 3x3): ~1e-6; tests/speed/
test_winograd4.py measures both against float64). FastConv2d takes this path for the wide
layers on large maps where it measured faster (`use_winograd4`).

    B^T = [[4,  0, -5,  0, 1, 0],   G = [[ 1/4,     0,    0],   A^T = [[1, 1,  1, 1,  1, 0],
           [0, -4, -4,  1, 1, 0],        [-1/6,  -1/6, -1/6],          [0, 1, -1, 2, -2, 0],
           [0,  4, -4, -1, 1, 0],        [-1/6,   1/6, -1/6],          [0, 1,  1, 4,  4, 0],
           [0, -2, -1,  2, 1, 0],        [1/24,  1/12,  1/6],          [0, 1, -1, 8, -8, 1]]
           [0,  2, -1, -2, 1, 0],        [1/24, -1/12,  1/6],
           [0,  4,  0, -5, 0, 1]]        [   0,     0,    1]]

The pipeline is winograd.py's, with 36 positions xi instead of 16: V = B^T d B, U = G g G^T,
M[xi] = U[xi] @ V[xi], y = A^T M A, and backward transposed. Each transform here is a sequence
of `_combine`s, one row of B^T or A^T applied along one axis of the tile, in a fixed order of
operations; `winograd4.cpp` runs the same sequence in one pass over memory, bit-identical
(`winograd.NATIVE` switches both files' C++ off).
"""
import numpy as np

from . import native, winograd
from .threads import split_work

BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]])
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]])
_GG = np.kron(G, G)                    # (36, 9): vec(G g G^T) = kron(G, G) vec(g)

WINOGRAD4_MIN_WORK = 128 * 112 * 112  # channels (the larger count) x pixels of one image
_P, _I = native.pointer, native.i64
_SIGNATURES = {'winograd4_input': [_P, _P] + [_I] * 9,                # as in winograd4.cpp
               'winograd4_output': [_P, _P, _P] + [_I] * 8,
               'winograd4_output_adjoint': [_P, _P] + [_I] * 8,
               'winograd4_input_adjoint': [_P, _P] + [_I] * 9}


def use_winograd4(x_shape, w_shape, stride, dtype):
    """Where FastConv2d takes F(4x4, 3x3), before F(2x2, 3x3) or im2col: 3x3, stride 1,
    float32 or float64 (float16 would lose ~1e-2 to the coefficients), at least
    WINOGRAD_MIN_CHANNELS channels in and out, max(C, K) * H * W reaching WINOGRAD4_MIN_WORK,
    and an image's tiles and products within WINOGRAD_MAX_BYTES each (36 numbers per 4x4
    outputs: 2.25 per pixel, against F(2x2, 3x3)'s 4). Its transformed filters and their
    gradient hold 36 K C numbers against 16 K C, a cost that only wide layers on large maps
    (many products, and many tiles per product) repay: it measured faster on 128 channels at
    112x112 and 512 at 56x56, slower on 128 at 56x56 and 512 at 28x28 (BENCHMARKS.md, session
    11). That is VGG16's conv1_2 to conv2_2 at 224x224, conv2_1 to conv4_3 at 600x800 (and
    600x1000). vgg-tiny at the demo's sizes stays below it (at most 32 x 144 x 240), so the
    CPU demo keeps F(2x2, 3x3)'s numbers."""
    N, C, H, W = x_shape
    K, _, kh, kw = w_shape
    tiles = ((H + 3) // 4 + 1) * ((W + 3) // 4 + 1)          # an image's, at most, padding <= 1
    return (kh == 3 and kw == 3 and stride == 1 and np.dtype(dtype) in (np.float32, np.float64)
            and min(C, K) >= winograd.WINOGRAD_MIN_CHANNELS
            and max(C, K) * H * W >= WINOGRAD4_MIN_WORK
            and 36 * max(C, K) * tiles * np.dtype(dtype).itemsize <= winograd.WINOGRAD_MAX_BYTES)


def _native(name, *arrays):
    """winograd4.cpp's function `name` for these arrays' one dtype, or None (`winograd.compiled`)."""
    return winograd.compiled('winograd4.cpp', f'winograd4_{name}', arrays, _SIGNATURES,
                             'Winograd F(4x4, 3x3) runs its NumPy transforms',
                             '-O3 -ffp-contract=off')   # no fused multiply-adds: the same bits


def _combine(coefficients, terms, out):
    """out = sum of c * t over the nonzero c, left to right: the first term as c * t, then
    + t, - t or + (c * t). winograd4.cpp's `combine` makes the same operations."""
    first = True
    for c, t in zip(coefficients, terms):
        c = float(c)                   # a Python number: float32 arrays stay float32
        if c == 0:
            continue
        if first:
            np.multiply(t, c, out=out)
            first = False
        elif c == 1:
            np.add(out, t, out=out)
        elif c == -1:
            np.subtract(out, t, out=out)
        else:
            np.add(out, np.multiply(t, c), out=out)


class Geometry:
    """Tiling of an (N, C, H, W) input with `padding`: Th x Tw tiles of 4x4 outputs; tile
    (i, j) reads rows 4i .. 4i+5 and columns 4j .. 4j+5 of the input padded (zeros) to
    (4 Th + 2) x (4 Tw + 2). Outputs past Ho x Wo are computed on zeros and dropped."""

    def __init__(self, shape, padding):
        self.N, self.C, self.H, self.W = shape
        self.p = padding
        self.Ho, self.Wo = self.H + 2 * padding - 2, self.W + 2 * padding - 2
        self.Th, self.Tw = (self.Ho + 3) // 4, (self.Wo + 3) // 4
        self.tiles = self.N * self.Th * self.Tw

    def padded(self, x, lo, hi):
        """Channels lo:hi of x, padded to (N, hi - lo, 4 Th + 2, 4 Tw + 2)."""
        d = np.zeros((self.N, hi - lo, 4 * self.Th + 2, 4 * self.Tw + 2), dtype=x.dtype)
        p, H, W = self.p, self.H, self.W
        d[:, :, p:p + H, p:p + W] = x[:, lo:hi]
        return d


def _every4(a, start, count, axis):
    """a[..., start::4][..., :count] along axis -1 or -2 (a strided view)."""
    index = slice(start, start + 4 * count - 3, 4)
    return a[..., index] if axis == -1 else a[..., index, :]


def input_transform(x, geo):
    """x (N, C, H, W) -> V (36, C, tiles), tiles ordered (n, i, j)."""
    N, C, Th, Tw = geo.N, geo.C, geo.Th, geo.Tw
    V = np.empty((36, C, geo.tiles), dtype=x.dtype)
    fn = _native('input', x)
    if fn is not None:
        winograd._split(fn, C, V.size, np.ascontiguousarray(x), V, N, C, geo.H, geo.W, geo.p, Th, Tw)
        return V
    V6 = V.reshape(6, 6, C, N, Th, Tw)

    def part(lo, hi):                                       # channels lo:hi
        d = geo.padded(x, lo, hi)
        rows = [_every4(d, r, Th, -2) for r in range(6)]    # (N, c, Th, Wp) each
        t = np.empty((6, N, hi - lo, Th, d.shape[3]), dtype=x.dtype)
        for k in range(6):                                  # B^T along the tile's rows
            _combine(BT[k], rows, t[k])
        for k in range(6):                                  # ... and along its columns
            columns = [_every4(t[k], c, Tw, -1) for c in range(6)]
            for l in range(6):
                _combine(BT[l], columns, V6[k, l, lo:hi].transpose(1, 0, 2, 3))
    split_work(C, V.size, part)
    return V


def output_transform(M, geo, b=None):
    """M (36, K, tiles) -> y (N, K, Ho, Wo), plus the bias b (K,) if given."""
    K, N, Th, Tw = M.shape[1], geo.N, geo.Th, geo.Tw
    fn = _native('output', M, b)
    if fn is not None and M.flags.c_contiguous:
        y = np.empty((N, K, geo.Ho, geo.Wo), dtype=M.dtype)
        b = None if b is None else np.ascontiguousarray(b)
        winograd._split(fn, K, y.size, M, 0 if b is None else b, y, N, K, geo.Ho, geo.Wo, Th, Tw)
        return y
    M6 = M.reshape(6, 6, K, N, Th, Tw)
    y = np.empty((N, K, 4 * Th, 4 * Tw), dtype=M.dtype)

    def part(lo, hi):                                       # output channels lo:hi
        r = np.empty((4, 6, hi - lo, N, Th, Tw), dtype=M.dtype)
        for q in range(4):                                  # A^T along the tile's rows
            for l in range(6):
                _combine(AT[q], [M6[k, l, lo:hi] for k in range(6)], r[q, l])
        for q in range(4):                                  # ... and its columns, into y
            for s in range(4):
                out = y[:, lo:hi, q::4, s::4].transpose(1, 0, 2, 3)
                _combine(AT[s], r[q], out)
                if b is not None:
                    out += b[lo:hi].reshape(-1, 1, 1, 1)
    split_work(K, y.size, part)
    return y[:, :, :geo.Ho, :geo.Wo] if (4 * Th, 4 * Tw) != (geo.Ho, geo.Wo) else y


def output_transform_adjoint(gy, geo):
    """dy (N, K, Ho, Wo) -> dM (36, K, tiles): each 4x4 block g spreads to A g A^T."""
    N, K, Th, Tw = gy.shape[0], gy.shape[1], geo.Th, geo.Tw
    gM = np.empty((36, K, geo.tiles), dtype=gy.dtype)
    fn = _native('output_adjoint', gy)
    if fn is not None:
        winograd._split(fn, K, gM.size, np.ascontiguousarray(gy), gM, N, K, geo.Ho, geo.Wo, Th, Tw)
        return gM
    if (4 * Th, 4 * Tw) != (geo.Ho, geo.Wo):
        padded = np.zeros((N, K, 4 * Th, 4 * Tw), dtype=gy.dtype)
        padded[:, :, :geo.Ho, :geo.Wo] = gy
        gy = padded
    gM6 = gM.reshape(6, 6, K, N, Th, Tw)

    def part(lo, hi):                                       # output channels lo:hi
        g = gy[:, lo:hi].transpose(1, 0, 2, 3)             # (k, N, 4 Th, 4 Tw)
        r = np.empty((6, 4, hi - lo, N, Th, Tw), dtype=gy.dtype)
        for s in range(4):                                  # A along the tile's rows
            block_rows = [g[:, :, q::4, s::4] for q in range(4)]
            for k in range(6):
                _combine(AT[:, k], block_rows, r[k, s])
        for k in range(6):                                  # ... and along its columns
            for l in range(6):
                _combine(AT[:, l], r[k], gM6[k, l, lo:hi])
    split_work(K, gM.size, part)
    return gM


def input_transform_adjoint(gV, geo):
    """dV (36, C, tiles) -> dx (N, C, H, W): B dV B^T per tile, overlapping tiles added
    (a padded row or column is shared by two tiles at most, so the order of that sum does
    not change its bits)."""
    N, C, Th, Tw, p = geo.N, geo.C, geo.Th, geo.Tw, geo.p
    gx = np.empty((N, C, geo.H, geo.W), dtype=gV.dtype)
    fn = _native('input_adjoint', gV)
    if fn is not None and gV.flags.c_contiguous:
        winograd._split(fn, C, gV.size, gV, gx, N, C, geo.H, geo.W, p, Th, Tw)
        return gx
    gV6 = gV.reshape(6, 6, C, N, Th, Tw)
    Hp, Wp = 4 * Th + 2, 4 * Tw + 2

    def part(lo, hi):                                       # channels lo:hi
        u = np.zeros((6, N, hi - lo, Th, Wp), dtype=gV.dtype)
        scratch = np.empty((N, hi - lo, Th, Tw), dtype=gV.dtype)
        for k in range(6):                                  # B along the tile's columns
            terms = [gV6[k, l, lo:hi].transpose(1, 0, 2, 3) for l in range(6)]
            for c in range(6):
                _combine(BT[:, c], terms, scratch)
                _every4(u[k], c, Tw, -1)[...] += scratch
        d = np.zeros((N, hi - lo, Hp, Wp), dtype=gV.dtype)
        scratch = np.empty((N, hi - lo, Th, Wp), dtype=gV.dtype)
        for r in range(6):                                  # ... and along its rows
            _combine(BT[:, r], u, scratch)
            _every4(d, r, Th, -2)[...] += scratch
        gx[:, lo:hi] = d[:, :, p:p + geo.H, p:p + geo.W]
    split_work(C, gV.size, part)
    return gx


def filter_transform(w):
    """w (K, C, 3, 3) -> U (36, K, C): `winograd.filter_transform` with this file's kron(G, G)."""
    return winograd.filter_transform(w, _GG)


def filter_transform_adjoint(gU):
    """dU (36, K, C) -> dw (K, C, 3, 3)."""
    return winograd.filter_transform_adjoint(gU, _GG)


def transforms(x, w, padding):
    """The transformed filters and input tiles, (U, V, geometry): what backward needs."""
    geo = Geometry(x.shape, padding)
    return filter_transform(w), input_transform(x, geo), geo


def forward(x, w, b, padding):
    """y = conv2d(x, w, b, stride=1, padding); returns y and `transforms(x, w, padding)`."""
    U, V, geo = saved = transforms(x, w, padding)
    M = winograd.per_image(U, V, geo.N)                     # 36 (K, C) @ (C, tiles)
    return output_transform(M, geo, b), saved


def backward(gy, saved, need_x=True, need_w=True, need_b=True):
    """Gradients (dx, dw, db) of forward's output; None where not needed."""
    U, V, geo = saved
    gy = np.ascontiguousarray(gy)
    gM = output_transform_adjoint(gy, geo) if need_x or need_w else None
    gw = filter_transform_adjoint(winograd.matmul_stack(gM, V.transpose(0, 2, 1))) if need_w else None
    gx = (input_transform_adjoint(winograd.per_image(U.transpose(0, 2, 1), gM, geo.N), geo)
          if need_x else None)
    gb = gy.sum(axis=(0, 2, 3)) if need_b else None
    return gx, gw, gb


class Winograd4x4(winograd.Winograd3x3):
    """3x3, stride-1 convolution by F(4x4, 3x3), for any size (`conv3x3_4x4`)."""
    pipeline = staticmethod(forward), staticmethod(backward)


def conv3x3_4x4(x, w, b=None, padding=1):
    """`F.conv2d(x, w, b, stride=1, padding)` for a 3x3 kernel, always computed by F(4x4, 3x3)
    on the CPU (as `winograd.conv3x3` by F(2x2, 3x3)), for gradient checks and experiments."""
    winograd.check_conv3x3(x, w, padding, 'conv3x3_4x4')
    return Winograd4x4.apply(x, w, b, padding=int(padding))
