"""RoI max pooling (Fast R-CNN, Sec. 2.1 and 2.3): hand-checked values, a brute-force scalar
re-implementation of the API text, gradient checks, the edge cases (degenerate, out-of-image,
single-pixel, overlapping RoIs, halves in the rounding, empty bins), the `.cu` source run on the
CPU, and, where a GPU is present, CuPy == NumPy and torchvision."""
import math
import os
import shutil
import subprocess
from fractions import Fraction

import numpy as np
import pytest

from tinyrcnn import backend
from tinyrcnn.backend import KERNEL_DIR
from tinyrcnn.gradient_check import gradcheck
from tinyrcnn.kernels import cpu
from tinyrcnn.ops.roi_pool import (RoIPool, roi_pool, roi_spp, round_half_away, _backward_kernel,
                                   _backward_numpy, _forward_kernel, _forward_numpy)
from tinyrcnn.tensor import Tensor
from helpers import awkward_map, distinct, edge_rois, gpu

needs_cxx = pytest.mark.skipif(cpu.compiler() is None, reason='no C++ compiler')


# ----- an independent scalar re-implementation, written from the API text -------------------
def c_round(v):
    """Nearest integer, halves away from zero; exact, through a Fraction."""
    q = Fraction(float(v))
    n = math.floor(abs(q) + Fraction(1, 2))
    return n if q >= 0 else -n


def brute_roi_pool(x, rois, output_size, spatial_scale):
    """Plain loops over every RoI, channel, bin and pixel, in the float type T of x."""
    T = x.dtype.type
    N, C, H, W = x.shape
    out_h, out_w = output_size
    y = np.zeros((len(rois), C, out_h, out_w), x.dtype)
    argmax = np.full(y.shape, -1, np.int64)
    for r, roi in enumerate(rois):
        n = int(roi[0])
        x1, y1, x2, y2 = (c_round(T(v) * T(spatial_scale)) for v in roi[1:])
        roi_w, roi_h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        bin_w, bin_h = T(roi_w) / T(out_w), T(roi_h) / T(out_h)
        for c in range(C):
            for ph in range(out_h):
                hs = min(max(math.floor(T(ph) * bin_h) + y1, 0), H)
                he = min(max(math.ceil(T(ph + 1) * bin_h) + y1, 0), H)
                for pw in range(out_w):
                    ws = min(max(math.floor(T(pw) * bin_w) + x1, 0), W)
                    we = min(max(math.ceil(T(pw + 1) * bin_w) + x1, 0), W)
                    best, at = T(0), -1
                    for h in range(hs, he):
                        for w in range(ws, we):
                            if at < 0 or x[n, c, h, w] > best:
                                best, at = x[n, c, h, w], h * W + w
                    y[r, c, ph, pw], argmax[r, c, ph, pw] = best, at
    return y, argmax


def brute_scatter(gy, argmax, rois, shape):
    """gx[n, c].flat[argmax] += gy, output by output, in gy's float type."""
    gx = np.zeros(shape, gy.dtype)
    for r, c, ph, pw in np.ndindex(*argmax.shape):
        a = argmax[r, c, ph, pw]
        if a >= 0:
            plane = gx[int(rois[r, 0]), c].reshape(-1)
            plane[a] = plane[a] + gy[r, c, ph, pw]
    return gx


# ----- hand-checked ---------------------------------------------------------------------------
def test_hand_example_4x4():
    x = Tensor(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), requires_grad=True)
    rois = np.array([[0, 0, 0, 20, 20], [0, 0, 10, 30, 30]], np.float32)
    y = roi_pool(x, rois, (2, 2), 0.1)
    # RoI 1 -> map corners (0, 0)-(2, 2), bins of 1.5: rows/cols {0, 1} and {1, 2}.
    # RoI 2 -> (0, 1)-(3, 3): 3 rows in bins of 1.5 ({1, 2}, {2, 3}), 4 columns in bins of 2.
    np.testing.assert_array_equal(y.numpy(), [[[[5, 6], [9, 10]]], [[[9, 11], [13, 15]]]])
    y.backward(np.ones((2, 1, 2, 2), np.float32))
    expected = np.zeros(16, np.float32)
    for winner in (5, 6, 9, 10, 9, 11, 13, 15):   # 9 wins in both RoIs: its gradients add
        expected[winner] += 1
    np.testing.assert_array_equal(x.grad.reshape(-1), expected)


def test_halves_round_away_from_zero():
    x = np.arange(24, dtype=np.float32).reshape(1, 1, 4, 6)
    # 8/16 = 0.5 -> 1 and 40/16 = 2.5 -> 3 (NumPy's round would give 0 and 2): rows/cols 1..3.
    y = roi_pool(x, [[0, 8, 8, 40, 40]], 1, 1 / 16)
    assert y.numpy().item() == 3 * 6 + 3
    # -8/16 = -0.5 -> -1: a 3x3 RoI from (-1, -1) whose first row and column of bins fall off
    # the map: those bins are empty, give 0 and route no gradient.
    fn = RoIPool()
    y = fn.forward(x, np.array([[0, -8, -8, 8, 8]], np.float32), (3, 3), 1 / 16)
    np.testing.assert_array_equal(y[0, 0], [[0, 0, 0], [0, 0, 1], [0, 6, 7]])
    np.testing.assert_array_equal(fn.argmax[0, 0], [[-1, -1, -1], [-1, 0, 1], [-1, 6, 7]])
    gx, grois = fn.backward(np.ones((1, 1, 3, 3), np.float32))
    assert grois is None and gx.sum() == 4
    # exact where floor(v + 0.5) is not: the float32 just below 0.5 rounds to 0
    below_half = np.nextafter(np.float32(0.5), np.float32(0))
    assert round_half_away(np.array([below_half, -below_half, 0.5, -0.5, 1.5, -2.5])).tolist() == \
        [0, 0, 1, -1, 2, -3]


@pytest.mark.parametrize('dtype,sees_row_29', [(np.float32, False), (np.float64, True)])
def test_bin_edges_are_computed_in_the_input_float_type(dtype, sees_row_29):
    # A 29-row RoI in 7 bins: 7 * (29 / 7) is exactly 29 in float32 but 29.000000000000004 in
    # float64, so in float64 (as in torchvision and Caffe) the last bin also takes row 29.
    x = np.zeros((1, 1, 40, 3), dtype)
    x[0, 0, 29, 1] = 5
    y = roi_pool(x, [[0, 0, 0, 2, 28]], (7, 1), 1.0).numpy()
    assert y[0, 0, 6, 0] == (5 if sees_row_29 else 0)


def test_degenerate_single_pixel_and_outside_rois():
    x = np.arange(144, dtype=np.float64).reshape(1, 1, 12, 12)
    y = roi_pool(x, [[0, 10, 10, 2, 2],       # x2 < x1: forced to the single pixel (10, 10)
                     [0, 3, 4, 3, 4],         # one pixel: every bin sees it
                     [0, 20, 0, 30, 5]],      # wholly right of the map: every bin is empty
                 (2, 3), 1.0).numpy()
    np.testing.assert_array_equal(y[0], np.full((1, 2, 3), 10 * 12 + 10))
    np.testing.assert_array_equal(y[1], np.full((1, 2, 3), 4 * 12 + 3))
    np.testing.assert_array_equal(y[2], 0)


def test_first_maximum_wins_and_empty_bins_have_argmax_minus_one():
    x = np.zeros((1, 2, 5, 6), np.float32)                  # all ties
    fn = RoIPool()
    fn.forward(x, np.array([[0, 1, 1, 4, 3], [0, 7, 0, 9, 2]], np.float32), (2, 2), 1.0)
    # bins of RoI 0: rows {1, 2}, {2, 3}; cols {1, 2}, {3, 4}: the top-left pixel of each wins
    np.testing.assert_array_equal(fn.argmax[0, 0], [[1 * 6 + 1, 1 * 6 + 3], [2 * 6 + 1, 2 * 6 + 3]])
    np.testing.assert_array_equal(fn.argmax[1], -1)


def test_rois_from_several_images_match_pooling_each_image_alone():
    x = distinct((3, 4, 9, 11), seed=1, dtype=np.float32)
    rois = edge_rois(9, 11, 0.5, N=3, seed=2)
    y = roi_pool(x, rois, (3, 2), 0.5).numpy()
    for n in range(3):
        mine = rois[:, 0] == n
        alone = rois[mine].copy()
        alone[:, 0] = 0
        np.testing.assert_array_equal(y[mine], roi_pool(x[n:n + 1], alone, (3, 2), 0.5).numpy())


# ----- the brute force, exactly ---------------------------------------------------------------
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('levels', [None, 4])   # all-distinct values, or few levels (many ties)
def test_matches_brute_force_exactly(dtype, levels):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 10, 13))
    if levels:
        x = np.round(x * levels / 3)
    x = x.astype(dtype)
    rois = edge_rois(10, 13, 1 / 16, seed=4).astype(dtype)
    for output_size, scale in [((3, 4), 1 / 16), ((7, 7), 1 / 16), ((2, 2), 1 / 8), ((13, 11), 1 / 16)]:
        fn = RoIPool()
        y = fn.forward(x, rois, output_size, scale)
        y_ref, argmax_ref = brute_roi_pool(x, rois, output_size, scale)
        assert y.dtype == dtype and fn.argmax.dtype == np.int64
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(fn.argmax, argmax_ref)
        gy = rng.standard_normal(y.shape).astype(dtype)
        gx, grois = fn.backward(gy)
        assert grois is None
        np.testing.assert_array_equal(gx, brute_scatter(gy, argmax_ref, rois, x.shape))


# ----- gradients -------------------------------------------------------------------------------
def test_gradcheck_roi_pool():
    x = Tensor(distinct((2, 3, 7, 8), seed=5), requires_grad=True)
    rois = edge_rois(7, 8, 0.5, seed=6, R=6)
    assert gradcheck(lambda t: roi_pool(t, rois, (3, 2), 0.5), [x])


def test_gradcheck_roi_spp_and_its_layout():
    x = Tensor(distinct((2, 2, 6, 7), seed=7), requires_grad=True)
    rois = edge_rois(6, 7, 0.25, seed=8, R=3)
    y = roi_spp(x, rois, spatial_scale=0.25)
    R = len(rois)
    assert y.shape == (R, 2 * (16 + 4 + 1))
    parts = [roi_pool(x, rois, L, 0.25).numpy().reshape(R, -1) for L in (4, 2, 1)]
    np.testing.assert_array_equal(y.numpy(), np.concatenate(parts, axis=1))
    assert gradcheck(lambda t: roi_spp(t, rois, (2, 1), 0.25), [x])


def test_overlapping_rois_add_their_gradients():
    x = Tensor(distinct((1, 2, 6, 6), seed=9), requires_grad=True)
    once = [[0, 1, 1, 4, 4]]           # 4x4: bins of 2 that do not overlap
    roi_pool(x, once, 2, 1.0).sum().backward()
    g1 = x.grad
    x.grad = None
    roi_pool(x, once * 3, 2, 1.0).sum().backward()
    np.testing.assert_array_equal(x.grad, 3 * g1)
    assert g1.sum() == 2 * 2 * 2 and g1.max() == 1   # each bin has one winner, all distinct


# ----- arguments -------------------------------------------------------------------------------
def test_rois_are_converted_from_lists_tensors_and_other_dtypes():
    x = distinct((1, 2, 5, 5), seed=10, dtype=np.float32)
    rois = [[0, 0.4, 1, 3, 4.6]]
    want = roi_pool(x, np.array(rois, np.float32), 2, 1.0).numpy()
    for form in (rois, np.array(rois), Tensor(np.array(rois)), np.array(rois, np.float16)):
        got = roi_pool(Tensor(x), form, 2, 1.0)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize('x_shape,rois,kwargs,match', [
    ((1, 1, 4, 4), [[0, 0, 0, 1]], {}, r'\(R, 5\)'),
    ((1, 1, 4, 4), [0, 0, 0, 1, 1], {}, r'\(R, 5\)'),
    ((2, 1, 4, 4), [[2, 0, 0, 1, 1]], {}, r'\[0, 2\)'),
    ((2, 1, 4, 4), [[-1, 0, 0, 1, 1]], {}, 'batch'),
    ((2, 1, 4, 4), [[0.5, 0, 0, 1, 1]], {}, 'integer'),
    ((1, 1, 4, 4), [[0, np.nan, 0, 1, 1]], {}, 'finite'),
    ((1, 1, 4, 4), [[0, 0, 0, np.inf, 1]], {}, 'finite'),
    ((1, 1, 4, 4), [[0, 0, 0, 1, 1]], {'output_size': 0}, 'output_size'),
    ((1, 1, 4, 4), [[0, 0, 0, 1, 1]], {'output_size': (2, 0)}, 'output_size'),
    ((1, 1, 4, 4), [[0, 0, 0, 1, 1]], {'output_size': (2, 2, 2)}, 'output_size'),
    ((1, 1, 4, 4), [[0, 0, 0, 1, 1]], {'output_size': 1.5}, 'output_size'),
    ((1, 1, 4, 4), [[0, 0, 0, 1, 1]], {'spatial_scale': 0}, 'spatial_scale'),
    ((1, 1, 4, 4), [[0, 0, 0, 1, 1]], {'spatial_scale': -0.5}, 'spatial_scale'),
    ((1, 4, 4), [[0, 0, 0, 1, 1]], {}, r'\(N, C, H, W\)'),
])
def test_bad_input_raises_value_error(x_shape, rois, kwargs, match):
    with pytest.raises(ValueError, match=match):
        roi_pool(np.zeros(x_shape, np.float32), np.array(rois, np.float64), **kwargs)


def test_integer_feature_map_is_rejected():
    with pytest.raises(ValueError, match='float32 or float64'):
        roi_pool(np.zeros((1, 1, 4, 4), np.int32), [[0, 0, 0, 1, 1]])


def test_no_rois_gives_an_empty_result():
    x = Tensor(np.ones((1, 3, 4, 4)), requires_grad=True)
    y = roi_pool(x, np.zeros((0, 5)), (2, 2), 1.0)
    assert y.shape == (0, 3, 2, 2)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, 0)


# ----- the CUDA source, without a GPU ----------------------------------------------------------
def run_on_cpu(name, n, args, dtype):
    """The `run` of ops/roi_pool.py's kernel dispatch, on the CPU build of roi_pool.cu (compiled
    for `dtype`, as backend.kernel would be). cpu.call refuses a float array of another type."""
    cpu.call(cpu.build('roi_pool.cu', dtype), name, *args, dtype=dtype)


def run_kernels_on_cpu(x, rois, output_size, scale, gy):
    """y, argmax, gx (atomic scatter) and gx (gather), through the same dispatch as on a GPU."""
    y, argmax = _forward_kernel(x, rois, output_size, scale, run=run_on_cpu)
    gx = _backward_kernel(gy, argmax, rois, x.shape, scale, run=run_on_cpu)
    gx_gather = _backward_kernel(gy, argmax, rois, x.shape, scale, deterministic=True, run=run_on_cpu)
    return y, argmax, gx, gx_gather


@needs_cxx
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_cu_kernels_on_cpu_equal_numpy(dtype):
    rng = np.random.default_rng(11)
    x = awkward_map(dtype)                                        # ties, -inf, NaN, -0.0
    rois = edge_rois(11, 14, 1 / 16, seed=12, R=40).astype(dtype)
    for output_size in [(7, 7), (2, 5), (13, 11)]:
        y_ref, argmax_ref = _forward_numpy(x, rois, output_size, 1 / 16)
        gy = rng.standard_normal(y_ref.shape).astype(dtype)
        y, argmax, gx, gx_gather = run_kernels_on_cpu(x, rois, output_size, 1 / 16, gy)
        np.testing.assert_array_equal(argmax, argmax_ref)
        np.testing.assert_array_equal(y, y_ref)                  # NaN == NaN here
        assert np.array_equal(np.signbit(y), np.signbit(y_ref))
        gx_ref = _backward_numpy(gy, argmax_ref, rois, x.shape)
        np.testing.assert_array_equal(gx, gx_ref)
        # The gather adds each pixel's bins in the order np.add.at does: equal bit for bit, and
        # it must have found every bin (the awkward RoIs pile many bins onto a few pixels).
        assert gx_gather.tobytes() == gx_ref.tobytes()


@needs_cxx
def test_gather_backward_with_huge_and_tiny_bins():
    """The gather skips bins that cannot hold the pixel, from a division with one bin of margin:
    RoIs much larger than the map (bins of many pixels), 1-pixel RoIs cut into 13 x 11 bins
    (many bins per pixel) and far-away RoIs must still send every gradient where NumPy does."""
    x = distinct((2, 3, 9, 12), seed=21)
    s = 16
    rois = np.array([[0, -300 * s, -200 * s, 500 * s, 400 * s], [1, 3 * s, 4 * s, 3 * s, 4 * s],
                     [1, -9000 * s, 2 * s, -8000 * s, 5 * s], [0, 0, 0, 11 * s, 8 * s],
                     [0, 2.5 * s, 1.5 * s, 9.49 * s, 7.5 * s]], np.float64)
    for output_size in [(7, 7), (13, 11), (1, 1)]:
        y, argmax = _forward_numpy(x, rois, output_size, 1 / s)
        gy = distinct(y.shape, seed=22)
        gx = _backward_kernel(gy, argmax, rois, x.shape, 1 / s, deterministic=True, run=run_on_cpu)
        assert gx.tobytes() == _backward_numpy(gy, argmax, rois, x.shape).tobytes()


@needs_cxx
@pytest.mark.parametrize('deterministic', [False, True])
def test_backward_reads_rois_in_the_gradients_float_type(deterministic):
    """x float64 (so rois are float64) and a float32 gradient: the backward kernel is compiled for
    float32 and must be given float32 rois. Handing it the float64 rows made it read garbage
    batch indices (on a GPU: wrong planes or a crash)."""
    x = distinct((2, 3, 9, 11), seed=5)
    rois = edge_rois(9, 11, 1 / 16, seed=6, R=20)
    op = RoIPool()
    y = op.forward(x, rois, (3, 3), 1 / 16)
    assert op.rois.dtype == np.float64
    gy = distinct(y.shape, seed=7, dtype=np.float32)
    gx = _backward_kernel(gy, op.argmax, op.rois, x.shape, 1 / 16, deterministic, run=run_on_cpu)
    assert gx.dtype == np.float32                                # gy's type, like the NumPy path
    np.testing.assert_array_equal(gx, _backward_numpy(gy, op.argmax, op.rois, x.shape))


@pytest.mark.skipif(shutil.which('nvcc') is None, reason='nvcc is not installed')
@pytest.mark.parametrize('ctype', ['float', 'double'])
def test_cu_compiles_with_nvcc(ctype, tmp_path):
    out = tmp_path / 'roi_pool.ptx'
    r = subprocess.run(['nvcc', '--ptx', '-std=c++14', f'-Dscalar_t={ctype}', f'-I{KERNEL_DIR}',
                        os.path.join(KERNEL_DIR, 'roi_pool.cu'), '-o', str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ptx = out.read_text()
    assert '.entry roi_pool_forward' in ptx and '.entry roi_pool_backward' in ptx


# ----- on a GPU --------------------------------------------------------------------------------
@gpu
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_cupy_equals_numpy(dtype):
    import cupy as cp
    x = distinct((2, 6, 13, 17), seed=13, dtype=dtype)
    rois = edge_rois(13, 17, 1 / 16, seed=14, R=60).astype(dtype)
    gy = distinct((len(rois), 6, 7, 7), seed=15, dtype=dtype)
    cpu_fn, gpu_fn = RoIPool(), RoIPool()
    y = cpu_fn.forward(x, rois, (7, 7), 1 / 16)
    y_gpu = gpu_fn.forward(cp.asarray(x), cp.asarray(rois), (7, 7), 1 / 16)
    np.testing.assert_array_equal(cp.asnumpy(y_gpu), y)
    np.testing.assert_array_equal(cp.asnumpy(gpu_fn.argmax), cpu_fn.argmax)
    gx_gpu, _ = gpu_fn.backward(cp.asarray(gy))
    gx, _ = cpu_fn.backward(gy)
    np.testing.assert_allclose(cp.asnumpy(gx_gpu), gx, rtol=1e-6, atol=1e-6)


@gpu
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_deterministic_cuda_backward_equals_numpy_bit_for_bit(dtype, monkeypatch):
    import cupy as cp
    monkeypatch.setattr(RoIPool, 'deterministic', True)
    x = distinct((2, 4, 11, 14), seed=19, dtype=dtype)
    rois = edge_rois(11, 14, 1 / 16, seed=20, R=50).astype(dtype)
    xg = Tensor(cp.asarray(x), requires_grad=True)
    y = roi_pool(xg, cp.asarray(rois), (7, 7), 1 / 16)
    gy = distinct(y.shape, seed=21, dtype=dtype)
    y.backward(cp.asarray(gy))
    op = RoIPool()
    op.forward(x, rois, (7, 7), 1 / 16)
    gx, _ = op.backward(gy)
    assert cp.asnumpy(xg.grad).tobytes() == gx.tobytes()


@gpu
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_cuda_values_equal_torchvision(dtype):
    torch = pytest.importorskip('torch')
    torchvision = pytest.importorskip('torchvision')
    if not torch.cuda.is_available():
        pytest.skip('torch sees no GPU')
    x = np.random.default_rng(16).standard_normal((2, 8, 19, 25)).astype(dtype)
    rois = edge_rois(19, 25, 1 / 16, seed=17, R=100).astype(dtype)
    gy = np.random.default_rng(18).standard_normal((len(rois), 8, 7, 7)).astype(dtype)
    xt = torch.tensor(x, device='cuda', requires_grad=True)
    yt = torchvision.ops.roi_pool(xt, torch.tensor(rois, device='cuda'), (7, 7), 1 / 16)
    yt.backward(torch.tensor(gy, device='cuda'))
    xg = Tensor(backend.to_device(x, 'cuda'), requires_grad=True)
    y = roi_pool(xg, backend.to_device(rois, 'cuda'), (7, 7), 1 / 16)
    y.backward(backend.to_device(gy, 'cuda'))
    np.testing.assert_array_equal(y.numpy(), yt.detach().cpu().numpy())
    np.testing.assert_allclose(backend.to_device(xg.grad, 'cpu'), xt.grad.cpu().numpy(),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(roi_pool(x, rois, (7, 7), 1 / 16).numpy(),
                                  yt.detach().cpu().numpy())
