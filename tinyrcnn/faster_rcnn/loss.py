"""Faster R-CNN's training loss for one image: the RPN's loss plus the Fast R-CNN head's
(Ren et al., 2015, Sec. 3.2).

Approximate joint training (Sec. 3.2 (ii)): the RPN and the head share the trunk and their
losses are added; the proposals that the head trains on are treated as constants, so no
gradient flows through the box coordinates. The 4-step alternating schedule trains one part at
a time (`stage` 'rpn' or 'head'; `tinyrcnn.train.alternating`).

    losses = faster_rcnn_losses(model, images, im_info, gt_boxes, gt_labels, cfg, rng)
    losses['loss'].backward()        # also: rpn_cls, rpn_loc, cls, loc

`cfg` is any object with the settings of `tinyrcnn.train.FasterTrainConfig`; `rng` the
iteration's NumPy Generator, which draws the anchor and RoI samples.
"""
import numpy as np

from .. import backend
from ..fast_rcnn.loss import multitask_loss
from .anchor_targets import anchor_targets
from .network import proposal_rois
from .proposal_targets import proposal_targets
from .rpn import rpn_loss

STAGES = ('joint', 'rpn', 'head')


def faster_rcnn_losses(model, images, im_info, gt_boxes, gt_labels, cfg, rng, proposals=None,
                       stage='joint'):
    """Losses of `model` (a FasterRCNN in train mode) on one image (1, 3, H, W) with im_info
    (H, W, scale) and its ground truth gt_boxes (G, 4) in input pixels and gt_labels (G,).

    proposals (P, 4): boxes for the head instead of the RPN's own (the alternating schedule's
    step 2 trains the head on an earlier RPN's boxes). stage: 'joint' (both losses), 'rpn' or
    'head' (that part's loss only; the other terms are zero). Returns a dict of Tensors
    rpn_cls, rpn_loc, cls, loc and loss = rpn_cls + rpn_loc + cls + lambda * loc.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be 'joint', 'rpn' or 'head', got {stage!r}")
    if images.shape[0] != 1:
        raise ValueError(f'FasterRCNN takes one image at a time (N=1, Sec. 3.1.3), got {images.shape[0]}')
    feats = model.features(images)                               # (1, C, H/16, W/16)
    logits, deltas = model.rpn(feats)                             # (1, 2A, h, w), (1, 4A, h, w)
    if proposals is None and stage != 'rpn':                      # an RPN step needs none
        proposals, _ = model.propose(logits.data, deltas.data, im_info)
    H, W, _ = im_info
    gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels, np.int64).reshape(-1)
    zero = feats.sum() * 0.0
    out = dict(rpn_cls=zero, rpn_loc=zero, cls=zero, loc=zero)
    if stage in ('joint', 'rpn'):                                 # Sec. 3.1.2, Eq. 1
        labels, targets = anchor_targets(
            model.anchors(*feats.shape[2:]), gt_boxes, (H, W), rng, cfg.rpn_batch_size,
            cfg.rpn_fg_fraction, cfg.rpn_positive_overlap, cfg.rpn_negative_overlap,
            cfg.rpn_allowed_border)
        out['rpn_cls'], out['rpn_loc'] = rpn_loss(logits, deltas, labels, targets, cfg.rpn_sigma)
    if stage in ('joint', 'head'):                                # Fast R-CNN's loss, Sec. 2.3
        rois, labels, bbox_targets, bbox_weights = proposal_targets(
            proposals, gt_boxes, gt_labels, model.num_classes, cfg, rng)
        if len(rois):
            cls_score, bbox_pred = model.head(feats, proposal_rois(rois, feats))
            on = lambda a: backend.to_device(a, feats.device)  # noqa: E731
            # the labels stay on the host: the log loss checks them there, then uploads them
            _, out['cls'], out['loc'] = multitask_loss(
                cls_score, bbox_pred, labels, on(bbox_targets), on(bbox_weights), cfg)
    out['loss'] = out['rpn_cls'] + out['rpn_loc'] + out['cls'] + out['loc'] * cfg.loss_lambda
    return out
