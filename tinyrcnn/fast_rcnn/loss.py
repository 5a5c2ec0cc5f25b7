"""Fast R-CNN's multi-task loss (Girshick, 2015, Sec. 2.3, Eq. 1).

Each RoI has a true class u (0 is background) and, for u >= 1, a regression target v. The
network gives class scores and four box offsets t^k per class; the loss is log loss on the
class plus, for foreground RoIs only, smooth L1 on the offsets of the true class:

    L(p, u, t^u, v) = L_cls(p, u) + lambda [u >= 1] L_loc(t^u, v)

`bbox_weights` (from `minibatch.expand_targets`) is 1 on the four columns of the true class of
foreground RoIs and 0 elsewhere: that is [u >= 1] and the choice of t^u in one mask.
"""
from .. import functional as F


def multitask_loss(cls_score, bbox_pred, labels, bbox_targets, bbox_weights, cfg=None,
                   loss_lambda=1.0, sigma=1.0):
    """L = L_cls(p, u) + lambda [u >= 1] L_loc(t^u, v) (Sec. 2.3, eq. 1), mean over the RoIs.

    cls_score (R, K+1) and bbox_pred (R, 4(K+1)) Tensors; labels (R,); bbox_targets and
    bbox_weights (R, 4(K+1)). lambda and the smooth L1's sigma (1: the paper's) come from the
    training settings `cfg` (`TrainConfig.loss_lambda`, `smooth_l1_sigma`) when given.
    Returns (L, L_cls, L_loc)."""
    if cfg is not None:
        loss_lambda, sigma = cfg.loss_lambda, cfg.smooth_l1_sigma
    loss_cls = F.cross_entropy(cls_score, labels)
    loss_loc = F.smooth_l1_loss(bbox_pred, bbox_targets, bbox_weights, sigma=sigma)
    return loss_cls + loss_loc * loss_lambda, loss_cls, loss_loc
