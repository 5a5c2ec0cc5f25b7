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

This file holds the whole op: the NumPy path, which is the spec (`bin_edges` computes the
bins; `_forward_numpy` loops over RoIs and bins and takes each bin's max over all channels at
once, as each thread of the kernel does for one channel), the dispatch to the CUDA kernels in
`kernels/roi_pool.cu` (the same rules, one thread per output), the `RoIPool` Function and the
SPPnet-style pyramid `roi_spp`. `tinyrcnn.speed` registers a vectorised CPU forward (hook
'roi_pool') that the tests check against this one bit for bit.

On a GPU the backward pass scatters with atomicAdd, so a pixel that wins several bins gets its
sum in a different order on every run (its last bits may change); `RoIPool.deterministic = True`
gathers instead, in NumPy's order. float32 subnormals differ too: CuPy compiles kernels with
-ftz=true (see kernels/roi_pool.cu).
"""
import numpy as np

from .. import backend
from ..tensor import Function, Tensor
from .concat import concat


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


def _forward_numpy(x, rois, output_size, spatial_scale):
    """y (R, C, out_h, out_w) and argmax (R, C, out_h, out_w) int64 (h * W + w, -1 if empty).

    One step per RoI and bin, all channels at once. np.argmax over the bin's pixels, flattened
    in scan order (h, then w), returns the first maximum, and the first NaN if there is one:
    exactly the winner of the kernel's scan."""
    N, C, H, W = x.shape
    out_h, out_w = output_size
    hstart, hend, wstart, wend = bin_edges(rois, spatial_scale, output_size, H, W)
    y = np.zeros((len(rois), C, out_h, out_w), dtype=x.dtype)
    argmax = np.full((len(rois), C, out_h, out_w), -1, dtype=np.int64)
    for r in range(len(rois)):
        n = int(rois[r, 0])
        for ph in range(out_h):
            for pw in range(out_w):
                h0, h1, w0, w1 = hstart[r, ph], hend[r, ph], wstart[r, pw], wend[r, pw]
                if h1 <= h0 or w1 <= w0:
                    continue                                  # empty bin: 0, argmax -1
                window = x[n, :, h0:h1, w0:w1].reshape(C, -1)  # (C, pixels of the bin)
                best = window.argmax(axis=1)                   # (C,) first maximum
                y[r, :, ph, pw] = window[np.arange(C), best]
                argmax[r, :, ph, pw] = (h0 + best // (w1 - w0)) * W + w0 + best % (w1 - w0)
    return y, argmax


def _backward_numpy(gy, argmax, rois, shape):
    """gx (N, C, H, W): gx[n, c].flat[argmax] += gy for every output, empty bins skipped.

    np.add.at adds in output order in the array's own float type, exactly as the kernel does
    when it runs on the CPU (kernels/cpu.py), so the two agree bit for bit."""
    N, C, H, W = shape
    gx = np.zeros(N * C * H * W, dtype=gy.dtype)
    for r in range(len(rois)):
        planes = (int(rois[r, 0]) * C + np.arange(C)).reshape(C, 1, 1) * (H * W)  # (C, 1, 1)
        won = argmax[r] >= 0                                   # an empty bin sends nothing
        np.add.at(gx, (planes + argmax[r])[won], gy[r][won])
    return gx.reshape(shape)


# ---------------------------------------------------------------------------------------------
# The CUDA path: kernels/roi_pool.cu
# ---------------------------------------------------------------------------------------------
def _run_cuda(name, n, args, dtype):
    """Launch kernel `name` of roi_pool.cu, compiled for `dtype`, over n work items."""
    backend.launch(backend.kernel('roi_pool.cu', name, dtype), n, args, dtype)


def _forward_kernel(x, rois, output_size, spatial_scale, run=_run_cuda):
    """The kernels' argument lists, built once for both builds: `run(name, n, args, dtype)` is a
    CuPy launch here, `kernels.cpu.call` on the CPU build in the tests."""
    xp = backend.get_array_module(x)
    N, C, H, W = x.shape
    out_h, out_w = output_size
    R = len(rois)
    y = xp.empty((R, C, out_h, out_w), dtype=x.dtype)
    argmax = xp.empty((R, C, out_h, out_w), dtype=np.int64)
    # The kernel reads rois as scalar_t, the type of x (_check converted them).
    run('roi_pool_forward', y.size, (xp.ascontiguousarray(x), xp.ascontiguousarray(rois, dtype=x.dtype),
                                     y, argmax, R, C, H, W, out_h, out_w, float(spatial_scale)), x.dtype)
    return y, argmax


def _backward_kernel(gy, argmax, rois, shape, spatial_scale, deterministic=False, run=_run_cuda):
    """gx of gy's dtype, like `_backward_numpy`. The kernel is compiled for gy's float type and
    reads rois as that type too, so rois are converted to it: they have x's dtype, and gy's may
    differ (a float32 gradient flowing into a float64 graph, or the reverse).

    deterministic: gather (one thread per input element, a fixed order of additions, equal to
    NumPy bit for bit) instead of scattering with atomicAdd (faster; on a GPU the order of the
    additions, and so the last bits of a pixel won by several bins, changes from run to run)."""
    xp = backend.get_array_module(gy)
    R, C, out_h, out_w = argmax.shape
    N, _, H, W = shape
    gy = xp.ascontiguousarray(gy)
    rois = xp.ascontiguousarray(rois, dtype=gy.dtype)
    gx = (xp.empty if deterministic else xp.zeros)(shape, dtype=gy.dtype)  # gather: writes all
    if deterministic:
        run('roi_pool_backward_gather', gx.size, (gy, argmax, rois, gx, N, R, C, H, W, out_h, out_w,
                                                  float(spatial_scale)), gy.dtype)
    else:
        run('roi_pool_backward', gy.size, (gy, argmax, rois, gx, R, C, H, W, out_h, out_w), gy.dtype)
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
    if not backend.is_cupy_array(rois):
        rois = np.asarray(rois)
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(f'roi_pool expects rois of shape (R, 5) with rows '
                         f'[batch_index, x1, y1, x2, y2], got shape {rois.shape}')
    # (R, 5) is small: checked on the CPU. RoIs from the host are uploaded after the check;
    # RoIs on the GPU are copied back for it, which makes the host wait for the device.
    host = backend.to_device(rois, 'cpu').astype(np.float64)
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
    return backend.to_device(rois.astype(x.dtype, copy=False), backend.device_of(x)), output_size


class RoIPool(Function):
    """RoI max pooling (Fast R-CNN, Sec. 2.1); forward saves the argmax that backward needs."""

    forward_numpy = staticmethod(_forward_numpy)      # tinyrcnn.speed puts a faster one here
    # On a GPU, True makes the backward pass reproducible run to run and equal to the NumPy
    # path (`_backward_kernel`); the default scatters with atomicAdd, which is faster. The CPU
    # path is deterministic either way.
    deterministic = False

    def forward(self, x, rois, output_size=(7, 7), spatial_scale=1 / 16):
        rois, output_size = _check(x, rois, output_size, spatial_scale)
        self.on_gpu = backend.get_array_module(x) is not np
        forward = _forward_kernel if self.on_gpu else self.forward_numpy
        y, self.argmax = forward(x, rois, output_size, spatial_scale)
        self.rois, self.shape, self.spatial_scale = rois, x.shape, spatial_scale
        return y

    def backward(self, gy):
        """Sec. 2.3: each bin's gradient goes to its argmax; rois get none."""
        if self.on_gpu:
            gx = _backward_kernel(gy, self.argmax, self.rois, self.shape, self.spatial_scale,
                                  self.deterministic)
        else:
            gx = _backward_numpy(gy, self.argmax, self.rois, self.shape)
        return gx, None


def roi_pool(x, rois, output_size=(7, 7), spatial_scale=1 / 16):
    """Max-pool each RoI of x into a fixed out_h x out_w grid (Fast R-CNN, Sec. 2.1).

    x: Tensor (N, C, H, W), float32 or float64.
    rois: Tensor or array (R, 5), rows [batch_index, x1, y1, x2, y2] in input-image pixels
        (converted to x's dtype).
    Returns a Tensor (R, C, out_h, out_w). Bad shapes or values raise ValueError.
    """
    op = backend.fast_cpu('roi_pool', x) or RoIPool              # the CPU speed hook
    return op.apply(x if isinstance(x, Tensor) else Tensor(x), rois,
                    output_size=output_size, spatial_scale=spatial_scale)


def roi_spp(x, rois, levels=(4, 2, 1), spatial_scale=1 / 16):
    """Spatial pyramid pooling over RoIs (SPPnet, He et al., 2014; Fast R-CNN's RoI pooling is
    its one-level case): each level L pools every RoI to L x L, the levels are flattened and
    concatenated. x (N, C, H, W) -> (R, C * sum(L*L)), e.g. C * 21 for (4, 2, 1)."""
    if len(levels) == 0:
        raise ValueError('roi_spp needs at least one pyramid level')
    pooled = [roi_pool(x, rois, (L, L), spatial_scale) for L in levels]
    return concat([p.reshape(p.shape[0], -1) for p in pooled], axis=1)
