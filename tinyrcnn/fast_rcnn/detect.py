"""Detection: from an image and its proposals to scored, class-labelled boxes.

Fast R-CNN (Girshick, 2015, Sec. 3, "Fast R-CNN detection"): one forward pass over the image
and its R proposals gives, for every proposal r and class k, a probability p_k (softmax of
`cls_score`) and a refined box (the class-k offsets of `bbox_pred` applied to r). Per class,
boxes scoring above a threshold go through non-maximum suppression (as in R-CNN), and the best
`max_per_image` over all classes are kept.

Scale invariance (Sec. 2.4): "single-scale" resizes the image so its shorter side is 600;
"multi-scale" feeds an image pyramid and, as in SPPnet (He et al., 2014), pools each RoI at the
level where its scaled area is closest to 224 x 224 pixels.

Faster R-CNN (Ren et al., 2015, Sec. 3) is this detector with proposals from its own RPN, on
the same feature map: give no proposals, and a model with an `rpn` makes them.

    dets = detect(model, image, selective_search(image))   # Fast R-CNN: dict boxes, scores, labels
    dets = detect(faster_model, image)                      # Faster R-CNN: the RPN proposes
    result, dets, seconds = evaluate(model, dataset, proposals)    # VOC AP over a data set
"""
import time

import numpy as np

from .. import backend
from ..boxes import batched_nms, clip_boxes, decode
from ..data.image import check_image
from ..data.transforms import im_list_to_blob, image_pyramid, preprocess
from ..eval import evaluate_voc
from ..ops.roi_pool import round_half_away
from ..tensor import Tensor, no_grad
from ..utils import progress

# SPPnet's rule (Sec. 2.4): an RoI is pooled at the scale that makes it about 224 x 224, the
# size the ImageNet-pretrained network saw.
PYRAMID_TARGET_AREA = 224 * 224


def _check_proposals(proposals):
    proposals = backend.to_device(proposals, 'cpu')
    if proposals.shape in ((0,), (0, 4)):
        return np.zeros((0, 4), np.float32)  # an image without proposals
    if proposals.ndim != 2 or proposals.shape[1] != 4 or not np.issubdtype(proposals.dtype, np.number):
        raise ValueError(f'proposals must be a (P, 4) array of [x1, y1, x2, y2] boxes in image '
                         f'pixels, got shape {proposals.shape} and dtype {proposals.dtype}')
    if not np.isfinite(proposals).all():
        raise ValueError('proposals must be finite numbers')
    return proposals.astype(np.float32)


def _check_scales(scales, max_size):
    scales = (scales,) if np.isscalar(scales) else tuple(scales)
    if not scales or any(not s > 0 for s in scales) or not max_size > 0:
        raise ValueError(f'scales must be a non-empty sequence of positive sizes and max_size a '
                         f'positive size, got scales={scales!r}, max_size={max_size!r}')
    return scales


def pyramid_levels(proposals, factors):
    """SPPnet's level choice (Sec. 2.4; the original code's `_project_im_rois`): for each of the
    (P, 4) proposals, the index of the scale factor at which its area (+1 pixel widths) comes
    closest to 224 x 224. -> (P,) int64."""
    factors = np.asarray(factors, np.float64)
    w = proposals[:, 2].astype(np.float64) - proposals[:, 0] + 1
    h = proposals[:, 3].astype(np.float64) - proposals[:, 1] + 1
    scaled_areas = (w * h)[:, None] * factors[None, :] ** 2  # (P, S)
    return np.abs(scaled_areas - PYRAMID_TARGET_AREA).argmin(axis=1).astype(np.int64)


def _unique_rois(rois, spatial_scale, dtype):
    """Indices of the distinct RoIs and the inverse map (the original code's DEDUP_BOXES).

    Two RoIs that round to the same cells of the feature map (same level, same corners after
    RoI pooling's own rounding) pool the same features, so the head gives them the same output:
    it runs once per distinct RoI. The rounding is roi_pool's, in the model's float type, so
    this changes no number, only the work."""
    T = np.dtype(dtype).type
    cells = round_half_away(rois[:, 1:].astype(T) * T(spatial_scale)).astype(np.int64)  # (R, 4)
    key = np.concatenate([rois[:, :1].astype(np.int64), cells], axis=1)              # (R, 5)
    _, index, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    return index, inverse.reshape(-1)


def _softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def im_detect(model, image, proposals=None, scales=(600,), max_size=1000, source='torchvision',
              dedup=True):
    """Class probabilities and per-class boxes for every proposal of one image (Sec. 3).

    image (H, W, 3) uint8 RGB; proposals (P, 4) `[x1, y1, x2, y2]` in its pixels, or None for
    a Faster R-CNN model's own RPN proposals (test settings, one scale). One scale: the image is
    resized (shorter side `scale`, longer at most `max_size`) and the proposals multiplied by
    the same factor. Several scales (Sec. 2.4): the whole pyramid goes in one zero-padded batch
    and each RoI's batch index picks the level where it is closest to 224 x 224 pixels. Given
    proposals that pool the same cells are scored once (`dedup`; the original code's
    DEDUP_BOXES, also only without an RPN). The saved model predicts raw offsets, decoded
    against the proposals in original pixels, then clipped to the image.

    Returns scores (P, K+1) float32 softmax probabilities (column 0 background), boxes
    (P, 4(K+1)) float32 (column block k: the class-k box) and the proposals (P, 4) float32, all
    in original image pixels. Runs under no_grad in eval mode; the model's mode is restored.
    """
    image = check_image(image)
    scales = _check_scales(scales, max_size)
    use_rpn = proposals is None
    if use_rpn and getattr(model, 'rpn', None) is None:
        raise ValueError('this model has no RPN: give it proposals, e.g. selective_search(image)')
    if use_rpn and len(scales) != 1:
        raise ValueError(f'RPN proposals are made at one scale, got scales={scales}')
    H, W = image.shape[:2]
    K = int(model.num_classes)
    empty = (np.zeros((0, K + 1), np.float32), np.zeros((0, 4 * (K + 1)), np.float32),
             np.zeros((0, 4), np.float32))
    if not use_rpn:
        proposals = _check_proposals(proposals)   # (P, 4)
        if len(proposals) == 0:
            return empty

    pyramid = image_pyramid(image, scales, max_size)               # [(resized, factor)]
    factors = np.array([f for _, f in pyramid], np.float32)
    blob = im_list_to_blob([preprocess(im, source) for im, _ in pyramid])  # (S, 3, H', W')
    param = next(iter(model.parameters()), None)
    dtype = param.dtype if param is not None else np.float32
    device = param.device if param is not None else 'cpu'
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            feats = model.features(Tensor(backend.to_device(blob.astype(dtype), device)))
            if use_rpn:                                            # Faster R-CNN: the RPN proposes
                logits, deltas = model.rpn(feats)
                resized, factor = pyramid[0]
                boxes, _ = model.propose(logits.data, deltas.data, (*resized.shape[:2], factor))
                if len(boxes) == 0:
                    return empty
                rois = np.hstack([np.zeros((len(boxes), 1), np.float32), boxes])   # (P, 5)
                proposals = (boxes / np.float32(factor)).astype(np.float32)      # original pixels
                index = inverse = np.arange(len(boxes))
            else:
                P = len(proposals)
                levels = pyramid_levels(proposals, factors) if len(scales) > 1 else np.zeros(P, np.int64)
                rois = np.concatenate([levels[:, None].astype(np.float32),
                                       proposals * factors[levels, None]], axis=1)  # (P, 5)
                spatial_scale = getattr(getattr(model, 'roi_pool', None), 'spatial_scale', None)
                index, inverse = (_unique_rois(rois, spatial_scale, dtype) if dedup and spatial_scale
                                  else (np.arange(P), np.arange(P)))
            cls_score, bbox_pred = model.head(feats, backend.to_device(rois[index].astype(dtype), device))
    finally:
        model.train(was_training)
    logits = backend.to_device(cls_score.data, 'cpu')   # (R', K+1)
    deltas = backend.to_device(bbox_pred.data, 'cpu')   # (R', 4(K+1))
    if logits.shape != (len(index), K + 1) or deltas.shape != (len(index), 4 * (K + 1)):
        raise ValueError(f'the model must return cls_score ({len(index)}, {K + 1}) and bbox_pred '
                         f'({len(index)}, {4 * (K + 1)}) for num_classes={K}, got '
                         f'{logits.shape} and {deltas.shape}')
    scores = _softmax(logits.astype(np.float64))[inverse]                  # (P, K+1)
    boxes = decode(proposals, deltas.astype(np.float32)[inverse])          # (P, 4(K+1))
    return scores.astype(np.float32), clip_boxes(boxes, H, W).astype(np.float32), proposals


def _empty_detections():
    return dict(boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32),
                labels=np.zeros(0, np.int64))


def postprocess(scores, boxes, score_thresh=0.05, nms_thresh=0.3, max_per_image=100):
    """`im_detect`'s scores and boxes -> final detections, as py-faster-rcnn's test_net (the
    released Faster R-CNN code) makes them.

    For each class k >= 1: proposals with p_k > score_thresh, NMS at IoU nms_thresh among the
    class-k boxes; then the max_per_image highest scores over all classes (None: no cap).
    Returns dict boxes (D, 4) float32, scores (D,) float32, labels (D,) int64 in 1..K, by
    decreasing score.
    """
    if not 0 <= score_thresh <= 1 or not 0 <= nms_thresh <= 1:
        raise ValueError(f'score_thresh and nms_thresh must lie in [0, 1], got {score_thresh} '
                         f'and {nms_thresh}')
    if max_per_image is not None and (int(max_per_image) != max_per_image or max_per_image < 1):
        raise ValueError(f'max_per_image must be a positive integer or None, got {max_per_image!r}')
    P, K = scores.shape[0], scores.shape[1] - 1
    rows, cols = np.nonzero(scores[:, 1:] > score_thresh)       # candidates, (C,) each
    if rows.size == 0:
        return _empty_detections()
    labels = (cols + 1).astype(np.int64)                        # (C,)
    cand_boxes = boxes.reshape(P, K + 1, 4)[rows, labels]       # (C, 4)
    cand_scores = scores[rows, labels]                          # (C,)
    keep = batched_nms(cand_boxes, cand_scores, labels, nms_thresh)  # by decreasing score
    if max_per_image is not None:
        keep = keep[:int(max_per_image)]
    return dict(boxes=cand_boxes[keep].astype(np.float32), scores=cand_scores[keep].astype(np.float32),
                labels=labels[keep])


def detect(model, image, proposals=None, score_thresh=0.05, nms_thresh=0.3, max_per_image=100,
           scales=(600,), max_size=1000, source='torchvision'):
    """Detect objects in one image (Sec. 3): `im_detect`, then per-class thresholding and NMS.

    image (H, W, 3) uint8 RGB; proposals (P, 4) in its pixels (e.g. `selective_search(image)`),
    or None for the RPN of a Faster R-CNN model. Returns dict boxes (D, 4) float32 in image
    pixels, scores (D,) float32, labels (D,) int64 in 1..K (label k is class_names[k-1]), by
    decreasing score. P = 0 gives D = 0.
    """
    scores, boxes, _ = im_detect(model, image, proposals, scales, max_size, source)
    return postprocess(scores, boxes, score_thresh, nms_thresh, max_per_image)


def evaluate(model, dataset, proposals=None, class_names=None, scales=(600,), max_size=1000,
             source='torchvision', use_07_metric=True, limit=None, score_thresh=0.05,
             nms_thresh=0.3, max_per_image=100):
    """Detect on every image of `dataset` and score the result with VOC AP (Sec. 4).

    proposals: a dict image id -> (P, 4) boxes (e.g. from `compute_dataset_proposals`), a
    callable image -> (P, 4) (e.g. `selective_search`), or None for the model's RPN.
    limit: only the first `limit` images. seconds_per_image times `detect` alone, which leaves
    out the proposals given from outside, as the paper's test times do, and includes the RPN's.
    Returns (result of `evaluate_voc`, detections: one dict per image, seconds_per_image).
    """
    class_names = tuple(dataset.class_names if class_names is None else class_names)
    if len(class_names) != model.num_classes:
        raise ValueError(f'the model has {model.num_classes} classes but class_names has '
                         f'{len(class_names)}: {class_names}')
    if not (proposals is None or isinstance(proposals, dict) or callable(proposals)):
        raise ValueError(f'proposals must be a dict image id -> (P, 4) boxes, a callable '
                         f'image -> (P, 4) or None (RPN), got {type(proposals).__name__}')
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    detections, ground_truths, seconds = [], [], 0.0
    for i in progress(range(n), desc='detect'):
        item = dataset[i]
        boxes = None
        if isinstance(proposals, dict):
            if item['id'] not in proposals:
                raise ValueError(f'no proposals for image id {item["id"]!r} (the proposals dict '
                                 f'holds {len(proposals)} ids; see compute_dataset_proposals)')
            boxes = proposals[item['id']]
        elif proposals is not None:
            boxes = proposals(item['image'])
        start = time.perf_counter()
        detections.append(detect(model, item['image'], boxes, score_thresh, nms_thresh,
                                 max_per_image, scales, max_size, source))
        seconds += time.perf_counter() - start
        gt = dataset.annotation(i)
        ground_truths.append(dict(boxes=gt['boxes'], labels=gt['labels'], difficult=gt['difficult']))
    result = evaluate_voc(detections, ground_truths, class_names, use_07_metric=use_07_metric)
    return result, detections, seconds / max(n, 1)
