"""Proposal targets (tinyrcnn/faster_rcnn/proposal_targets.py): the head's RoIs from the RPN's
proposals, with the released code's fixed target statistics."""
import numpy as np

from tinyrcnn import boxes as bx
from tinyrcnn.faster_rcnn.proposal_targets import proposal_targets
from tinyrcnn.train import FasterTrainConfig


def test_proposal_targets():
    cfg = FasterTrainConfig()
    gt = np.array([[10, 10, 49, 49], [60, 20, 99, 79]], np.float32)
    labels_gt = np.array([2, 5])
    # no proposals at all: the ground truth itself is the foreground
    rois, labels, targets, weights = proposal_targets(np.zeros((0, 4)), gt, labels_gt, 6, cfg,
                                                      np.random.default_rng(0))
    np.testing.assert_array_equal(rois, gt)
    assert labels.tolist() == [2, 5] and not targets.any() and weights.sum() == 8
    # many proposals: at most 25% of 128 foreground, the rest background at IoU [0, 0.5)
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 80, (500, 2))
    props = np.hstack([xy, xy + rng.uniform(10, 60, (500, 2))]).astype(np.float32)
    rois, labels, targets, weights = proposal_targets(props, gt, labels_gt, 6, cfg, rng)
    iou = bx.box_iou(rois, gt).max(axis=1)
    fg = labels > 0
    assert len(rois) == 128 and 0 < fg.sum() <= 32
    assert (iou[fg] >= 0.5).all() and (iou[~fg] < 0.5).all()
    # targets: encode / (0.1, 0.1, 0.2, 0.2) in the columns of the RoI's class
    r = int(np.flatnonzero(fg)[0])
    g = gt[bx.box_iou(rois[r:r + 1], gt).argmax()]
    c = 4 * labels[r]
    np.testing.assert_allclose(targets[r, c:c + 4],
                               bx.encode(rois[r:r + 1], g[None])[0] / [0.1, 0.1, 0.2, 0.2], rtol=1e-5)
    assert weights[r].sum() == 4 and weights[r, c:c + 4].all() and not weights[~fg].any()
