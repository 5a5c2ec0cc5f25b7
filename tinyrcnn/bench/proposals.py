"""Row for selective search (Uijlings et al., 2013): tinyrcnn's 'fast' mode next to OpenCV's
(opencv-contrib's cv2.ximgproc.segmentation, switchToSelectiveSearchFast), on the same
photographs, with the recall of each against hand-drawn boxes.

Recall at IoU t is the fraction of the boxes in tinyrcnn/assets/skimage_boxes.json (28 objects
on six photographs bundled with scikit-image) that some proposal overlaps by at least t. Both
methods keep their first `max_proposals` boxes (their own ranking), the number R-CNN used.
"""
import functools
import json
import os
import time

import numpy as np

from ..boxes import box_iou
from ..proposals.selective_search import selective_search

BOXES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'assets',
                     'skimage_boxes.json')


def labelled_photos(path=BOXES):
    """[(name, image (H, W, 3) uint8 RGB, boxes (G, 4) float32)] from the shipped labels."""
    from skimage import data
    with open(path) as f:
        doc = json.load(f)
    out = []
    for item in doc['images']:
        source = item['skimage']
        if source.endswith('[0]'):                        # stereo_motorcycle: (left, right, disparity)
            image = getattr(data, source[:-3])()[0]
        else:
            image = getattr(data, source)()
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if list(image.shape[:2]) != item['size']:
            raise ValueError(f"{path}: {item['name']} is {image.shape[:2]}, the labels expect {item['size']}")
        boxes = np.array([o['box'] for o in item['objects']], np.float32).reshape(-1, 4)
        out.append((item['name'], image, boxes))
    return out


def best_overlaps(proposals, gt_boxes):
    """For each ground-truth box (G, 4), its largest IoU with any of `proposals` (P, 4), with
    inclusive pixel corners (+1 widths, as VOC); 0 where there are no proposals."""
    if len(proposals) == 0:
        return np.zeros(len(gt_boxes))
    iou = box_iou(np.asarray(gt_boxes, np.float64), np.asarray(proposals, np.float64))   # (G, P)
    return np.nan_to_num(iou).max(axis=1)


def recall(best, thresholds=(0.5, 0.7)):
    """The fraction of ground-truth boxes whose best overlap reaches each threshold."""
    best = np.asarray(best)
    return [float((best >= t).mean()) if len(best) else 0.0 for t in thresholds]


def opencv_selective_search(image, max_proposals=2000):
    """OpenCV's selective search, fast mode, as (P, 4) float32 [x1, y1, x2, y2] inclusive."""
    import cv2
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(np.ascontiguousarray(image[:, :, ::-1]))        # OpenCV wants BGR
    ss.switchToSelectiveSearchFast()
    rects = np.asarray(ss.process(), np.float32).reshape(-1, 4)[:max_proposals]   # x, y, w, h
    return np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:] - 1], axis=1)


def _cv2():
    try:
        import cv2
        cv2.ximgproc.segmentation.createSelectiveSearchSegmentation
        return cv2
    except Exception:
        return None


def _run(method, photos, repeats):
    """Seconds per image (the median of `repeats` passes over all photos) and the proposals."""
    times, proposals = [], None
    for _ in range(repeats):
        start, found = time.perf_counter(), []
        for _, image, _ in photos:
            found.append(method(image))
        times.append((time.perf_counter() - start) / len(photos))
        proposals = found
    return float(np.median(times)), proposals


def bench_selective_search(repeats=3, max_proposals=2000, photos=None):
    """The selective-search rows: seconds per photograph against OpenCV's fast mode where
    opencv-contrib is installed, with each one's recall at IoU 0.5 and 0.7 and average number of
    proposals in the label. Two rows: tinyrcnn's 'fast' mode as the paper's Table 5 sets it
    (k = 50, 100), and with OpenCV's k (150, 300; colour spaces and similarity sets are the same
    in both), the like-for-like comparison."""
    photos = labelled_photos() if photos is None else photos
    selective_search(photos[0][1][:64, :64], 'fast')          # warm-up: imports, first calls
    rows = {'k = 50, 100 (Table 5)': None, "k = 150, 300 (OpenCV's)": (150, 300)}
    methods = {name: functools.partial(selective_search, mode='fast', max_proposals=max_proposals,
                                       scales=scales) for name, scales in rows.items()}
    cv2 = _cv2()
    if cv2 is not None:
        methods['OpenCV'] = lambda im: opencv_selective_search(im, max_proposals)
    results = {}
    for name, method in methods.items():
        seconds, found = _run(method, photos, repeats)
        best = np.concatenate([best_overlaps(p, gt) for p, (_, _, gt) in zip(found, photos)])
        r5, r7 = recall(best)
        results[name] = (seconds, f'recall {r5:.2f}/{r7:.2f} with '
                                  f'{np.mean([len(p) for p in found]):.0f} boxes')
    n_boxes = sum(len(gt) for _, _, gt in photos)
    if cv2 is None:
        reference = 'no OpenCV (opencv-contrib-python-headless) installed'
    else:
        reference = (f"OpenCV {results['OpenCV'][1]}; OpenCV {cv2.__version__}, "
                     f'{cv2.getNumThreads()} threads')
    ref = results['OpenCV'][0] if cv2 is not None else None
    return [(f'selective search fast, {name}, per image of {len(photos)} photos, recall@0.5/0.7 '
             f'of {n_boxes} boxes: tinyrcnn {results[name][1]}; {reference}', results[name][0], ref)
            for name in rows]
