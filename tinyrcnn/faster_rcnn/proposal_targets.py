"""Proposal targets: the RoIs that train Faster R-CNN's detection head, sampled from the RPN's
own proposals (Ren et al., 2015, Sec. 3.2; the released code's ProposalTargetLayer).
"""
import numpy as np

from .. import boxes as bx
from ..fast_rcnn.minibatch import expand_targets, sample_rois


def proposal_targets(proposals, gt_boxes, gt_labels, num_classes, cfg, rng,
                     means=bx.BBOX_NORMALIZE_MEANS, stds=bx.BBOX_NORMALIZE_STDS):
    """Training RoIs for the Fast R-CNN head from the RPN's proposals (the released code's
    ProposalTargetLayer): the ground-truth boxes join the proposals, then Fast R-CNN's own
    sampling (`fast_rcnn.minibatch.sample_rois`: R RoIs, fg_fraction foreground at IoU >= fg_thresh, the rest
    background at IoU in [bg_thresh_lo, bg_thresh_hi)). Targets are normalised with FIXED
    means and stds (0, 0, 0, 0) and (0.1, 0.1, 0.2, 0.2), the code's values, so they need no
    pass over the data; export folds them into bbox_pred as for Fast R-CNN.

    Returns rois (R, 4) in input pixels, labels (R,), bbox_targets and bbox_weights (R, 4(K+1)).
    """
    gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    rois = np.concatenate([np.asarray(proposals, np.float32).reshape(-1, 4), gt_boxes])  # (P+G, 4)
    if len(gt_boxes) and len(rois):
        iou = bx.box_iou(rois, gt_boxes)                           # (P+G, G)
        assignment, max_iou = iou.argmax(axis=1), iou.max(axis=1)
    else:
        assignment, max_iou = np.zeros(len(rois), np.int64), np.zeros(len(rois), np.float32)
    entry = dict(rois=rois, max_iou=max_iou, assignment=assignment, gt_boxes=gt_boxes,
                 gt_labels=np.asarray(gt_labels, np.int64).reshape(-1))
    keep, labels = sample_rois(entry, cfg.rois_per_batch // cfg.ims_per_batch, cfg, rng)
    rois = rois[keep]
    gt = gt_boxes[assignment[keep]] if len(gt_boxes) else rois
    targets = bx.normalize_targets(bx.encode(rois, gt), means, stds) if len(rois) else np.zeros((0, 4))
    bbox_targets, bbox_weights = expand_targets(targets.astype(np.float32), labels, num_classes)
    return rois, labels, bbox_targets, bbox_weights
