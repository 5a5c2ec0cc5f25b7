"""The Region Proposal Network (Faster R-CNN, Ren et al., 2015, Sec. 3.1).

A small network slides over the last shared conv map: a 3x3 conv (512 channels for VGG16) with
ReLU, then two sibling 1x1 convs giving, at each position and for each of its A anchors, two
objectness scores (softmax over object / not object) and four box offsets relative to the anchor.

    head:      RPNHead(C) on feats (1, C, H, W) -> logits (1, 2A, H, W), deltas (1, 4A, H, W)
    training:  anchor_targets (Sec. 3.1.2) -> rpn_loss (Eq. 1)
    proposing: proposal_layer: decode, clip, drop tiny boxes, top-N, NMS 0.7, top-N (Sec. 3.3)

Channel layout, as in the released code: logits channels [0, A) are "not object" and [A, 2A)
"object" for anchors 0..A-1; deltas channel 4a + j is offset j of anchor a. `flatten_outputs`
turns them into (H*W*A, 2) and (H*W*A, 4) rows in the (y, x, a) order of `shift_anchors`.
"""
import numpy as np

from .. import backend, nn
from .. import boxes as bx
from .. import functional as F
from ..utils import rng as _package_rng


def _normal(shape, std):
    return (_package_rng().standard_normal(shape) * std).astype(np.float32)


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then 1x1 convs for 2A scores and 4A deltas; weights N(0, 0.01), biases 0
    (Sec. 3.1.3: "new layers ... zero-mean Gaussian distribution with standard deviation 0.01")."""

    def __init__(self, in_channels, mid_channels=512, num_anchors=9):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, mid_channels, 3, padding=1)
        self.cls_score = nn.Conv2d(mid_channels, 2 * num_anchors, 1)
        self.bbox_pred = nn.Conv2d(mid_channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.cls_score, self.bbox_pred):
            layer.weight.data = _normal(layer.weight.shape, 0.01)
            layer.bias.data[:] = 0
        self.num_anchors = num_anchors

    def forward(self, feats):
        h = F.relu(self.conv(feats))                   # (1, 512, H, W)
        return self.cls_score(h), self.bbox_pred(h)    # (1, 2A, H, W), (1, 4A, H, W)


def flatten_outputs(logits, deltas):
    """(1, 2A, H, W), (1, 4A, H, W) Tensors -> (H*W*A, 2) logits and (H*W*A, 4) deltas, rows in
    (y, x, a) order (differentiable: reshape and transpose)."""
    N, A2, H, W = logits.shape
    if N != 1 or A2 % 2 or tuple(deltas.shape) != (1, 2 * A2, H, W):
        raise ValueError(f'RPN outputs must be (1, 2A, H, W) and (1, 4A, H, W) for one image, got '
                         f'{tuple(logits.shape)} and {tuple(deltas.shape)}')
    A = A2 // 2
    scores = logits.reshape(2, A, H, W).transpose(2, 3, 1, 0).reshape(-1, 2)   # (HWA, 2)
    offsets = deltas.reshape(A, 4, H, W).transpose(2, 3, 0, 1).reshape(-1, 4)  # (HWA, 4)
    return scores, offsets


# ---------------------------------------------------------------------------------------------
# Training targets and loss (Sec. 3.1.2 and 3.1.3)
# ---------------------------------------------------------------------------------------------
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


def rpn_loss(logits, deltas, labels, bbox_targets, sigma=3.0):
    """The RPN's loss for one image (Eq. 1), normalised as in the released code.

    logits (1, 2A, H, W) and deltas (1, 4A, H, W) Tensors from `RPNHead`; labels (HWA,) and
    bbox_targets (HWA, 4) from `anchor_targets`. Over the S sampled anchors (label >= 0):
      L_cls = mean of the softmax log loss (so divided by S, the paper's N_cls = 256);
      L_reg = sum over positive anchors of smoothL1_sigma(t - t*) / S.
    `F.smooth_l1_loss` divides by the rows of its input, so it is given the S sampled rows with
    weight 1 on the positives' four columns and 0 on the negatives': that is the code's
    bbox_outside_weights = 1/S, with lambda = 1 (the paper's lambda = 10 with N_reg ~ 2400
    anchor locations weighs the two terms about the same). sigma = 3 makes the quadratic zone
    |x| < 1/9, as in the code. Returns (loss_cls, loss_reg) Tensors.
    """
    scores, offsets = flatten_outputs(logits, deltas)               # (HWA, 2), (HWA, 4)
    labels = np.asarray(backend.to_device(labels, 'cpu'), np.int64).reshape(-1)
    if labels.shape[0] != scores.shape[0]:
        raise ValueError(f'rpn_loss: {labels.shape[0]} labels for {scores.shape[0]} anchors')
    keep = np.flatnonzero(labels >= 0)
    if keep.size == 0:                     # nothing sampled (no anchor inside the image)
        zero = (scores.sum() + offsets.sum()) * 0.0
        return zero, zero
    device = scores.device
    on = lambda a: backend.to_device(a, device)  # noqa: E731
    kept = labels[keep]
    targets = np.asarray(backend.to_device(bbox_targets, 'cpu'), scores.dtype)[keep]
    weight = np.repeat((kept == 1)[:, None], 4, axis=1).astype(scores.dtype)   # (S, 4)
    loss_cls = F.cross_entropy(scores[on(keep)], on(kept))
    loss_reg = F.smooth_l1_loss(offsets[on(keep)], on(targets), on(weight), sigma=sigma)
    return loss_cls, loss_reg


# ---------------------------------------------------------------------------------------------
# Proposals (Sec. 3.3, "Implementation details")
# ---------------------------------------------------------------------------------------------
def proposal_layer(objectness, deltas, anchors, im_size, scale=1.0, pre_nms_top_n=6000,
                   post_nms_top_n=300, nms_thresh=0.7, min_size=16):
    """Turn the RPN's outputs for one image into proposals (the released code's ProposalLayer).

    objectness (N,) "object" probabilities and deltas (N, 4), one row per anchor (N, 4), all
    arrays. Each anchor is moved by its deltas and clipped to the im_size (H, W) input; boxes
    narrower or lower than min_size * scale pixels (min_size in original image pixels) are
    dropped; the pre_nms_top_n best (<= 0: all) go through NMS at nms_thresh, and the
    post_nms_top_n best survivors (<= 0: all) are the proposals.
    Returns boxes (P, 4) float32 in input pixels and their scores (P,), best first.
    """
    xp = backend.get_array_module(objectness, deltas)
    objectness = objectness.reshape(-1)
    if deltas.shape != (objectness.shape[0], 4) or tuple(anchors.shape) != deltas.shape:
        raise ValueError(f'proposal_layer expects objectness (N,), deltas (N, 4) and anchors '
                         f'(N, 4), got {objectness.shape}, {deltas.shape}, {tuple(anchors.shape)}')
    H, W = im_size
    boxes = bx.clip_boxes(bx.decode(xp.asarray(anchors, deltas.dtype), deltas), H, W)  # (N, 4)
    keep = bx.filter_small(boxes, min_size * scale)
    boxes, scores = boxes[keep], objectness[keep]
    order = xp.argsort(-scores, kind='stable')
    if pre_nms_top_n > 0:
        order = order[:pre_nms_top_n]
    boxes, scores = boxes[order], scores[order]
    keep = bx.nms(boxes, scores, nms_thresh, max_keep=post_nms_top_n if post_nms_top_n > 0 else None)
    if post_nms_top_n > 0:
        keep = keep[:post_nms_top_n]
    return boxes[keep].astype(np.float32), scores[keep]
