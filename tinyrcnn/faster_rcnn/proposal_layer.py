"""The proposal layer: the RPN's outputs for one image become a few hundred proposals
(Faster R-CNN, Ren et al., 2015, Sec. 3.3 "Implementation Details", and the released code's
ProposalLayer): move every anchor by its predicted offsets, clip to the image, drop tiny boxes,
keep the best-scoring, suppress overlaps at IoU 0.7, keep the best again.
"""
import numpy as np

from .. import backend
from .. import boxes as bx


def proposal_layer(objectness, deltas, anchors, im_size, scale=1.0, pre_nms_top_n=6000,
                   post_nms_top_n=300, nms_thresh=0.7, min_size=16, to_host=False):
    """Turn the RPN's outputs for one image into proposals (the released code's ProposalLayer).

    objectness (N,) "object" probabilities and deltas (N, 4), one row per anchor (N, 4), all
    arrays. Each anchor is moved by its deltas and clipped to the im_size (H, W) input; boxes
    narrower or lower than min_size * scale pixels (min_size in original image pixels) are
    dropped; the pre_nms_top_n best (<= 0: all) go through NMS at nms_thresh, and the
    post_nms_top_n best survivors (<= 0: all) are the proposals.
    Returns boxes (P, 4) float32 in input pixels and their scores (P,), best first, as arrays
    of the inputs' module, or as NumPy arrays with to_host=True (one copy from the GPU).
    """
    xp = backend.get_array_module(objectness, deltas)
    objectness = objectness.reshape(-1)
    if deltas.shape != (objectness.shape[0], 4) or tuple(anchors.shape) != deltas.shape:
        raise ValueError(f'proposal_layer expects objectness (N,), deltas (N, 4) and anchors '
                         f'(N, 4), got {objectness.shape}, {deltas.shape}, {tuple(anchors.shape)}')
    H, W = im_size
    boxes = bx.clip_boxes(bx.decode(xp.asarray(anchors, deltas.dtype), deltas), H, W)  # (N, 4)
    # Tiny boxes (boxes.filter_small's rule) are not cut out, as a cut waits for its count on a
    # GPU, but ranked last with score -inf: greedy NMS meets them after every real box, so they
    # suppress none of those, and they are dropped from its result at the end.
    w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    big = (w >= min_size * scale) & (h >= min_size * scale)
    ranked = xp.where(big, objectness, -xp.inf).astype(objectness.dtype, copy=False)
    order = xp.argsort(-ranked, kind='stable')     # boxes.nms keeps this order (ties included)
    if pre_nms_top_n > 0:
        order = order[:pre_nms_top_n]
    boxes, ranked = boxes[order], ranked[order]
    keep = bx.nms(boxes, ranked, nms_thresh, max_keep=post_nms_top_n if post_nms_top_n > 0 else None,
                  presorted=True)
    boxes, ranked = boxes[keep].astype(np.float32), ranked[keep]
    if to_host:                                   # boxes and scores in one copy from the GPU
        both = backend.to_device(xp.concatenate([boxes, ranked[:, None]], axis=1), 'cpu')
        boxes, ranked = both[:, :4].astype(np.float32), both[:, 4].astype(ranked.dtype)
    real = ranked != -np.inf                                    # the tiny boxes go
    return boxes[real], ranked[real]
