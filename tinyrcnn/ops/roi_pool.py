"""RoI max pooling, the layer at the heart of Fast R-CNN (Girshick, 2015, Sec. 2.1 and 2.3).

Each RoI `[batch_index, x1, y1, x2, y2]`, given in input-image pixels, is projected onto the
feature map by `spatial_scale` (1/16 after VGG16's four 2x2 poolings), cut into an
out_h x out_w grid of bins, and each bin is max-pooled, channel by channel. Backward routes each
output gradient to the input pixel that won its bin (Sec. 2.3, "Back-propagation through RoI
pooling layers"); a pixel that wins several bins, of one RoI or of overlapping RoIs, sums them.

Semantics (identical to Caffe's RoIPooling layer and `torchvision.ops.roi_pool`, computed in
the input's float type T, operation for operation, so the values agree bit for bit):

    x1' = round(T(x1) * T(spatial_scale))            C's round(): halves go away from zero
    roi_w = max(x2' - x1' + 1, 1)                     inclusive end; degenerate RoIs -> 1 pixel
    bin_w = T(roi_w) / T(out_w)                       fractional bin size
    bin pw covers columns [floor(pw * bin_w) + x1', ceil((pw + 1) * bin_w) + x1'), clipped to [0, W]
    (rows likewise); an empty bin gives 0 and argmax -1; scan order h then w, first maximum wins.

Where a non-empty bin's values are all below -FLT_MAX (or -inf), torchvision outputs -FLT_MAX
with argmax -1; here the bin's first pixel wins (so its gradient is kept), and a NaN wins like
in np.max. For every other input the two agree exactly.

This file holds the whole op: the NumPy path (`bin_edges` is the spec of the bins; the pooling
is vectorised over channels and bins, one step per RoI, and is the CPU training path), the
dispatch to the CUDA kernels in `kernels/roi_pool.cu` (the same rules, one thread per output),
the `RoIPool` Function, the SPPnet-style pyramid `roi_spp`, and a benchmark. The tests hold a
plain-loop version of the rules above and check both paths against it bit for bit.
"""
import numpy as np

from .. import backend
from ..tensor import Function, Tensor, concat


# ---------------------------------------------------------------------------------------------
# The NumPy path: the spec
# ---------------------------------------------------------------------------------------------
def round_half_away(v):
    """C's round(): halves go away from zero (np.round sends them to the even neighbour).

    Exact in floating point: v - trunc(v) is representable, unlike floor(v + 0.5), which turns
    0.49999997 (float32) into 1."""
    t = np.trunc(v)
    return t + np.copysign(np.abs(v - t) >= 0.5, v)


def bin_edges(rois, spatial_scale, output_size, H, W):
    """Bin edges of every RoI on an (H, W) map, in the float type of `rois`.

    Returns hstart, hend (R, out_h) and wstart, wend (R, out_w), int64, clipped to the map;
    bin (ph, pw) of RoI r covers rows hstart[r, ph]:hend[r, ph] and columns wstart[r, pw]:wend[r, pw].
    """
    T = rois.dtype.type
    out_h, out_w = output_size
    x1, y1, x2, y2 = round_half_away(rois[:, 1:5] * T(spatial_scale)).astype(np.int64).T  # (R,) each
    roi_w = np.maximum(x2 - x1 + 1, 1)
    roi_h = np.maximum(y2 - y1 + 1, 1)
    bin_w = (roi_w.astype(T) / T(out_w))[:, None]                                # (R, 1)
    bin_h = (roi_h.astype(T) / T(out_h))[:, None]
    pw, ph = np.arange(out_w, dtype=T), np.arange(out_h, dtype=T)
    hstart = np.clip(np.floor(ph * bin_h).astype(np.int64) + y1[:, None], 0, H)  # (R, out_h)
    hend = np.clip(np.ceil((ph + 1) * bin_h).astype(np.int64) + y1[:, None], 0, H)
    wstart = np.clip(np.floor(pw * bin_w).astype(np.int64) + x1[:, None], 0, W)  # (R, out_w)
    wend = np.clip(np.ceil((pw + 1) * bin_w).astype(np.int64) + x1[:, None], 0, W)
    return hstart, hend, wstart, wend


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


def _forward_numpy(x, rois, output_size, spatial_scale):
    """y (R, C, out_h, out_w) and argmax (R, C, out_h, out_w) int64 (h * W + w, -1 if empty).

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


def _backward_numpy(gy, argmax, rois, shape, chunk=64):
    """gx (N, C, H, W): gx[n, c].flat[argmax] += gy for every output; empty bins are skipped.

    np.add.at adds in output order in the array's own float type, exactly like the kernel run
    on the CPU (kernels/cpu.py), so the two agree bit for bit. Chunks of RoIs keep the index
    arrays small; empty bins add into one spare slot past the end, which is dropped."""
    N, C, H, W = shape
    R = len(rois)
    gx = np.zeros(N * C * H * W + 1, dtype=gy.dtype)
    plane = (rois[:, 0].astype(np.int64)[:, None] * C + np.arange(C)) * (H * W)  # (R, C)
    for r in range(0, R, chunk):
        at = argmax[r:r + chunk]                                           # (chunk, C, out_h, out_w)
        flat = np.where(at >= 0, plane[r:r + chunk, :, None, None] + at, N * C * H * W)
        np.add.at(gx, flat.ravel(), gy[r:r + chunk].ravel())
    return gx[:-1].reshape(shape)


# ---------------------------------------------------------------------------------------------
# The CUDA path: kernels/roi_pool.cu, one thread per output element
# ---------------------------------------------------------------------------------------------
def _forward_cuda(x, rois, output_size, spatial_scale):
    xp = backend.get_array_module(x)
    N, C, H, W = x.shape
    out_h, out_w = output_size
    R = len(rois)
    y = xp.empty((R, C, out_h, out_w), dtype=x.dtype)
    argmax = xp.empty((R, C, out_h, out_w), dtype=np.int64)
    kern = backend.kernel('roi_pool.cu', 'roi_pool_forward', x.dtype)
    backend.launch(kern, y.size, (xp.ascontiguousarray(x), xp.ascontiguousarray(rois), y, argmax,
                                  R, C, H, W, out_h, out_w, float(spatial_scale)), x.dtype)
    return y, argmax


def _backward_cuda(gy, argmax, rois, shape):
    xp = backend.get_array_module(gy)
    R, C, out_h, out_w = argmax.shape
    N, _, H, W = shape
    gx = xp.zeros(shape, dtype=gy.dtype)
    kern = backend.kernel('roi_pool.cu', 'roi_pool_backward', gy.dtype)
    backend.launch(kern, gy.size, (xp.ascontiguousarray(gy), argmax, xp.ascontiguousarray(rois),
                                   gx, R, C, H, W, out_h, out_w), gy.dtype)
    return gx


# ---------------------------------------------------------------------------------------------
# Checks, the Function, the public functions
# ---------------------------------------------------------------------------------------------
def _pair(output_size):
    """(out_h, out_w) from an int or a pair of ints, each at least 1."""
    try:
        pair = (output_size, output_size) if np.ndim(output_size) == 0 else tuple(output_size)
        ok = len(pair) == 2 and all(not isinstance(v, bool) and int(v) == v >= 1 for v in pair)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f'roi_pool output_size must be a positive int or a pair (out_h, out_w) '
                         f'of positive ints, got {output_size!r}')
    return int(pair[0]), int(pair[1])


def _check(x, rois, output_size, spatial_scale):
    """Validate the arguments; return rois as a (R, 5) array of x's dtype on x's device."""
    if x.ndim != 4:
        raise ValueError(f'roi_pool expects x of shape (N, C, H, W), got shape {x.shape}')
    if x.dtype not in (np.float32, np.float64):
        raise ValueError(f'roi_pool expects x of dtype float32 or float64, got {x.dtype}')
    output_size = _pair(output_size)
    if not np.isscalar(spatial_scale) or not np.isfinite(spatial_scale) or spatial_scale <= 0:
        raise ValueError(f'roi_pool spatial_scale must be a finite number > 0, got {spatial_scale!r}')
    if isinstance(rois, Tensor):
        rois = rois.data
    rois = backend.to_device(rois if backend.is_cupy_array(rois) else np.asarray(rois),
                             backend.device_of(x))
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(f'roi_pool expects rois of shape (R, 5) with rows '
                         f'[batch_index, x1, y1, x2, y2], got shape {rois.shape}')
    host = backend.to_device(rois, 'cpu').astype(np.float64)   # (R, 5), small: checked on the CPU
    if not np.isfinite(host).all():
        raise ValueError(f'roi_pool rois must be finite, got a row {host[~np.isfinite(host).all(1)][0]}')
    batch, N = host[:, 0], x.shape[0]
    bad = (batch != np.floor(batch)) | (batch < 0) | (batch >= N)
    if bad.any():
        raise ValueError(f'roi_pool rois[:, 0] must be integer batch indices in [0, {N}), '
                         f'got {batch[bad][0]!r}')
    if (np.abs(host[:, 1:]) * spatial_scale >= 2.0 ** 31).any():
        raise ValueError('roi_pool rois coordinates times spatial_scale must stay below 2**31 '
                         'in magnitude (they are pixel positions)')
    return rois.astype(x.dtype, copy=False), output_size


class RoIPool(Function):
    """RoI max pooling (Fast R-CNN, Sec. 2.1); forward saves the argmax that backward needs."""

    def forward(self, x, rois, output_size=(7, 7), spatial_scale=1 / 16):
        rois, output_size = _check(x, rois, output_size, spatial_scale)
        self.on_gpu = backend.get_array_module(x) is not np
        forward = _forward_cuda if self.on_gpu else _forward_numpy
        y, self.argmax = forward(x, rois, output_size, spatial_scale)
        self.rois, self.shape = rois, x.shape
        return y

    def backward(self, gy):
        """Sec. 2.3: each bin's gradient goes to its argmax; rois get none."""
        backward = _backward_cuda if self.on_gpu else _backward_numpy
        return backward(gy, self.argmax, self.rois, self.shape), None


def roi_pool(x, rois, output_size=(7, 7), spatial_scale=1 / 16):
    """Max-pool each RoI of x into a fixed out_h x out_w grid (Fast R-CNN, Sec. 2.1).

    x: Tensor (N, C, H, W), float32 or float64.
    rois: Tensor or array (R, 5), rows [batch_index, x1, y1, x2, y2] in input-image pixels
        (converted to x's dtype).
    Returns a Tensor (R, C, out_h, out_w). Bad shapes or values raise ValueError.
    """
    return RoIPool.apply(x if isinstance(x, Tensor) else Tensor(x), rois,
                         output_size=output_size, spatial_scale=spatial_scale)


def roi_spp(x, rois, levels=(4, 2, 1), spatial_scale=1 / 16):
    """Spatial pyramid pooling over RoIs (SPPnet, He et al., 2014; Fast R-CNN's RoI pooling is
    its one-level case): each level L pools every RoI to L x L, the levels are flattened and
    concatenated. x (N, C, H, W) -> (R, C * sum(L*L)), e.g. C * 21 for (4, 2, 1)."""
    if len(levels) == 0:
        raise ValueError('roi_spp needs at least one pyramid level')
    pooled = [roi_pool(x, rois, (L, L), spatial_scale) for L in levels]
    return concat([p.reshape(p.shape[0], -1) for p in pooled], axis=1)


# ---------------------------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------------------------
def random_rois(R, N, image_h, image_w, seed=0, min_size=16):
    """R proposal-like RoIs (R, 5) float32 spread over N images of image_h x image_w pixels."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(min_size, image_w, R)
    h = rng.uniform(min_size, image_h, R)
    x1 = rng.uniform(0, image_w - w)
    y1 = rng.uniform(0, image_h - h)
    batch = rng.integers(0, N, R)
    return np.stack([batch, x1, y1, x1 + w - 1, y1 + h - 1], axis=1).astype(np.float32)


def bench_roi_pool(device='cpu', repeats=3, roi_counts=(128, 2000), shape=(2, 512, 38, 50)):
    """Time RoI pooling forward and forward + backward (7x7, scale 1/16) on a VGG16-sized map.

    Returns rows (name, seconds), the median of `repeats` runs after one warm-up."""
    backend.check_device(device)
    xp = backend.get_array_module(backend.to_device(np.zeros(1), device))
    N, C, H, W = shape
    x_np = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    x = Tensor(backend.to_device(x_np, device), requires_grad=True)
    from ..bench import timeit
    rows = []
    for R in roi_counts:
        rois = backend.to_device(random_rois(R, N, H * 16, W * 16, seed=R), device)
        gy = xp.ones((R, C, 7, 7), dtype=np.float32)

        def forward():
            return roi_pool(x, rois)

        def forward_backward():
            x.grad = None
            roi_pool(x, rois).backward(gy)

        for name, fn in ((f'roi_pool forward, {R} RoIs', forward),
                         (f'roi_pool forward+backward, {R} RoIs', forward_backward)):
            rows.append((f'{name} ({device})', timeit(fn, device, repeats)))
    return rows
