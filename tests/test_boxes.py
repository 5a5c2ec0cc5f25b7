"""Boxes: IoU, encode/decode, normalisation, clipping, and NMS (NumPy, the nms.cu kernel on the CPU,
an nvcc compile check, and CuPy == NumPy on the GPU or the CuPy stand-in)."""
import math
import os
import shutil
import subprocess

import numpy as np
import pytest

from tinyrcnn.backend import KERNEL_DIR
from tinyrcnn.boxes import (BBOX_NORMALIZE_STDS, batched_nms, box_area, box_iou, clip_boxes,
                            compute_target_stats, decode, encode, filter_small, nms, nms_bitmask,
                            normalize_targets, random_clustered_boxes, unnormalize_targets)
from tinyrcnn.kernels import cpu
from helpers import gpu


def f(*rows, dtype=np.float64):
    return np.array(rows, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# IoU
# ---------------------------------------------------------------------------------------------
def test_box_area_inclusive_pixels():
    # [0, 0, 9, 9] covers pixels 0..9: 10 x 10; a single pixel [3, 3, 3, 3] has area 1.
    np.testing.assert_array_equal(box_area(f([0, 0, 9, 9], [3, 3, 3, 3], [0, 0, 9, 4])), [100, 1, 50])


def test_box_iou_hand_values():
    a = f([0, 0, 9, 9])
    b = f([5, 5, 14, 14],   # overlap 5x5 = 25, union 100 + 100 - 25 = 175 -> 1/7
          [10, 0, 19, 9],   # touches at x = 9|10: inclusive pixels do not overlap -> 0
          [2, 2, 6, 6],     # contained 5x5: 25 / 100
          [0, 0, 9, 9],     # identical -> 1
          [9, 9, 20, 20],   # shares the single pixel (9, 9): 1 / (100 + 144 - 1)
          [50, 50, 60, 60])  # far away -> 0
    np.testing.assert_allclose(box_iou(a, b)[0], [1 / 7, 0, 0.25, 1, 1 / 243, 0], rtol=1e-15)
    assert box_iou(b, a).shape == (6, 1)
    np.testing.assert_array_equal(box_iou(b, a)[:, 0], box_iou(a, b)[0])  # symmetric, bit for bit


def test_box_iou_float32_stays_float32_and_exact_half():
    iou = box_iou(f([0, 0, 9, 9], dtype=np.float32), f([0, 0, 9, 4], dtype=np.float32))
    assert iou.dtype == np.float32 and iou[0, 0] == 0.5  # 50 / 100 exactly


def test_box_iou_bad_shapes():
    with pytest.raises(ValueError, match=r'\(R, 4\)'):
        box_iou(np.zeros((3, 5)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match='b must have shape'):
        box_iou(np.zeros((3, 4)), np.zeros(4))


# ---------------------------------------------------------------------------------------------
# Box parametrisation and target normalisation
# ---------------------------------------------------------------------------------------------
def test_encode_decode_hand_values():
    # P = [0, 0, 9, 9]: w = h = 10, centre (5, 5). G = [5, 0, 14, 19]: w = 10, h = 20, centre (10, 10).
    # tx = (10 - 5) / 10 = 0.5, ty = (10 - 5) / 10 = 0.5, tw = log(10 / 10) = 0, th = log(20 / 10).
    P, G = f([0, 0, 9, 9]), f([5, 0, 14, 19])
    t = encode(P, G)
    np.testing.assert_allclose(t, [[0.5, 0.5, 0.0, math.log(2)]], atol=1e-15)
    np.testing.assert_allclose(decode(P, t), G, atol=1e-12)
    np.testing.assert_array_equal(decode(P, np.zeros((1, 4))), P)  # zero deltas: the box itself


def test_encode_decode_round_trip_random():
    rng = np.random.default_rng(0)
    P, _ = random_clustered_boxes(200, seed=1)
    G, _ = random_clustered_boxes(200, seed=2)
    P, G = P.astype(np.float64), G.astype(np.float64)
    np.testing.assert_allclose(decode(P, encode(P, G)), G, atol=1e-9)
    d = rng.normal(0, 0.5, (200, 4))
    np.testing.assert_allclose(encode(P, decode(P, d)), d, atol=1e-9)


def test_decode_per_class_deltas_and_clamp():
    P = f([0, 0, 9, 9], [10, 20, 49, 39])
    rng = np.random.default_rng(1)
    deltas = rng.normal(0, 0.3, (2, 12))  # K = 3 classes
    out = decode(P, deltas)
    assert out.shape == (2, 12)
    for k in range(3):  # each class's 4 columns decode on their own
        np.testing.assert_array_equal(out[:, 4 * k:4 * k + 4], decode(P, deltas[:, 4 * k:4 * k + 4]))
    # tw = 100 would overflow exp(); it is clamped at log(1000/16): width 10 * 62.5 = 625.
    huge = decode(P[:1], f([0, 0, 100, 100]))
    assert np.all(np.isfinite(huge))
    np.testing.assert_allclose(huge[0, 2] - huge[0, 0] + 1, 625.0)
    with pytest.raises(ValueError, match=r'\(R, 4K\)'):
        decode(P, np.zeros((2, 6)))
    with pytest.raises(ValueError, match='one row of deltas per box'):
        decode(P, np.zeros((3, 4)))


def test_normalize_targets_round_trip_and_stats():
    rng = np.random.default_rng(2)
    t = rng.normal([0.1, -0.2, 0.3, 0.0], [0.1, 0.2, 0.3, 0.4], (500, 4))
    means, stds = compute_target_stats(t)
    np.testing.assert_allclose(means, t.mean(axis=0))
    np.testing.assert_allclose(stds, np.sqrt(((t - t.mean(axis=0)) ** 2).mean(axis=0)))  # population std
    n = normalize_targets(t, means, stds)
    np.testing.assert_allclose(n.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(n.std(axis=0), 1)
    np.testing.assert_allclose(unnormalize_targets(n, means, stds), t)
    # Default stds (0.1, 0.1, 0.2, 0.2), zero means: [0.1, 0.1, 0.2, 0.2] -> ones.
    np.testing.assert_allclose(normalize_targets(f(list(BBOX_NORMALIZE_STDS))), [[1, 1, 1, 1]])
    # (R, 4K) targets with per-class (K, 4) statistics.
    t2 = rng.normal(size=(10, 8))
    m2, s2 = rng.normal(size=(2, 4)), rng.uniform(0.5, 2, (2, 4))
    np.testing.assert_allclose(normalize_targets(t2, m2, s2)[:, 4:], (t2[:, 4:] - m2[1]) / s2[1])
    with pytest.raises(ValueError, match=r'\(4,\) or \(K, 4\)'):
        normalize_targets(t2, np.zeros(3), np.ones(4))
    # A constant column keeps std 1 instead of dividing by zero.
    assert compute_target_stats(np.ones((5, 4)))[1].tolist() == [1, 1, 1, 1]


def test_clip_boxes_and_filter_small():
    boxes = f([-5, -3, 120, 90, 10, 10, 20, 20])  # (1, 8): two classes' boxes
    # Image 100 (H) x 80 (W): x to [0, 79], y to [0, 99].
    np.testing.assert_array_equal(clip_boxes(boxes, 100, 80), f([0, 0, 79, 90, 10, 10, 20, 20]))
    assert boxes[0, 0] == -5  # the input is not modified
    # widths 10, 3, 16; heights 10, 16, 2 (inclusive): min_size 3 keeps the first two.
    small = f([0, 0, 9, 9], [0, 0, 2, 15], [0, 0, 15, 1])
    np.testing.assert_array_equal(filter_small(small, 3), [0, 1])
    assert filter_small(small, 3).dtype == np.int64


# ---------------------------------------------------------------------------------------------
# NMS, NumPy
# ---------------------------------------------------------------------------------------------
def test_nms_identical_boxes_and_score_ties():
    same = f([0, 0, 9, 9], [0, 0, 9, 9], [0, 0, 9, 9])
    np.testing.assert_array_equal(nms(same, f(0.2, 0.9, 0.5), 0.5), [1])
    np.testing.assert_array_equal(nms(same, f(0.7, 0.7, 0.7), 0.5), [0])  # tie: lowest index wins
    # Disjoint boxes: all kept, by decreasing score, equal scores by index.
    apart = f([0, 0, 9, 9], [20, 0, 29, 9], [40, 0, 49, 9], [60, 0, 69, 9])
    keep = nms(apart, f(0.5, 0.9, 0.5, 0.9), 0.5)
    np.testing.assert_array_equal(keep, [1, 3, 0, 2])
    assert keep.dtype == np.int64


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_nms_threshold_is_strict(dtype):
    # IoU([0,0,9,9], [0,0,9,4]) = 50 / 100 = 0.5 exactly: "exceeds 0.5" is false, so both stay.
    boxes, scores = f([0, 0, 9, 9], [0, 0, 9, 4], dtype=dtype), f(0.9, 0.8)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [0, 1])
    np.testing.assert_array_equal(nms(boxes, scores, 0.49), [0])


def test_nms_is_greedy_not_transitive():
    # A-B IoU = 70/130 = 0.54, B-C = 0.54, A-C = 40/160 = 0.25. A removes B; B, gone, removes
    # nothing, so C stays.
    boxes = f([0, 0, 9, 9], [3, 0, 12, 9], [6, 0, 15, 9])
    np.testing.assert_array_equal(nms(boxes, f(0.9, 0.8, 0.7), 0.5), [0, 2])


def test_nms_empty_and_bad_input():
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    with pytest.raises(ValueError, match=r'scores must have shape \(R,\) = \(3,\)'):
        nms(np.zeros((3, 4)), np.zeros(2), 0.5)
    with pytest.raises(ValueError, match=r'\(R, 4\)'):
        nms(np.zeros((3, 5)), np.zeros(3), 0.5)
    with pytest.raises(ValueError, match='iou_threshold'):
        nms(np.zeros((3, 4)), np.zeros(3), 1.5)


def brute_force_nms(boxes, scores, thresh):
    """Greedy NMS written the slow way: one candidate at a time against every kept box."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    iou = box_iou(boxes, boxes)
    keep = []
    for i in order:
        if all(not iou[k, i] > thresh for k in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('thresh', [0.3, 0.5, 0.7])
def test_nms_matches_brute_force(seed, thresh):
    boxes, scores = random_clustered_boxes(300, num_objects=10, seed=seed)
    scores[::7] = scores[0]  # some exact ties in score
    keep = nms(boxes, scores, thresh)
    assert keep.tolist() == brute_force_nms(boxes, scores, boxes.dtype.type(thresh))
    # Invariants: kept boxes overlap each other at most `thresh`; every dropped box overlaps a
    # kept box of higher (or equal, earlier) rank by more.
    iou = box_iou(boxes[keep], boxes[keep])
    assert np.all(iou[~np.eye(len(keep), dtype=bool)] <= np.float32(thresh))
    dropped = np.setdiff1d(np.arange(300), keep)
    assert np.all((box_iou(boxes[dropped], boxes[keep]) > np.float32(thresh)).any(axis=1))
    # max_keep stops early with the same first indices
    for m in (1, 3, len(keep), len(keep) + 5):
        assert nms(boxes, scores, thresh, max_keep=m).tolist() == keep[:m].tolist()


def test_batched_nms_per_class():
    boxes = f([0, 0, 9, 9], [0, 0, 9, 9], [1, 0, 10, 9], [40, 40, 49, 49])
    scores, labels = f(0.6, 0.9, 0.8, 0.7), np.array([1, 2, 1, 2])
    # Class 1: boxes 0, 2 (IoU 90/110 = 0.82): keep 2 (0.8). Class 2: boxes 1, 3 apart: keep both.
    # Identical boxes 0 and 1 do not suppress each other: different classes.
    np.testing.assert_array_equal(batched_nms(boxes, scores, labels, 0.5), [1, 2, 3])
    assert batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), 0.5).tolist() == []
    with pytest.raises(ValueError, match='labels'):
        batched_nms(boxes, scores, labels[:3], 0.5)


# ---------------------------------------------------------------------------------------------
# NMS, the nms.cu kernel
# ---------------------------------------------------------------------------------------------
def grid_boxes(n, seed):
    """Integer boxes on a coarse grid: many pairs with IoU exactly 0.5 / 1/3 etc., the cases where
    a different rounding in the kernel would show."""
    rng = np.random.default_rng(seed)
    x1, y1 = rng.integers(0, 6, (2, n)) * 5
    w, h = rng.choice([5, 10, 20], (2, n))
    return np.stack([x1, y1, x1 + w - 1, y1 + h - 1], axis=1), rng.random(n)


needs_cxx = pytest.mark.skipif(cpu.compiler() is None, reason='no C++ compiler for the CPU kernel build')


@needs_cxx
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_nms_kernel_on_cpu_matches_numpy(dtype):
    lib = cpu.build('nms.cu', dtype)

    def run(name, n, args):
        cpu.call(lib, name, *args, dtype=dtype)

    cases = [random_clustered_boxes(n, seed=n) for n in (1, 63, 64, 65, 130, 1000)]
    cases += [grid_boxes(n, seed) for seed, n in enumerate((100, 257))]
    for boxes, scores in cases:
        boxes = boxes.astype(dtype)
        for thresh in (0.0, 1 / 3, 0.5, 0.7, 1.0):
            expected = nms(boxes, scores, thresh)
            got = nms_bitmask(boxes, scores, thresh, run)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, expected, err_msg=f'{len(boxes)} boxes @ {thresh}')
            # the kernel stops at max_keep, also inside a column block of 64 and at its edge
            for m in sorted({0, 1, 63, 64, 65, len(expected) - 1, len(expected) + 3}):
                np.testing.assert_array_equal(nms_bitmask(boxes, scores, thresh, run, max_keep=m),
                                              nms(boxes, scores, thresh, max_keep=m),
                                              err_msg=f'{len(boxes)} boxes @ {thresh}, max_keep {m}')
    assert nms_bitmask(np.zeros((0, 4), dtype), np.zeros(0), 0.5, run).tolist() == []


@needs_cxx
def test_nms_kernel_on_real_threads_matches_numpy():
    """nms_reduce splits each kept box's mask row among the threads of its block: on real threads
    (kernels/compat_threads.h), with block sizes that do not divide the 64-box column blocks and a
    second block that must stay idle, it still keeps exactly NumPy's boxes."""
    boxes, scores = random_clustered_boxes(700, num_objects=30, seed=5)
    calls, shape = [], {}

    def run(name, n, args):                                # both launches in one program
        calls.append(('nms.cu', name, args))
        if name == 'nms_reduce':
            res = cpu.run_threaded(calls, np.float32, sanitize=False, **shape)
            assert res.returncode == 0, res.stderr
    for grid, block in [(1, 3), (2, 7)]:
        shape.update(grid=grid, block=block)
        for thresh, max_keep in [(0.5, None), (0.7, 40), (0.3, 1)]:
            calls.clear()
            np.testing.assert_array_equal(nms_bitmask(boxes, scores, thresh, run, max_keep),
                                          nms(boxes, scores, thresh, max_keep))


@pytest.mark.skipif(shutil.which('nvcc') is None, reason='nvcc not installed')
@pytest.mark.parametrize('ctype', ['float', 'double'])
def test_nms_kernel_compiles_with_nvcc(tmp_path, ctype):
    out = tmp_path / 'nms.ptx'
    cmd = ['nvcc', '--ptx', '-std=c++14', f'-Dscalar_t={ctype}', f'-I{KERNEL_DIR}',
           os.path.join(KERNEL_DIR, 'nms.cu'), '-o', str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ptx = out.read_text()
    assert '.entry nms_mask' in ptx and '.entry nms_reduce' in ptx
    assert 'fma' not in ptx  # IoU must round like NumPy: no fused multiply-add


@gpu
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_nms_cupy_matches_numpy(dtype):
    import cupy as cp
    for boxes, scores in [random_clustered_boxes(3000, seed=3), grid_boxes(500, 4)]:
        boxes = boxes.astype(dtype)
        for thresh in (0.3, 0.5, 0.7):
            expected = nms(boxes, scores, thresh)
            got = nms(cp.asarray(boxes), cp.asarray(scores), thresh)
            np.testing.assert_array_equal(cp.asnumpy(got), expected)
            got = nms(cp.asarray(boxes), cp.asarray(scores), thresh, max_keep=100)
            np.testing.assert_array_equal(cp.asnumpy(got), expected[:100])
        labels = np.arange(len(boxes)) % 3
        np.testing.assert_array_equal(
            cp.asnumpy(batched_nms(cp.asarray(boxes), cp.asarray(scores), cp.asarray(labels), 0.5)),
            batched_nms(boxes, scores, labels, 0.5))
