"""Fast R-CNN's multi-task loss (tinyrcnn/fast_rcnn/loss.py, Sec. 2.3, Eq. 1)."""
import numpy as np

import tinyrcnn as tr
from tinyrcnn.fast_rcnn.loss import multitask_loss
from tinyrcnn.fast_rcnn.minibatch import expand_targets
from tinyrcnn.train import TrainConfig
from helpers import distinct


def test_log_loss_plus_lambda_smooth_l1_on_the_true_class_of_foreground_rois():
    rng = np.random.default_rng(0)
    u = np.array([1, 0, 2, 0])
    v = rng.standard_normal((4, 4))
    targets, weights = expand_targets(v, u, 2)
    cls_score = tr.Tensor(distinct((4, 3), 1), requires_grad=True)
    bbox_pred = tr.Tensor(distinct((4, 12), 2, scale=4.0), requires_grad=True)
    total, l_cls, l_loc = multitask_loss(cls_score, bbox_pred, u, targets, weights, loss_lambda=2.0)
    p = np.exp(cls_score.data) / np.exp(cls_score.data).sum(1, keepdims=True)
    d = np.abs(np.stack([bbox_pred.data[r, 4 * u[r]:4 * u[r] + 4] for r in range(4)]) - v)[u > 0]
    assert np.isclose(l_cls.item(), -np.log(p[np.arange(4), u]).mean())
    assert np.isclose(l_loc.item(), np.where(d < 1, 0.5 * d * d, d - 0.5).sum() / 4)
    assert np.isclose(total.item(), l_cls.item() + 2.0 * l_loc.item())
    assert tr.gradcheck(lambda s, b: multitask_loss(s, b, u, targets, weights)[0], [cls_score, bbox_pred])
    # the training settings give lambda and sigma, as the trainers pass theirs
    same = multitask_loss(cls_score, bbox_pred, u, targets, weights, TrainConfig(loss_lambda=2.0))
    assert same[0].item() == total.item()
