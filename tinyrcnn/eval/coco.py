"""COCO detection metrics for boxes: AP over IoU 0.50:0.95, AP50, AP75, AP by object size, AR.

Written from the COCO evaluation rules (Lin et al., 2014; pycocotools' COCOeval), for boxes
(COCOeval's iouType 'bbox'), and checked number for number against pycocotools on randomised
cases (tests/eval/test_coco.py).

Boxes. tinyrcnn boxes are 0-based inclusive pixels [x1, y1, x2, y2]; COCO's are [x, y, w, h]
with w = x2 - x1 + 1 and h = y2 - y1 + 1 (a COCO box [x, y, w, h] is [x, y, x + w - 1, y + h - 1]
here). The IoU is COCO's, computed on the [x, y, w, h] boxes: the same as tinyrcnn's +1-pixel IoU.

The rules, for each class separately:
  1. Ranking in an image: the detections of an image are sorted by decreasing score (a stable
     sort: equal scores keep their input order) and only the first 100 are kept. The limits on
     detections (1, 10, 100) count per image AND class, not per image.
  2. Ignored ground truth: for an area range [lo, hi] (both ends included) a ground truth is
     ignored when it is a crowd or its area lies outside the range. Crowd means 'iscrowd' when
     the ground-truth dict has it, else 'difficult': VOC's "don't care" boxes then behave as COCO
     crowd regions (ignored, matchable many times, IoU over the detection's area). The area is
     'areas' when given (the 'area' field of COCO annotations, a segmentation's area), else w * h.
     A detection's area is always w * h.
  3. Greedy matching, at each IoU threshold t of np.linspace(0.5, 0.95, 10) (0.9 is then
     0.8999999999999999, a hair below; arange would put others a hair above). In rank order, a
     detection takes the free ground truth with the highest IoU >= t (at least t, not above),
     looking at non-ignored ground truths first and at ignored ones only when no non-ignored one
     qualifies; on equal IoU the later ground truth wins (input order, non-ignored before
     ignored), so the order of the ground truths can matter. A ground truth is then taken,
     except a crowd, which absorbs any number of detections. The IoU with a crowd is
     intersection / detection area.
  4. Outcome: a detection matched to a non-ignored ground truth is a true positive; one matched to
     an ignored ground truth is ignored; an unmatched one is a false positive, or ignored when its
     own area lies outside the area range.
  5. Curves, per area range and per limit k in (1, 10, 100): the first k detections of every
     image are pooled and ranked by score (stable: ties in image order, then in rank order).
     Running counts give recall = TP / n (n: non-ignored ground truths, over all images) and
     precision = TP / (TP + FP + eps) (a perfect detector scores 1 - 2e-16, as in pycocotools);
     ignored detections stay in the list but count for neither.
     Precision is replaced by its envelope (the best precision at this or any later rank) and
     read at the 101 recall levels np.linspace(0, 1, 101): at the first rank whose recall is >= the
     level (searchsorted 'left'), 0 for levels never reached. The class's recall is the last one
     (0 without detections).
  6. Averages: AP is the mean of those 10 x 101 precisions over the classes that have at least
     one non-ignored ground truth in the range; AP50 and AP75 take one threshold; APs, APm, APl
     use the ranges small [0, 32^2], medium [32^2, 96^2], large [96^2, 1e5^2] (all is
     [0, 1e5^2]); AP uses 100 detections. AR1, AR10, AR100 average the recall over thresholds
     and classes with 1, 10, 100 detections (all sizes); ARs, ARm, ARl with 100.
  7. Undefined: a number is -1.0 when no class has a non-ignored ground truth in its range (APs
     on a set without small objects, everything on a set without ground truth), as COCO reports
     it, so that results compare with pycocotools; read -1 as "n/a", never average it. Per-class
     AP is NaN for a class without non-ignored ground truth (as in evaluate_voc).
"""
import math

import numpy as np

from .common import _check_inputs, _check_item

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)         # as pycocotools (not np.arange)
RECALL_LEVELS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)
AREA_RANGES = {'all': (0.0, 1e5 ** 2), 'small': (0.0, 32.0 ** 2),
               'medium': (32.0 ** 2, 96.0 ** 2), 'large': (96.0 ** 2, 1e5 ** 2)}
# name -> (AP or AR, IoU threshold index or None for all, area range, max detections)
SUMMARY = {'AP': ('AP', None, 'all', 100), 'AP50': ('AP', 0, 'all', 100), 'AP75': ('AP', 5, 'all', 100),
           'APs': ('AP', None, 'small', 100), 'APm': ('AP', None, 'medium', 100),
           'APl': ('AP', None, 'large', 100), 'AR1': ('AR', None, 'all', 1),
           'AR10': ('AR', None, 'all', 10), 'AR100': ('AR', None, 'all', 100),
           'ARs': ('AR', None, 'small', 100), 'ARm': ('AR', None, 'medium', 100),
           'ARl': ('AR', None, 'large', 100)}


def xywh(boxes):
    """0-based inclusive [x1, y1, x2, y2] (n, 4) -> COCO [x, y, w, h] (n, 4)."""
    return np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0] + 1,
                     boxes[:, 3] - boxes[:, 1] + 1], axis=1)


def coco_iou(dt, gt, crowd):
    """IoU (D, G) of COCO [x, y, w, h] boxes, computed as COCO does: a crowd ground truth's
    'union' is the detection's area (the share of the detection that lies in the crowd)."""
    w = (np.minimum(dt[:, None, 0] + dt[:, None, 2], gt[None, :, 0] + gt[None, :, 2])
         - np.maximum(dt[:, None, 0], gt[None, :, 0]))
    h = (np.minimum(dt[:, None, 1] + dt[:, None, 3], gt[None, :, 1] + gt[None, :, 3])
         - np.maximum(dt[:, None, 1], gt[None, :, 1]))
    overlap = (w > 0) & (h > 0)
    inter = w * h
    dt_area, gt_area = dt[:, 2] * dt[:, 3], gt[:, 2] * gt[:, 3]
    union = np.where(crowd[None, :], dt_area[:, None], dt_area[:, None] + gt_area[None, :] - inter)
    iou = np.zeros(inter.shape)
    np.divide(inter, union, out=iou, where=overlap)
    return iou


AREA_LO, AREA_HI = (np.array(v) for v in zip(*AREA_RANGES.values()))


def _outside(area):
    """(A, n): whether each area lies outside each range of AREA_RANGES (ends included)."""
    return (area[None, :] < AREA_LO[:, None]) | (area[None, :] > AREA_HI[:, None])


def _rank_in_class(labels):
    """The position of each entry among the entries with its label, in the given order."""
    by_label = np.argsort(labels, kind='stable')
    sorted_labels = labels[by_label]
    rank = np.empty(len(labels), np.int64)
    rank[by_label] = np.arange(len(labels)) - np.searchsorted(sorted_labels, sorted_labels)
    return rank


def _match(iou, gt_ignored, crowd):
    """Greedy COCO matching (rule 3) of the ranked detections of one image.

    iou (D, G), negative between a detection and a ground truth of another class; gt_ignored
    (A, G) per area range; crowd (G,). Returns matched (A, T, D) and on_ignored (A, T, D):
    whether each detection took a ground truth, and whether that one is ignored."""
    (A, G), D, T = gt_ignored.shape, iou.shape[0], len(IOU_THRESHOLDS)
    matched, on_ignored = np.zeros((A, T, D), bool), np.zeros((A, T, D), bool)
    if G == 0:
        return matched, on_ignored
    taken = np.zeros((A, T, G), bool)
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[None, :, None]   # (1, T, 1)
    regular = ~gt_ignored[:, None, :]                                   # (A, 1, G)
    for d in np.flatnonzero(iou.max(axis=1) >= thresholds.min()):       # others match nothing
        free = (~taken | crowd) & (iou[d] >= thresholds)                # (A, T, G)
        regular_free = free & regular
        has_regular = regular_free.any(axis=-1, keepdims=True)
        candidates = np.where(has_regular, regular_free, free & ~regular)
        a, t = np.nonzero(candidates.any(axis=-1))
        # the highest IoU, the last such ground truth on a tie: argmax over the reversed row
        best = np.where(candidates[a, t], iou[d], -1.0)
        g = G - 1 - np.argmax(best[:, ::-1], axis=-1)
        taken[a, t, g] = True
        matched[a, t, d] = True
        on_ignored[a, t, d] = gt_ignored[a, g]
    return matched, on_ignored


def _evaluate_image(dt, gt):
    """Rules 1-4 for one image, all classes in one pass: the IoU between different classes is
    set to -1, so a detection only ever meets the ground truth of its own class. Returns the
    kept detections' labels, scores, rank in their class, and their outcome matched / ignored
    (A, T, n), in decreasing score order (ties in input order)."""
    order = np.argsort(-dt['scores'], kind='stable')       # ranking within a class too
    rank = _rank_in_class(dt['labels'][order])
    order, rank = order[rank < MAX_DETS[-1]], rank[rank < MAX_DETS[-1]]
    labels, dt_box = dt['labels'][order], xywh(dt['boxes'][order])
    iou = coco_iou(dt_box, xywh(gt['boxes']), gt['crowd'])
    iou[labels[:, None] != gt['labels'][None, :]] = -1.0
    matched, on_ignored = _match(iou, gt['ignored'], gt['crowd'])
    unmatched_outside = ~matched & _outside(dt_box[:, 2] * dt_box[:, 3])[:, None, :]
    return labels, dt['scores'][order], rank, matched, on_ignored | unmatched_outside


def _end_to_end(images, i, empty):
    """Field i of every image's result, the images end to end (along the last axis)."""
    return np.concatenate([empty] + [image[i] for image in images], axis=-1)


def _curves(scores, rank, matched, ignored, n_pos):
    """Rule 5 for one class: precision (T, R, A, M) at the recall levels and recall (T, A, M);
    -1 for an area range without non-ignored ground truth."""
    T, R, A, M = len(IOU_THRESHOLDS), len(RECALL_LEVELS), len(n_pos), len(MAX_DETS)
    precision, recall = -np.ones((T, R, A, M)), -np.ones((T, A, M))
    for m, max_det in enumerate(MAX_DETS):
        keep = np.flatnonzero(rank < max_det)
        order = keep[np.argsort(-scores[keep], kind='stable')]
        counted = ~ignored[..., order]
        tp = np.cumsum(matched[..., order] & counted, axis=-1).astype(np.float64)    # (A, T, n)
        fp = np.cumsum(~matched[..., order] & counted, axis=-1).astype(np.float64)
        for a in np.flatnonzero(n_pos):
            if len(order) == 0:
                precision[:, :, a, m], recall[:, a, m] = 0.0, 0.0
                continue
            rc = tp[a] / n_pos[a]
            pr = tp[a] / (fp[a] + tp[a] + np.spacing(1))
            pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]                    # envelope
            recall[:, a, m] = rc[:, -1]
            for t in range(T):
                at = np.searchsorted(rc[t], RECALL_LEVELS, side='left')
                reached = at < len(order)
                precision[t, :, a, m] = np.where(reached, pr[t, np.minimum(at, len(order) - 1)], 0.0)
    return precision, recall


def _mean_defined(values):
    values = values[values > -1]
    return float(np.mean(values)) if values.size else -1.0


def evaluate_coco(detections, ground_truths, class_names):
    """COCO box AP and AR (the rules are in this module's docstring).

    detections: one dict per image with `boxes` (D, 4) [x1, y1, x2, y2] 0-based inclusive,
    `scores` (D,), `labels` (D,) in 1..K (label k is class_names[k-1]).
    ground_truths: one dict per image, same order, with `boxes` (G, 4), `labels` (G,), and
    optionally `iscrowd` (G,) bool, `difficult` (G,) bool (crowds when `iscrowd` is absent) and
    `areas` (G,) float (the area for the size ranges; w * h when absent).
    Returns {'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10', 'AR100', 'ARs', 'ARm',
    'ARl': float fractions, -1.0 where undefined; 'per_class': {name: AP@[.50:.95], NaN without
    ground truth}; 'precision': (T=10, R=101, K, A=4, M=3) and 'recall': (T, K, A, M), COCOeval's
    arrays (areas all/small/medium/large, max detections 1/10/100, -1 where undefined)}.
    """
    _check_inputs(detections, ground_truths, class_names)
    K = len(class_names)
    dets = [_check_item(d, f'detections[{i}]', K, ('scores',)) for i, d in enumerate(detections)]
    gts = [_check_item(g, f'ground_truths[{i}]', K, ('difficult',), optional=('iscrowd', 'areas'))
           for i, g in enumerate(ground_truths)]
    T, R, A, M = len(IOU_THRESHOLDS), len(RECALL_LEVELS), len(AREA_RANGES), len(MAX_DETS)

    n_pos = np.zeros((K, A), np.int64)           # non-ignored ground truths per class and range
    images = []
    for dt, gt in zip(dets, gts):
        gt['crowd'] = (gt['iscrowd'] if 'iscrowd' in gt else gt['difficult']).astype(bool)
        if 'areas' not in gt:
            box = xywh(gt['boxes'])
            gt['areas'] = box[:, 2] * box[:, 3]
        gt['ignored'] = gt['crowd'][None, :] | _outside(gt['areas'])                     # (A, G)
        np.add.at(n_pos, gt['labels'] - 1, (~gt['ignored']).T)
        images.append(_evaluate_image(dt, gt))
    # all images' detections end to end, in image order, then score order within an image
    labels = _end_to_end(images, 0, np.zeros(0, np.int64))
    scores = _end_to_end(images, 1, np.zeros(0))
    rank = _end_to_end(images, 2, np.zeros(0, np.int64))
    matched = _end_to_end(images, 3, np.zeros((A, T, 0), bool))
    ignored = _end_to_end(images, 4, np.zeros((A, T, 0), bool))

    precision, recall = -np.ones((T, R, K, A, M)), -np.ones((T, K, A, M))
    for k in np.flatnonzero(n_pos.any(axis=1)):
        mine = labels == k + 1
        precision[:, :, k], recall[:, k] = _curves(scores[mine], rank[mine], matched[..., mine],
                                                   ignored[..., mine], n_pos[k])

    result = {}
    areas, limits = list(AREA_RANGES), list(MAX_DETS)
    for name, (kind, t, area, max_det) in SUMMARY.items():
        a, m = areas.index(area), limits.index(max_det)
        values = precision[..., a, m] if kind == 'AP' else recall[..., a, m]    # (T, [R,] K)
        result[name] = _mean_defined(values if t is None else values[t:t + 1])
    result['per_class'] = {}
    for k, name in enumerate(class_names):
        ap = _mean_defined(precision[:, :, k, 0, -1])
        result['per_class'][name] = math.nan if ap == -1.0 else ap
    result['precision'], result['recall'] = precision, recall
    return result


def format_coco_table(result, per_class=False):
    """The twelve summary numbers of an `evaluate_coco` result as plain text (the layout of
    COCOeval.summarize, one line each), and with per_class=True the AP of each class."""
    lines = []
    for name, (kind, t, area, max_det) in SUMMARY.items():
        iou = '0.50:0.95' if t is None else f'{IOU_THRESHOLDS[t]:.2f}'
        value = result[name]
        shown = f'{value:.3f}' if value != -1.0 else '  n/a (no ground truth in range)'
        title = 'Average precision' if kind == 'AP' else 'Average recall'
        lines.append(f'{title:<17} ({kind}) {name:<6} IoU {iou:<9}  area {area:>6}  '
                     f'maxDets {max_det:>3}  = {shown}')
    if per_class:
        names = list(result['per_class'])
        width = max([len(n) for n in names] + [5])
        lines += ['', f'{"class":<{width}}  AP@[.50:.95]', '-' * (width + 14)]
        for name in names:
            ap = result['per_class'][name]
            lines.append(f'{name:<{width}}  ' + ('n/a (no ground truth)' if math.isnan(ap) else f'{ap:.4f}'))
    return '\n'.join(lines)
