"""Anchor targets (tinyrcnn/faster_rcnn/anchor_targets.py, Sec. 3.1.2-3.1.3) on hand-made cases."""
import numpy as np

from tinyrcnn import boxes as bx
from tinyrcnn.faster_rcnn.anchor_targets import anchor_targets


# ---------------------------------------------------------------------------------------------
# Anchor targets on hand-made cases (Sec. 3.1.2)
# ---------------------------------------------------------------------------------------------
def _targets(anchors, gt, im_size=(100, 100), **kw):
    return anchor_targets(np.array(anchors, np.float32), np.array(gt, np.float32), im_size,
                          np.random.default_rng(0), **kw)


def test_assignment_rules():
    gt = [[0, 0, 59, 59]]                            # 60 x 60
    anchors = [[10, 10, 49, 49],                     # IoU 1600/3600 = 0.44: below 0.7 but the best
               [0, 0, 29, 29],                       # IoU 0.25 < 0.3: negative
               [0, 0, 34, 34],                       # IoU 0.34: neither, ignored
               [60, 60, 99, 99],                     # no overlap: negative
               [-2, -2, 57, 57],                     # IoU 0.93 but crosses the border: ignored
               [50, 50, 109, 109]]                   # crosses the right/bottom border: ignored
    labels, targets = _targets(anchors, gt)
    assert labels.tolist() == [1, 0, -1, 0, -1, -1]
    np.testing.assert_allclose(targets[0], bx.encode(np.array(anchors[:1], np.float32),
                                                     np.array(gt, np.float32))[0], rtol=1e-6)
    assert not targets[4:].any()                     # outside anchors get no target
    # allowed_border makes the crossing anchors count again: the 0.93 one is now the best, so
    # the 0.44 one falls back to "neither"
    labels, _ = _targets(anchors, gt, allowed_border=10)
    assert labels.tolist() == [-1, 0, -1, 0, 1, 0]


def test_ties_and_high_iou_are_all_positive():
    gt = [[20, 20, 59, 59]]
    # two anchors tie for best at IoU 0.6; both positive
    labels, _ = _targets([[10, 20, 49, 59], [30, 20, 69, 59], [0, 0, 9, 9]], gt)
    assert labels.tolist() == [1, 1, 0]
    # IoU 1.0 and 0.83: both >= 0.7, both positive, though only one is the best
    labels, _ = _targets([[20, 20, 59, 59], [20, 20, 59, 52], [70, 70, 89, 89]], gt)
    assert labels.tolist() == [1, 1, 0]


def test_unreachable_ground_truth_and_no_ground_truth():
    far = [[50, 50, 89, 89], [60, 60, 99, 99]]
    # a ground truth no inside anchor touches gets no positive (not every IoU-0 anchor)
    labels, _ = _targets(far, [[0, 0, 9, 9]])
    assert labels.tolist() == [0, 0]
    labels, targets = _targets(far + [[-5, 0, 20, 20]], np.zeros((0, 4)))
    assert labels.tolist() == [0, 0, -1] and not targets.any()


def test_sampling_caps():
    gt = [[0, 0, 39, 39]]
    pos = [[0, 0, 39, 39]] * 300
    neg = [[60, 60, 99, 99]] * 500
    labels, _ = _targets(pos + neg, gt)              # too many of both: 128 + 128
    assert (labels[:300] == 1).sum() == 128 and (labels[300:] == 0).sum() == 128
    assert (labels[:300] != 0).all() and (labels[300:] != 1).all()
    labels, _ = _targets(pos[:10] + neg, gt)         # few positives: the rest negatives
    assert (labels == 1).sum() == 10 and (labels == 0).sum() == 246
    labels, _ = _targets(pos[:10] + neg[:50], gt)    # fewer than 256 in all: all kept
    assert (labels == 1).sum() == 10 and (labels == 0).sum() == 50
    labels, _ = _targets(pos + neg, gt, batch_size=64, fg_fraction=0.25)
    assert (labels == 1).sum() == 16 and (labels == 0).sum() == 48
