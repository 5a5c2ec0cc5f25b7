"""Boxes: IoU, the R-CNN box parametrisation, clipping and non-maximum suppression.

Boxes are rows `[x1, y1, x2, y2]` in 0-based INCLUSIVE pixels, the convention of the original
Fast R-CNN code (Girshick, 2015): a box covering pixels 0..9 has x1 = 0, x2 = 9 and width
x2 - x1 + 1 = 10. Every function works on NumPy or CuPy arrays (`xp = get_array_module(...)`);
only `nms` splits into a NumPy reference and a CUDA kernel (`kernels/nms.cu`).
"""
import math

import numpy as np

from .backend import fast_cpu, get_array_module, is_cupy_array, kernel, launch

# Fast R-CNN, Sec. 2.3 / 3.1: regression targets are normalised to zero mean and unit variance.
# These fixed statistics are the ones the released code uses for Faster R-CNN.
BBOX_NORMALIZE_MEANS = (0.0, 0.0, 0.0, 0.0)
BBOX_NORMALIZE_STDS = (0.1, 0.1, 0.2, 0.2)

# Largest log-scale a decoded box may grow by (a 1000-pixel box from a 16-pixel one): keeps exp()
# finite for wild early-training deltas.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def _check_boxes(boxes, name='boxes', multiple=False):
    if boxes.ndim != 2 or boxes.shape[1] == 0 or boxes.shape[1] % 4 or (not multiple and boxes.shape[1] != 4):
        want = '(R, 4K)' if multiple else '(R, 4)'
        raise ValueError(f'{name} must have shape {want} with rows [x1, y1, x2, y2], got {boxes.shape}')


def box_area(boxes):
    """Areas of (R, 4) boxes with inclusive pixels: (x2 - x1 + 1) * (y2 - y1 + 1)."""
    _check_boxes(boxes)
    return (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)  # (R,)


def box_iou(a, b):
    """(A, 4) x (B, 4) boxes -> (A, B) intersection over union, +1 inclusive widths.

    The operation order is the one `nms` and `kernels/nms.cu` use, so all three agree bit for bit.
    A box with zero union (degenerate) gives NaN, which compares as "no overlap".
    """
    _check_boxes(a, 'a')
    _check_boxes(b, 'b')
    xp = get_array_module(a, b)
    area_a, area_b = box_area(a), box_area(b)
    xx1 = xp.maximum(a[:, None, 0], b[None, :, 0])  # (A, B)
    yy1 = xp.maximum(a[:, None, 1], b[None, :, 1])
    xx2 = xp.minimum(a[:, None, 2], b[None, :, 2])
    yy2 = xp.minimum(a[:, None, 3], b[None, :, 3])
    inter = xp.maximum(xx2 - xx1 + 1, 0) * xp.maximum(yy2 - yy1 + 1, 0)
    with np.errstate(invalid='ignore', divide='ignore'):
        return inter / (area_a[:, None] + area_b[None, :] - inter)


# ---------------------------------------------------------------------------------------------
# The R-CNN box parametrisation (R-CNN, Appendix C; Fast R-CNN, Sec. 2.3, Eq. 3)
# ---------------------------------------------------------------------------------------------
def _centres(boxes):
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


def encode(boxes, gt_boxes):
    """Regression targets taking proposals P (R, 4) to ground truth G (R, 4): (R, 4) rows
    [tx, ty, tw, th] = [(gx - px) / pw, (gy - py) / ph, log(gw / pw), log(gh / ph)]."""
    _check_boxes(boxes)
    _check_boxes(gt_boxes, 'gt_boxes')
    if boxes.shape[0] != gt_boxes.shape[0]:
        raise ValueError(f'encode needs one ground-truth box per box: got {boxes.shape[0]} boxes '
                         f'and {gt_boxes.shape[0]} gt_boxes')
    xp = get_array_module(boxes, gt_boxes)
    px, py, pw, ph = _centres(boxes)
    gx, gy, gw, gh = _centres(gt_boxes)
    return xp.stack([(gx - px) / pw, (gy - py) / ph, xp.log(gw / pw), xp.log(gh / ph)], axis=1)


def decode(boxes, deltas):
    """Apply (R, 4K) deltas (K = 1, or one set per class) to (R, 4) boxes -> (R, 4K) boxes.

    x2 = cx + 0.5 w - 1 (and y2 alike) makes decode the exact inverse of `encode` with +1 widths,
    as in the original code's Detectron-era release. tw, th are clamped at log(1000/16) first.
    """
    _check_boxes(boxes)
    _check_boxes(deltas, 'deltas', multiple=True)
    if boxes.shape[0] != deltas.shape[0]:
        raise ValueError(f'decode needs one row of deltas per box: got {boxes.shape[0]} boxes '
                         f'and deltas of shape {deltas.shape}')
    xp = get_array_module(boxes, deltas)
    px, py, pw, ph = (v[:, None] for v in _centres(boxes))  # (R, 1) each
    dx, dy = deltas[:, 0::4], deltas[:, 1::4]  # (R, K)
    dw = xp.minimum(deltas[:, 2::4], BBOX_XFORM_CLIP)
    dh = xp.minimum(deltas[:, 3::4], BBOX_XFORM_CLIP)
    cx, cy = dx * pw + px, dy * ph + py
    w, h = xp.exp(dw) * pw, xp.exp(dh) * ph
    out = xp.empty(deltas.shape, dtype=xp.result_type(boxes.dtype, deltas.dtype))  # (R, 4K)
    out[:, 0::4] = cx - 0.5 * w
    out[:, 1::4] = cy - 0.5 * h
    out[:, 2::4] = cx + 0.5 * w - 1
    out[:, 3::4] = cy + 0.5 * h - 1
    return out


def _check_stats(targets, means, stds):
    xp = get_array_module(targets)
    _check_boxes(targets, 'targets', multiple=True)
    K = targets.shape[1] // 4
    means, stds = xp.asarray(means, dtype=targets.dtype), xp.asarray(stds, dtype=targets.dtype)
    for name, v in (('means', means), ('stds', stds)):
        if v.shape not in ((4,), (K, 4)):
            raise ValueError(f'{name} must have shape (4,) or (K, 4) = ({K}, 4) to match targets of '
                             f'shape {targets.shape}, got {v.shape}')
    return targets.reshape(targets.shape[0], K, 4), means, stds  # (R, K, 4)


def normalize_targets(targets, means=BBOX_NORMALIZE_MEANS, stds=BBOX_NORMALIZE_STDS):
    """(targets - means) / stds for (R, 4K) targets; means/stds are (4,) or per class (K, 4)."""
    t, means, stds = _check_stats(targets, means, stds)
    return ((t - means) / stds).reshape(targets.shape)


def unnormalize_targets(targets, means=BBOX_NORMALIZE_MEANS, stds=BBOX_NORMALIZE_STDS):
    """Inverse of `normalize_targets`: what the regressor's outputs mean in `encode` units."""
    t, means, stds = _check_stats(targets, means, stds)
    return (t * stds + means).reshape(targets.shape)


def compute_target_stats(targets):
    """Mean and standard deviation (population, as Fast R-CNN) of (R, 4) targets -> (4,), (4,).

    A constant column (std 0) gets std 1, so normalising it only removes its mean."""
    _check_boxes(targets, 'targets')
    if targets.shape[0] == 0:
        raise ValueError('compute_target_stats needs at least one row of targets, got none')
    xp = get_array_module(targets)
    means, stds = targets.mean(axis=0), targets.std(axis=0)
    return means, xp.where(stds > 0, stds, xp.ones_like(stds))


def clip_boxes(boxes, height, width):
    """Clip (R, 4K) boxes to an image of height x width: x to [0, W-1], y to [0, H-1]."""
    _check_boxes(boxes, multiple=True)
    xp = get_array_module(boxes)
    out = boxes.copy()
    out[:, 0::2] = xp.clip(boxes[:, 0::2], 0, width - 1)   # x1, x2 of every class
    out[:, 1::2] = xp.clip(boxes[:, 1::2], 0, height - 1)  # y1, y2
    return out


def filter_small(boxes, min_size):
    """int64 indices of the (R, 4) boxes whose width and height are both >= min_size pixels."""
    _check_boxes(boxes)
    xp = get_array_module(boxes)
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    return xp.flatnonzero((w >= min_size) & (h >= min_size)).astype(xp.int64)


# ---------------------------------------------------------------------------------------------
# Non-maximum suppression
# ---------------------------------------------------------------------------------------------
def _check_nms(boxes, scores, iou_threshold):
    _check_boxes(boxes)
    if scores.ndim != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f'scores must have shape (R,) = ({boxes.shape[0]},) to match boxes, '
                         f'got {scores.shape}')
    if not 0 <= float(iou_threshold) <= 1:
        raise ValueError(f'iou_threshold must lie in [0, 1], got {iou_threshold}')
    if boxes.dtype not in (np.float32, np.float64):
        boxes = boxes.astype(np.float64)
    return boxes


def nms(boxes, scores, iou_threshold, max_keep=None, presorted=False):
    """Greedy non-maximum suppression (R-CNN, Sec. 2.1): visit boxes by decreasing score and
    drop every box whose IoU with an already kept box is strictly above `iou_threshold`.

    boxes (R, 4), scores (R,) -> int64 indices of the kept boxes, highest score first; equal scores
    are visited lower index first (a stable sort of -scores). CuPy arrays run `kernels/nms.cu`,
    which returns exactly the NumPy answer. `max_keep`: stop once that many are kept (the same
    first indices; the RPN keeps only its top N after NMS, so it need not visit the rest).
    `presorted=True`: the boxes already come by decreasing score (ties in the order wanted), so
    the sort is skipped; on a GPU a sort waits for the device, and the proposal layer has just
    sorted them.
    """
    boxes = _check_nms(boxes, scores, iou_threshold)
    if max_keep is not None and int(max_keep) < 0:
        raise ValueError(f'max_keep must be None or >= 0, got {max_keep}')
    if is_cupy_array(boxes):
        dtype = boxes.dtype
        return nms_bitmask(boxes, scores, iou_threshold,
                           lambda name, n, args: launch(kernel('nms.cu', name, dtype), n, args, dtype),
                           max_keep, presorted)
    thresh = boxes.dtype.type(iou_threshold)  # compare in the boxes' dtype, like the kernel
    fast = fast_cpu('nms', boxes)                            # the CPU speed hook
    kept = None if fast is None else fast(boxes, scores, thresh, max_keep, presorted)
    if kept is not None:                                     # (None: it could not be built)
        return kept
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.arange(len(scores)) if presorted else np.argsort(-scores, kind='stable')
    keep = []
    while order.size and (max_keep is None or len(keep) < max_keep):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1, 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1, 0)
        inter = w * h
        with np.errstate(invalid='ignore', divide='ignore'):
            iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(iou > thresh)]  # not `iou <= thresh`: a NaN IoU suppresses nothing
    return np.array(keep, dtype=np.int64)


# nms_reduce runs as ONE block whose threads share the OR-ing of each kept box's mask row:
# backend.launch over this many items makes exactly one of its 256-thread blocks.
NMS_THREADS = 256


def nms_bitmask(boxes, scores, iou_threshold, run, max_keep=None, presorted=False):
    """NMS through the two kernels of `kernels/nms.cu` (after the GPU NMS of Faster R-CNN).

    `run(name, n, args)` executes kernel `name` over n work items: a CuPy launch on the GPU, or
    `kernels.cpu.call` in the tests, so this glue is the same code on both. Sorting happens here;
    nms_mask computes, for every box i and block of 64 later boxes, the bits of the boxes that i
    suppresses; nms_reduce makes the sequential pass that greedy NMS needs, on one block of
    threads, stopping after `max_keep` boxes, and writes the kept positions in score order.
    Reading their count back is the one device-to-host transfer.
    """
    boxes = _check_nms(boxes, scores, iou_threshold)
    xp = get_array_module(boxes)
    N = boxes.shape[0]
    max_keep = N if max_keep is None else min(int(max_keep), N)
    if N == 0 or max_keep == 0:
        return xp.zeros(0, dtype=xp.int64)
    order = None if presorted else xp.argsort(-scores, kind='stable')
    sorted_boxes = xp.ascontiguousarray(boxes if presorted else boxes[order])  # (N, 4)
    col_blocks = (N + 63) // 64
    mask = xp.empty((N, col_blocks), dtype=xp.uint64)
    run('nms_mask', N * col_blocks, (sorted_boxes, N, float(iou_threshold), mask))
    removed = xp.empty(col_blocks, dtype=xp.uint64)            # scratch, zeroed by the kernel
    keep = xp.empty(N, dtype=xp.int64)                         # positions in `order`
    num_kept = xp.empty(1, dtype=xp.int64)                     # written by the kernel
    run('nms_reduce', NMS_THREADS, (mask, N, max_keep, removed, keep, num_kept))
    keep = keep[:int(num_kept[0])]
    return keep if presorted else order[keep].astype(xp.int64, copy=False)


def batched_nms(boxes, scores, labels, iou_threshold):
    """NMS within each class separately (Fast R-CNN, Sec. 4: per-class NMS at test time).

    A loop over the classes present, rather than the coordinate-offset trick: shifting float32
    boxes by large offsets changes their IoUs in the last bits, the loop keeps `nms`'s exact
    arithmetic. Returns int64 indices into `boxes`, by decreasing score (ties: lower index first).
    """
    _check_boxes(boxes)
    xp = get_array_module(boxes, scores, labels)
    if labels.shape != (boxes.shape[0],) or scores.shape != (boxes.shape[0],):
        raise ValueError(f'scores and labels must have shape (R,) = ({boxes.shape[0]},), got '
                         f'{scores.shape} and {labels.shape}')
    kept = [xp.zeros(0, dtype=xp.int64)]
    for c in xp.unique(labels).tolist():
        members = xp.flatnonzero(labels == c)  # indices of class c, increasing
        kept.append(members[nms(boxes[members], scores[members], iou_threshold)])
    keep = xp.sort(xp.concatenate(kept))
    return keep[xp.argsort(-scores[keep], kind='stable')].astype(xp.int64)


def random_clustered_boxes(n, num_objects=50, height=600, width=1000, seed=0):
    """n float32 boxes jittered around `num_objects` objects, like the proposals of one image,
    with random scores: the workload of `python -m tinyrcnn bench` and the tests."""
    rng = np.random.default_rng(seed)
    cx, cy = rng.uniform(0, width, num_objects), rng.uniform(0, height, num_objects)
    w, h = rng.uniform(30, 300, num_objects), rng.uniform(30, 300, num_objects)
    k = rng.integers(0, num_objects, n)
    bx = cx[k] + rng.normal(0, 0.15, n) * w[k]
    by = cy[k] + rng.normal(0, 0.15, n) * h[k]
    bw = w[k] * np.exp(rng.normal(0, 0.2, n))
    bh = h[k] * np.exp(rng.normal(0, 0.2, n))
    boxes = np.stack([bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2], axis=1)
    boxes = clip_boxes(boxes, height, width).astype(np.float32)
    return boxes, rng.random(n).astype(np.float32)


def random_rois(R, N, image_h, image_w, seed=0, min_size=16):
    """R proposal-like RoIs (R, 5) float32 spread over N images of image_h x image_w pixels."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(min_size, image_w, R)
    h = rng.uniform(min_size, image_h, R)
    x1 = rng.uniform(0, image_w - w)
    y1 = rng.uniform(0, image_h - h)
    batch = rng.integers(0, N, R)
    return np.stack([batch, x1, y1, x1 + w - 1, y1 + h - 1], axis=1).astype(np.float32)
