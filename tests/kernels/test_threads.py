"""The kernels on real threads (kernels/compat_threads.h, run by kernels.cpu.run_threaded) under
ThreadSanitizer: a race planted in a copy of the RoI-pool backward is reported, and the real
kernels are race-free and still give the NumPy path's answers. Skipped where TSan cannot run."""
import re

import numpy as np
import pytest

from tinyrcnn.backend import KERNEL_DIR
from tinyrcnn.boxes import nms, nms_bitmask, random_clustered_boxes
from tinyrcnn.kernels import cpu
from tinyrcnn.ops import conv, pool
from tinyrcnn.ops.roi_pool import _backward_numpy, _forward_numpy
from helpers import distinct, edge_rois


@pytest.fixture(scope='module')
def tsan():
    reason = cpu.tsan_missing()
    if reason is not None:
        pytest.skip(reason)


def roi_pool_calls(x, rois, output_size, scale, gy):
    """Forward, scatter backward and gather backward, as one program's launches; the outputs."""
    N, C, H, W = x.shape
    R, (out_h, out_w) = len(rois), output_size
    y = np.zeros((R, C, out_h, out_w), x.dtype)
    argmax = np.zeros(y.shape, np.int64)
    gx, gx_gather = np.zeros_like(x), np.zeros_like(x)
    calls = [('roi_pool.cu', 'roi_pool_forward', (x, rois, y, argmax, R, C, H, W, out_h, out_w, scale)),
             ('roi_pool.cu', 'roi_pool_backward', (gy, argmax, rois, gx, R, C, H, W, out_h, out_w)),
             ('roi_pool.cu', 'roi_pool_backward_gather',
              (gy, argmax, rois, gx_gather, N, R, C, H, W, out_h, out_w, scale))]
    return calls, (y, argmax, gx, gx_gather)


def test_tsan_reports_a_planted_race(tsan):
    """The RoI-pool backward with a plain += where atomicAdd belongs: overlapping RoIs (and
    1-pixel RoIs, all of whose bins win the same pixel) make threads add into the same gx."""
    with open(f'{KERNEL_DIR}/roi_pool.cu') as f:
        source = f.read()
    racy, n = re.subn(r'atomicAdd\((gx \+ [^,]+), (gy\[i\])\)', r'*(\1) += \2', source)
    assert n == 1, 'the planted race no longer matches roi_pool.cu'
    x = distinct((2, 3, 6, 7), seed=1, dtype=np.float32)
    rois = edge_rois(6, 7, 1 / 16, seed=2, R=10).astype(np.float32)
    gy = distinct((len(rois), 3, 4, 4), seed=3, dtype=np.float32)
    calls, _ = roi_pool_calls(x, rois, (4, 4), 1 / 16, gy)
    res = cpu.run_threaded(calls[:2], np.float32, sources={'roi_pool.cu': racy})
    assert res.returncode == 66, res.stderr[-2000:]          # TSan's exit status on a report
    assert 'WARNING: ThreadSanitizer: data race' in res.stderr
    assert 'roi_pool_backward_body' in res.stderr and 'roi_pool.cu' in res.stderr


def test_real_kernels_are_race_free_and_right_on_threads(tsan):
    rng = np.random.default_rng(4)
    dtype = np.float32
    # RoI pooling: the awkward RoIs pile many bins, of one RoI or of several, onto one pixel.
    x = distinct((2, 3, 9, 11), seed=5, dtype=dtype)
    rois = edge_rois(9, 11, 1 / 16, seed=6, R=16).astype(dtype)
    gy = rng.standard_normal((len(rois), 3, 5, 4)).astype(dtype)
    calls, (y, argmax, gx, gx_gather) = roi_pool_calls(x, rois, (5, 4), 1 / 16, gy)
    # Max pooling with overlapping windows (stride < k), so outputs share an argmax.
    xm = distinct((2, 3, 9, 8), seed=7, dtype=dtype)
    k, stride, (Ho, Wo) = 3, 2, (4, 3)
    ym, am = np.zeros((2, 3, Ho, Wo), dtype), np.zeros((2, 3, Ho, Wo), np.int64)
    gym, gxm = distinct(ym.shape, seed=8, dtype=dtype), np.zeros_like(xm)
    calls += [('max_pool.cu', 'max_pool_forward', (xm, ym, am, 6, 9, 8, k, stride, Ho, Wo)),
              ('max_pool.cu', 'max_pool_backward', (gym, am, gxm, 6, 9, 8, Ho, Wo))]
    # im2col and its adjoint col2im, with padding.
    xc = distinct((2, 3, 7, 6), seed=9, dtype=dtype)
    Hc, Wc = conv.conv_output_size(7, 3, 2, 1), conv.conv_output_size(6, 3, 2, 1)
    cols = np.zeros((2, 27, Hc * Wc), dtype)
    gcols, gxc = distinct(cols.shape, seed=10, dtype=dtype), np.zeros_like(xc)
    calls += [('im2col.cu', 'im2col', (xc, cols, 2, 3, 7, 6, 3, 3, 2, 1, Hc, Wc)),
              ('im2col.cu', 'col2im', (gcols, gxc, 2, 3, 7, 6, 3, 3, 2, 1, Hc, Wc))]

    res = cpu.run_threaded(calls, dtype, grid=2, block=4)
    assert res.returncode == 0 and 'ThreadSanitizer' not in res.stderr, res.stderr[-3000:]

    y_ref, argmax_ref = _forward_numpy(x, rois, (5, 4), 1 / 16)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)
    gx_ref = _backward_numpy(gy, argmax_ref, rois, x.shape)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-6, atol=1e-6)  # atomics: any order of adds
    assert gx_gather.tobytes() == gx_ref.tobytes()               # gather: NumPy's order
    ym_ref, am_ref = pool._forward_cpu(xm, k, stride, Ho, Wo)
    np.testing.assert_array_equal(ym, ym_ref)
    np.testing.assert_array_equal(am, am_ref)
    np.testing.assert_allclose(gxm, pool._backward_cpu(gym, am_ref, xm.shape, True), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(cols, conv.im2col(xc, 3, 3, 2, 1))
    np.testing.assert_allclose(gxc, conv.col2im(gcols, xc.shape, 3, 3, 2, 1), rtol=1e-6)


def test_nms_is_race_free_and_right_on_threads(tsan):
    """nms_reduce's block shares `removed` and a __shared__ diagonal between barriers; a missing
    __syncthreads is reported (seen while writing it), the real kernel is clean."""
    boxes, scores = random_clustered_boxes(300, num_objects=12, seed=11)
    calls = []

    def run(name, n, args):                                # both launches in one program
        calls.append(('nms.cu', name, args))
        if name == 'nms_reduce':
            res = cpu.run_threaded(calls, np.float32, grid=2, block=5)
            assert res.returncode == 0 and 'ThreadSanitizer' not in res.stderr, res.stderr[-3000:]

    for max_keep in (None, 20):
        calls.clear()
        np.testing.assert_array_equal(nms_bitmask(boxes, scores, 0.5, run, max_keep),
                                      nms(boxes, scores, 0.5, max_keep))
