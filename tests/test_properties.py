"""Property-based tests (hypothesis): invariants of boxes, IoU, encode/decode, NMS, RoI pooling
and VOC AP that must hold for any input, not only the hand-picked ones of the other tests."""
import numpy as np
from hypothesis import given, settings, strategies as st

from tinyrcnn import boxes as bx
from tinyrcnn.eval import evaluate_voc
from tinyrcnn.ops.roi_pool import _forward_numpy, bin_edges
from tinyrcnn.speed.roi_pool import forward_numpy as fast_forward

# the same examples on every run and machine (no example database): a CI failure can be rerun
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None)


@st.composite
def box_arrays(draw, min_size=0, max_n=25, min_n=0):
    """(n, 4) float32 boxes [x1, y1, x2, y2] with x2 - x1 + 1 >= min_size (inclusive pixels)."""
    n = draw(st.integers(min_n, max_n))
    values = st.floats(0, 300, allow_nan=False, width=32)
    sides = st.floats(max(min_size - 1, 0), 150, allow_nan=False, width=32)
    rows = [(x, y, x + w, y + h) for x, y, w, h in
            draw(st.lists(st.tuples(values, values, sides, sides), min_size=n, max_size=n))]
    return np.array(rows, np.float32).reshape(-1, 4)


@SETTINGS
@given(box_arrays(), box_arrays())
def test_iou_is_symmetric_bounded_and_one_on_itself(a, b):
    iou = bx.box_iou(a, b)
    assert iou.shape == (len(a), len(b))
    np.testing.assert_allclose(iou, bx.box_iou(b, a).T, rtol=1e-6)
    assert ((iou >= 0) & (iou <= 1 + 1e-6)).all()
    if len(a):
        np.testing.assert_allclose(np.diag(bx.box_iou(a, a)), 1, rtol=1e-6)


@SETTINGS
@given(st.integers(1, 20).flatmap(lambda n: st.tuples(box_arrays(3, n, n), box_arrays(3, n, n))))
def test_decode_undoes_encode(pair):
    # sides 3..151 pixels: no box is 62.5x another, where decode clamps log(w'/w) (BBOX_XFORM_CLIP)
    boxes, gt = (p.astype(np.float64) for p in pair)
    back = bx.decode(boxes, bx.encode(boxes, gt))
    np.testing.assert_allclose(back, gt, atol=1e-6 * (1 + np.abs(gt).max()))


@SETTINGS
@given(box_arrays(max_n=40), st.floats(0, 1), st.randoms(use_true_random=False))
def test_nms_keeps_a_score_ordered_subset_that_explains_every_dropped_box(boxes, thresh, rnd):
    scores = np.array([rnd.choice([0.1, 0.5, 0.9, rnd.random()]) for _ in boxes], np.float32)
    keep = bx.nms(boxes, scores, thresh)
    assert len(set(keep.tolist())) == len(keep) and set(keep.tolist()) <= set(range(len(boxes)))
    order = np.argsort(-scores, kind='stable')
    rank = np.empty(len(boxes), int)
    rank[order] = np.arange(len(boxes))
    assert (np.diff(rank[keep]) > 0).all()                       # by decreasing score, ties by index
    iou = bx.box_iou(boxes, boxes)
    for i, k in enumerate(keep):
        assert (iou[k, keep[:i]] <= np.float32(thresh)).all()    # kept boxes overlap at most thresh
    for d in set(range(len(boxes))) - set(keep.tolist()):
        earlier = keep[rank[keep] < rank[d]]
        assert (iou[d, earlier] > np.float32(thresh)).any()      # a dropped box has a reason


@st.composite
def roi_problem(draw):
    N, C, H, W = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    x = np.array(draw(st.lists(st.integers(-3, 3), min_size=N * C * H * W, max_size=N * C * H * W)),
                 np.float32).reshape(N, C, H, W)                  # small integers: many ties
    coords = st.floats(-20, 180, allow_nan=False, width=32)
    rois = [(draw(st.integers(0, N - 1)), *draw(st.tuples(coords, coords, coords, coords)))
            for _ in range(draw(st.integers(0, 6)))]
    size = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    return x, np.array(rois, np.float32).reshape(-1, 5), size, draw(st.sampled_from([1.0, 0.5, 1 / 16]))


@SETTINGS
@given(roi_problem())
def test_roi_pooling_takes_each_bins_first_maximum_and_the_speed_path_agrees(problem):
    x, rois, size, scale = problem
    y, argmax = _forward_numpy(x, rois, size, scale)
    y2, argmax2 = fast_forward(x, rois, size, scale)
    assert np.array_equal(y, y2) and np.array_equal(argmax, argmax2)
    N, C, H, W = x.shape
    hs, he, ws, we = bin_edges(rois, scale, size, H, W)
    for r, c, i, j in np.ndindex(*y.shape):
        window = x[int(rois[r, 0]), c, hs[r, i]:he[r, i], ws[r, j]:we[r, j]]
        if window.size == 0:
            assert y[r, c, i, j] == 0 and argmax[r, c, i, j] == -1
        else:
            assert y[r, c, i, j] == window.max()
            h, w = divmod(argmax[r, c, i, j], W)
            assert hs[r, i] <= h < he[r, i] and ws[r, j] <= w < we[r, j]
            first = np.argmax(window.ravel() == window.max())       # scan order h, then w
            assert (h - hs[r, i]) * (we[r, j] - ws[r, j]) + (w - ws[r, j]) == first


@SETTINGS
@given(st.lists(box_arrays(1, 5), min_size=1, max_size=4), st.integers(0, 2**31 - 1))
def test_voc_ap_is_a_fraction_perfect_detections_score_one_and_order_is_all_that_counts(gts, seed):
    rng = np.random.default_rng(seed)
    # two equal boxes (or two whose IoU rounds to 1): the devkit matches one of them, once
    gts = [g[bx.nms(g, np.zeros(len(g), np.float32), 0.99)] for g in gts]
    truths = [dict(boxes=g, labels=rng.integers(1, 3, len(g)), difficult=np.zeros(len(g), bool))
              for g in gts]
    perfect = [dict(boxes=t['boxes'], labels=t['labels'], scores=np.ones(len(t['boxes'])))
               for t in truths]
    result = evaluate_voc(perfect, truths, ('a', 'b'))
    assert all(np.isclose(ap, 1.0) for ap in result['ap'].values() if not np.isnan(ap))
    noisy = [dict(boxes=np.concatenate([t['boxes'], t['boxes'] + 400]),
                  labels=np.concatenate([t['labels'], t['labels']]),
                  scores=rng.random(2 * len(t['boxes']))) for t in truths]
    result = evaluate_voc(noisy, truths, ('a', 'b'))
    assert all(0 <= ap <= 1 + 1e-12 for ap in result['ap'].values() if not np.isnan(ap))
    squashed = [dict(d, scores=d['scores'] ** 3) for d in noisy]      # the same ranking
    assert evaluate_voc(squashed, truths, ('a', 'b'))['ap'] == result['ap']
