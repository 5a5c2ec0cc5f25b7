"""Anchor targets: which anchors an RPN is trained to call object, and where to move them
(Faster R-CNN, Ren et al., 2015, Sec. 3.1.2 "Loss Function" and 3.1.3 "Training RPNs").

An anchor that overlaps a ground-truth box with IoU >= 0.7, or is a ground truth's
best-overlapping anchor, is positive; one below 0.3 with every ground truth is negative; the
rest do not count. Each image then contributes 256 anchors, up to half of them positive.
"""
import numpy as np

from .. import boxes as bx


def anchor_targets(anchors, gt_boxes, im_size, rng, batch_size=256, fg_fraction=0.5,
                   positive_overlap=0.7, negative_overlap=0.3, allowed_border=0):
    """A label and a regression target for every anchor of one image (Sec. 3.1.2).

    anchors (N, 4) and gt_boxes (G, 4) in the network's input pixels; im_size (H, W) of that input.
    Anchors crossing the image border by more than `allowed_border` pixels are ignored
    (Sec. 3.3: they would add large, hard-to-correct error terms). Of the others, an anchor is
    positive (1) when its IoU with some ground truth is >= positive_overlap, or when it is a
    ground truth's best anchor (all ties), so every object gets one even if no anchor reaches 0.7;
    negative (0) when its IoU is below negative_overlap with every ground truth; else ignored
    (-1). Then `batch_size` anchors are sampled: at most fg_fraction of them positive, the rest
    negative, the others set to -1 (the "1:1" mini-batch, Sec. 3.1.3).

    Returns labels (N,) int64 in {-1, 0, 1} and bbox_targets (N, 4) float32 (`boxes.encode`
    from each anchor to its best ground truth; zero for anchors outside).
    """
    anchors = np.asarray(anchors, np.float32).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    H, W = im_size
    b = allowed_border
    inside = np.flatnonzero((anchors[:, 0] >= -b) & (anchors[:, 1] >= -b) &
                            (anchors[:, 2] < W + b) & (anchors[:, 3] < H + b))
    labels = np.full(len(anchors), -1, np.int64)
    targets = np.zeros((len(anchors), 4), np.float32)
    if len(inside) and len(gt_boxes):
        iou = bx.box_iou(anchors[inside], gt_boxes)                 # (n, G)
        assignment, max_iou = iou.argmax(axis=1), iou.max(axis=1)
        gt_max = iou.max(axis=0)                                    # (G,) best IoU of each gt
        lab = np.full(len(inside), -1, np.int64)
        lab[max_iou < negative_overlap] = 0
        # a ground truth no anchor touches (gt_max 0) has no best anchor: the released code
        # would make every anchor with IoU 0 positive here
        best = ((iou == gt_max[None]) & (gt_max[None] > 0)).any(axis=1)
        lab[best] = 1
        lab[max_iou >= positive_overlap] = 1
        labels[inside] = lab
        targets[inside] = bx.encode(anchors[inside], gt_boxes[assignment])
    elif len(inside):
        labels[inside] = 0                                          # no object: all negative

    fg = np.flatnonzero(labels == 1)
    max_fg = int(fg_fraction * batch_size)
    if len(fg) > max_fg:
        labels[rng.choice(fg, len(fg) - max_fg, replace=False)] = -1
    bg = np.flatnonzero(labels == 0)
    max_bg = batch_size - int((labels == 1).sum())
    if len(bg) > max_bg:
        labels[rng.choice(bg, len(bg) - max_bg, replace=False)] = -1
    return labels, targets
