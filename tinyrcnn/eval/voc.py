"""PASCAL VOC detection evaluation: average precision per class and mAP (Everingham et al., 2010).

The rules are those of the VOC devkit as py-faster-rcnn's `voc_eval.py` writes them (the
released Faster R-CNN code; Fast R-CNN's own code called the MATLAB devkit, whose VOCevaldet
matches at IoU >= 0.5 where voc_eval.py, and tinyrcnn, take > 0.5: they differ only for an IoU
of exactly 0.5):
  * the detections of a class are ranked by decreasing score over all images (a stable sort, so
    equal scores keep image order, then their order within the image);
  * each detection takes the ground truth of its image and class with the highest IoU (+1 pixel
    widths, as everywhere in tinyrcnn); it is a true positive when that IoU is strictly above the
    threshold and the ground truth is not yet taken; a second hit on a taken ground truth is a
    false positive (duplicate detection), and so is a detection with IoU <= threshold;
  * `difficult` ground truths are neither hits nor misses: they do not count in npos, and a
    detection whose best match is difficult is ignored (neither true nor false positive);
  * AP is the VOC2007 11-point interpolated AP (mean over t in 0, 0.1, ..., 1 of the highest
    precision at recall >= t), or, with use_07_metric=False, the VOC2010+ area under the
    monotone (right-to-left maximum) precision envelope.
A class with no non-difficult ground truth has no recall, so its AP is NaN (the devkit divides
by zero there) and `map` is the mean over the classes that have ground truth.
"""
import math

import numpy as np

from ..boxes import box_iou
from .common import _check_inputs, _check_item


def voc_ap(recall, precision, use_07_metric=True):
    """AP from a class's recall/precision curve (points in rank order), as the devkit computes it."""
    if use_07_metric:
        ap = 0.0
        # np.arange as in Fast R-CNN's voc_eval, not i / 10: the thresholds 0.3, 0.6, 0.7 come out a
        # hair above the decimal (0.30000000000000004), so a recall of exactly 3/10 misses t = 0.3.
        for t in np.arange(0.0, 1.1, 0.1):
            p = precision[recall >= t].max() if np.any(recall >= t) else 0.0
            ap += p / 11.0
        return float(ap)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope: best at any higher recall
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])  # where recall changes
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _class_curve(dets, gts, k, iou_threshold):
    """Precision and recall of class k over the ranked detections, and npos."""
    gt_boxes = [g['boxes'][g['labels'] == k] for g in gts]
    gt_difficult = [g['difficult'][g['labels'] == k].astype(bool) for g in gts]
    taken = [np.zeros(len(b), dtype=bool) for b in gt_boxes]
    npos = int(sum((~d).sum() for d in gt_difficult))

    image = np.concatenate([np.zeros(0, np.int64)] +
                           [np.full(int((d['labels'] == k).sum()), i) for i, d in enumerate(dets)])
    scores = np.concatenate([np.zeros(0)] + [d['scores'][d['labels'] == k] for d in dets])
    boxes = np.concatenate([np.zeros((0, 4))] + [d['boxes'][d['labels'] == k] for d in dets])  # (D, 4)
    order = np.argsort(-scores, kind='stable')

    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for rank, d in enumerate(order):
        i = image[d]
        best = -np.inf
        if len(gt_boxes[i]):
            iou = box_iou(boxes[d:d + 1], gt_boxes[i])[0]  # difficult ones included, as the devkit
            j = int(np.argmax(iou))
            best = iou[j]
        if best > iou_threshold:
            if gt_difficult[i][j]:
                continue  # neither a hit nor a miss
            if taken[i][j]:
                fp[rank] = 1  # duplicate detection
            else:
                tp[rank], taken[i][j] = 1, True
        else:
            fp[rank] = 1
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / npos if npos else np.full(len(tp), np.nan)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)  # 0 while only difficult hits
    return precision, recall, npos


def evaluate_voc(detections, ground_truths, class_names, iou_threshold=0.5, use_07_metric=True):
    """VOC average precision per class and mAP.

    detections: one dict per image with `boxes` (D, 4) [x1, y1, x2, y2] 0-based inclusive,
    `scores` (D,), `labels` (D,) in 1..K (label k is class_names[k-1]).
    ground_truths: one dict per image, same order, with `boxes` (G, 4), `labels` (G,) and
    `difficult` (G,) bool (all False when left out).
    Returns {'ap': {name: AP}, 'map': mean AP over classes with ground truth,
             'precision': {name: (D_c,)}, 'recall': {name: (D_c,)}, 'npos': {name: int}}.
    """
    _check_inputs(detections, ground_truths, class_names)
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f'iou_threshold must lie in [0, 1], got {iou_threshold}')
    K = len(class_names)
    dets = [_check_item(d, f'detections[{i}]', K, ('scores',)) for i, d in enumerate(detections)]
    gts = [_check_item(g, f'ground_truths[{i}]', K, ('difficult',)) for i, g in enumerate(ground_truths)]

    result = {'ap': {}, 'precision': {}, 'recall': {}, 'npos': {}}
    for k, name in enumerate(class_names, start=1):
        precision, recall, npos = _class_curve(dets, gts, k, iou_threshold)
        result['ap'][name] = voc_ap(recall, precision, use_07_metric) if npos else math.nan
        result['precision'][name], result['recall'][name], result['npos'][name] = precision, recall, npos
    aps = [ap for ap in result['ap'].values() if not math.isnan(ap)]
    result['map'] = float(np.mean(aps)) if aps else math.nan
    result['use_07_metric'], result['iou_threshold'] = use_07_metric, iou_threshold
    return result


def format_ap_table(result):
    """A plain-text table of per-class AP and the mAP of an `evaluate_voc` result."""
    names = list(result['ap'])
    width = max([len(n) for n in names] + [5])
    lines = [f'{"class":<{width}}  AP', '-' * (width + 8)]
    for name in names:
        ap = result['ap'][name]
        lines.append(f'{name:<{width}}  ' + ('n/a (no ground truth)' if math.isnan(ap) else f'{ap:.4f}'))
    metric = 'VOC07 11-point' if result.get('use_07_metric', True) else 'area'
    lines += ['-' * (width + 8),
              f'{"mAP":<{width}}  {result["map"]:.4f}  ({metric}, IoU > {result.get("iou_threshold", 0.5)})']
    return '\n'.join(lines)
