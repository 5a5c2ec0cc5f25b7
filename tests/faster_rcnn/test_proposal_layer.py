"""The proposal layer (tinyrcnn/faster_rcnn/proposal_layer.py, Sec. 3.3)."""
import numpy as np
import pytest

import tinyrcnn as tr
from helpers import gpu
from tinyrcnn.faster_rcnn.proposal_layer import proposal_layer


# ---------------------------------------------------------------------------------------------
# Proposal layer (Sec. 3.3)
# ---------------------------------------------------------------------------------------------
def _propose(anchors, scores, deltas=None, im_size=(100, 100), **kw):
    anchors = np.array(anchors, np.float32)
    deltas = np.zeros_like(anchors) if deltas is None else np.array(deltas, np.float32)
    return proposal_layer(np.array(scores, np.float32), deltas, anchors, im_size, **kw)


def test_proposals_decoded_clipped_and_sorted():
    anchors = [[-10, -10, 20, 20], [0, 0, 15, 15], [60, 70, 119, 109]]
    deltas = [[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0, 0, 0]]      # the second moves 8 px right
    boxes, scores = _propose(anchors, [0.2, 0.9, 0.5], deltas, min_size=1)
    np.testing.assert_allclose(boxes, [[8, 0, 23, 15], [60, 70, 99, 99], [0, 0, 20, 20]])
    np.testing.assert_allclose(scores, [0.9, 0.5, 0.2])
    assert boxes.dtype == np.float32


def test_min_size_in_original_pixels():
    anchors = [[0, 0, 3, 3], [20, 20, 59, 59]]                  # 4 px and 40 px wide
    boxes, _ = _propose(anchors, [0.9, 0.1], min_size=5, scale=1.0)
    np.testing.assert_array_equal(boxes, [[20, 20, 59, 59]])
    boxes, _ = _propose(anchors, [0.9, 0.1], min_size=5, scale=0.5)   # 5 original px = 2.5 here
    assert len(boxes) == 2


def test_nms_and_top_n():
    A, B, C = [0, 0, 19, 19], [1, 0, 20, 19], [50, 50, 69, 69]    # IoU(A, B) = 0.905
    boxes, scores = _propose([B, A, C], [0.8, 0.9, 0.7], min_size=1)
    np.testing.assert_array_equal(boxes, [A, C])                   # B suppressed at 0.7
    boxes, _ = _propose([B, A, C], [0.8, 0.9, 0.7], min_size=1, nms_thresh=0.95)
    assert len(boxes) == 3                                         # 0.905 < 0.95: all kept
    boxes, _ = _propose([B, A, C], [0.8, 0.9, 0.7], min_size=1, pre_nms_top_n=2)
    np.testing.assert_array_equal(boxes, [A])                      # C never reached NMS
    boxes, _ = _propose([B, A, C], [0.8, 0.9, 0.7], min_size=1, post_nms_top_n=1)
    np.testing.assert_array_equal(boxes, [A])
    many = [[10 * i, 0, 10 * i + 8, 8] for i in range(9)]          # disjoint boxes
    boxes, scores = _propose(many, np.arange(9) / 10, min_size=1, pre_nms_top_n=-1, post_nms_top_n=-1)
    assert len(boxes) == 9 and (np.diff(scores) < 0).all()


def test_proposal_layer_shapes_checked():
    with pytest.raises(ValueError):
        proposal_layer(np.zeros(3, np.float32), np.zeros((2, 4), np.float32),
                       np.zeros((3, 4), np.float32), (10, 10))


def test_tiny_boxes_neither_take_a_place_nor_suppress():
    """Tiny boxes are ranked last rather than cut out first (no wait on a GPU): the result is
    the cut-first one, even where they score best and overlap the real boxes."""
    tiny, A, B = [0, 0, 2, 2], [0, 0, 19, 19], [40, 40, 59, 59]   # tiny lies inside A
    boxes, scores = _propose([tiny, A, B], [0.99, 0.5, 0.4], min_size=5, nms_thresh=0.001)
    np.testing.assert_array_equal(boxes, [A, B])       # visited first, tiny would suppress A
    np.testing.assert_allclose(scores, [0.5, 0.4])
    boxes, _ = _propose([tiny, A, B], [0.99, 0.5, 0.4], min_size=5, pre_nms_top_n=2)
    np.testing.assert_array_equal(boxes, [A, B])       # the best 2 are the best real ones
    boxes, _ = _propose([tiny, A, B], [0.99, 0.5, 0.4], min_size=5, post_nms_top_n=1)
    np.testing.assert_array_equal(boxes, [A])
    boxes, scores = _propose([tiny], [0.9], min_size=5)
    assert boxes.shape == (0, 4) and scores.shape == (0,)


@gpu
def test_on_the_gpu_the_same_proposals_come_back_to_the_host():
    import cupy
    rng = np.random.default_rng(0)
    anchors = tr.boxes.random_clustered_boxes(500, seed=2, height=200, width=300)[0]
    deltas = rng.normal(0, 0.1, anchors.shape).astype(np.float32)
    scores = rng.random(500).astype(np.float32)
    kw = dict(im_size=(200, 300), pre_nms_top_n=300, post_nms_top_n=50, min_size=16, scale=0.5)
    want = proposal_layer(scores, deltas, anchors, **kw)
    got = proposal_layer(cupy.asarray(scores), cupy.asarray(deltas), cupy.asarray(anchors),
                         **kw, to_host=True)
    for g, w in zip(got, want):
        assert isinstance(g, np.ndarray) and g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
