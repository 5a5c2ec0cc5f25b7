"""Hierarchical mini-batches for Fast R-CNN training (Girshick, 2015, Sec. 2.3).

R-CNN and SPPnet build a mini-batch from 128 RoIs of 128 different images; Fast R-CNN samples
N = 2 images and R/N = 64 RoIs from each, so the conv layers run on two images and their
computation is shared by the RoIs of an image: about 64x less work per step ("Mini-batch
sampling"). From each image, 25% of the RoIs are foreground (IoU >= 0.5 with a ground-truth
box, labelled with its class) and the rest background (max IoU in [0.1, 0.5), label 0); images
are flipped with probability 0.5. Regression targets are normalised to zero mean and unit
variance over the training set ("Multi-task loss").

    roidb = prepare_roidb(dataset, proposals, cfg)           # candidates and their best gt, once
    images, rois, labels, bbox_targets, bbox_weights = make_minibatch(dataset, roidb, [i, j], ...)

`cfg` is any object with the sampling settings of `tinyrcnn.train.TrainConfig`.
"""
import numpy as np

from .. import boxes as bx
from ..data.transforms import hflip, im_list_to_blob, preprocess, rescale


def prepare_roidb(dataset, proposals, cfg):
    """For each image: candidate RoIs (ground truth + proposals), each with its best-matching
    ground-truth box, that IoU, and the label. Difficult objects are left out, as in the
    original code, and so are images with no RoI to sample. An image with no object at all is a
    negative: every RoI of it is background (`bg_lo` 0: the [0.1, 0.5) rule of Sec. 2.3 picks
    background near objects, and there are none). Returns a list of dicts."""
    roidb = []
    for i in range(len(dataset)):
        gt = dataset.annotation(i)
        keep = ~np.asarray(gt['difficult'], bool)
        gt_boxes = np.asarray(gt['boxes'], np.float32)[keep]             # (G, 4)
        gt_labels = np.asarray(gt['labels'], np.int64)[keep]             # (G,)
        props = proposals[gt['id']] if isinstance(proposals, dict) else proposals(i)
        props = np.asarray(props, np.float32).reshape(-1, 4)
        rois = np.concatenate([gt_boxes, props]) if cfg.use_gt_as_rois else props
        if len(gt_boxes) and len(rois):
            iou = bx.box_iou(rois, gt_boxes)                             # (P, G)
            assignment, max_iou = iou.argmax(axis=1), iou.max(axis=1)
        else:
            assignment = np.zeros(len(rois), np.int64)
            max_iou = np.zeros(len(rois), np.float32)
        bg_lo = 0.0 if len(gt['boxes']) == 0 else cfg.bg_thresh_lo
        usable = (max_iou >= cfg.fg_thresh).any() or (
            (max_iou < cfg.bg_thresh_hi) & (max_iou >= bg_lo)).any()
        if not usable:    # nothing to sample (e.g. only difficult objects): skip, as the original
            continue      # code's filter_roidb does
        roidb.append({'index': i, 'id': gt['id'], 'rois': rois, 'gt_boxes': gt_boxes,
                      'gt_labels': gt_labels, 'assignment': assignment, 'max_iou': max_iou,
                      'bg_lo': bg_lo})
    if not roidb:
        raise ValueError('no training image has a usable RoI (foreground IoU >= '
                         f'{cfg.fg_thresh} or background IoU in [{cfg.bg_thresh_lo}, {cfg.bg_thresh_hi}))')
    return roidb


def target_stats(roidb, cfg):
    """Mean and std of the regression targets of all foreground RoIs (Sec. 2.3: normalised to
    zero mean and unit variance)."""
    targets = [bx.encode(e['rois'][m], e['gt_boxes'][e['assignment'][m]])
               for e in roidb for m in [e['max_iou'] >= cfg.fg_thresh] if m.any()]
    if not targets or not cfg.normalize_targets:
        return np.zeros(4, np.float32), np.ones(4, np.float32)
    means, stds = bx.compute_target_stats(np.concatenate(targets))
    return np.asarray(means, np.float32), np.asarray(stds, np.float32)


def sample_rois(entry, rois_per_image, cfg, rng):
    """Sec. 2.3, "Mini-batch sampling": up to fg_fraction of the RoIs from IoU >= fg_thresh,
    the rest from IoU in [bg_thresh_lo, bg_thresh_hi) (any RoI of a negative image), all
    without replacement. Returns the indices into entry['rois'] (foreground first) and the
    labels (0 for background)."""
    max_iou = entry['max_iou']
    fg = np.flatnonzero(max_iou >= cfg.fg_thresh)
    bg = np.flatnonzero((max_iou < cfg.bg_thresh_hi) & (max_iou >= entry.get('bg_lo', cfg.bg_thresh_lo)))
    n_fg = min(int(round(cfg.fg_fraction * rois_per_image)), len(fg))
    fg = rng.choice(fg, n_fg, replace=False) if n_fg < len(fg) else fg
    n_bg = min(rois_per_image - n_fg, len(bg))
    bg = rng.choice(bg, n_bg, replace=False) if n_bg < len(bg) else bg
    keep = np.concatenate([fg, bg]).astype(np.int64)
    labels = np.zeros(len(keep), np.int64)
    labels[:n_fg] = entry['gt_labels'][entry['assignment'][fg]]
    return keep, labels


def expand_targets(targets, labels, num_classes):
    """(R, 4) targets -> (R, 4(K+1)) with the four numbers in the columns of each RoI's class,
    and weights that are 1 there for foreground RoIs ([u >= 1] in the loss), 0 elsewhere."""
    R = len(labels)
    full = np.zeros((R, 4 * (num_classes + 1)), np.float32)
    weights = np.zeros_like(full)
    for r in np.flatnonzero(labels > 0):
        c = 4 * labels[r]
        full[r, c:c + 4] = targets[r]
        weights[r, c:c + 4] = 1.0
    return full, weights


def make_minibatch(dataset, roidb, indices, cfg, num_classes, means, stds, rng,
                   rois_per_image=None):
    """The hierarchical mini-batch (Sec. 2.3): N images, R/N RoIs from each.

    Returns images (N, 3, H, W) float32, rois (R, 5) in the rescaled images' pixels, labels
    (R,), bbox_targets and bbox_weights (R, 4(K+1))."""
    if rois_per_image is None:
        rois_per_image = cfg.rois_per_batch // len(indices)
    ims, all_rois, all_labels, all_targets = [], [], [], []
    for n, idx in enumerate(indices):
        entry = roidb[idx]
        keep, labels = sample_rois(entry, rois_per_image, cfg, rng)
        rois = entry['rois'][keep]
        gt = entry['gt_boxes'][entry['assignment'][keep]] if len(entry['gt_boxes']) else rois
        image = dataset[entry['index']]['image']
        if cfg.flip and rng.random() < 0.5:                          # flip RoIs and their gt together
            image, both = hflip(image, np.concatenate([rois, gt]))
            rois, gt = both[:len(rois)], both[len(rois):]
        targets = (bx.encode(rois, gt) - means) / stds if len(rois) else np.zeros((0, 4))
        scale = cfg.scales[rng.integers(len(cfg.scales))]
        image, rois, factor = rescale(image, rois, scale, cfg.max_size)
        ims.append(preprocess(image, cfg.source))
        all_rois.append(np.hstack([np.full((len(rois), 1), n, np.float32), rois]))
        all_labels.append(labels)
        all_targets.append(targets.astype(np.float32))
    labels = np.concatenate(all_labels)
    targets, weights = expand_targets(np.concatenate(all_targets), labels, num_classes)
    return (im_list_to_blob(ims), np.concatenate(all_rois).astype(np.float32), labels,
            targets, weights)
