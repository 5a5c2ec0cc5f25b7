"""COCO metrics: hand-computed cases for each rule, and parity with pycocotools' COCOeval on
randomised sets (every summary number, and the full precision and recall arrays)."""
import contextlib
import io
import math
import time

import numpy as np
import pytest

from tinyrcnn.eval import evaluate_coco, format_coco_table

CLASSES = ('cat', 'dog')
KEYS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl')


def det(*rows):
    """Detections from rows (x1, y1, x2, y2, score, label)."""
    a = np.array(rows, dtype=np.float64).reshape(-1, 6)
    return {'boxes': a[:, :4], 'scores': a[:, 4], 'labels': a[:, 5].astype(np.int64)}


def gt(*rows, **flags):
    """Ground truth from rows (x1, y1, x2, y2, label), plus iscrowd=/difficult=/areas= lists."""
    a = np.array(rows, dtype=np.float64).reshape(-1, 5)
    return {'boxes': a[:, :4], 'labels': a[:, 4].astype(np.int64),
            **{k: np.asarray(v) for k, v in flags.items()}}


def defined(result):
    return {k: result[k] for k in KEYS if result[k] != -1.0}


def near(x):
    """Precision is TP / (TP + FP + eps), as in COCOeval: a perfect 1 reads 1 - 2e-16."""
    return pytest.approx(x, abs=1e-12)


# ---------------------------------------------------------------- hand-computed cases

def test_a_perfect_detector_scores_one_everywhere_defined():
    boxes = [(5, 5, 14, 14, 1), (20, 30, 69, 79, 2), (0, 0, 199, 149, 1)]   # small, medium, large
    gts = [gt(b) for b in boxes]
    dets = [det((*b[:4], 0.9, b[4])) for b in boxes]
    r = evaluate_coco(dets, gts, CLASSES + ('bird',))
    assert defined(r) == near({k: 1.0 for k in KEYS})
    assert (r['per_class']['cat'], r['per_class']['dog']) == near((1.0, 1.0))
    assert math.isnan(r['per_class']['bird'])                     # no ground truth: NaN
    assert r['precision'].shape == (10, 101, 3, 4, 3) and r['recall'].shape == (10, 3, 4, 3)
    assert np.all(r['precision'][:, :, 2] == -1)                 # COCOeval's -1 for the class


def test_iou_06_counts_at_050_to_060_but_not_at_075():
    """IoU 0.6 exactly: a match needs IoU >= t, so it counts at 0.50, 0.55, 0.60: AP = 3/10."""
    r = evaluate_coco([det((0, 0, 59, 99, 0.9, 1))], [gt((0, 0, 99, 99, 1))], CLASSES)   # 6000 / 10000
    assert r['AP50'] == near(1.0) and r['AP75'] == 0.0
    assert r['AP'] == near(0.3) and r['AR100'] == near(0.3)
    assert r['APl'] == r['AP'] and r['APs'] == r['APm'] == -1.0          # only a large object
    r = evaluate_coco([det((0, 0, 58, 99, 0.9, 1))], [gt((0, 0, 99, 99, 1))], CLASSES)   # 0.59
    assert r['AP'] == near(0.2)


def test_a_crowd_swallows_duplicates():
    person = (100, 100, 149, 199, 1)
    crowd_region = (300, 0, 599, 299, 1)
    dets = [det((310, 10, 359, 109, 0.99, 1), (400, 50, 449, 149, 0.98, 1), (500, 200, 549, 289, 0.97, 1),
                (100, 100, 149, 199, 0.5, 1))]
    r = evaluate_coco(dets, [gt(person, crowd_region, iscrowd=[False, True])], CLASSES)
    assert r['AP'] == near(1.0) and r['AR100'] == 1.0      # the three inside the crowd are ignored
    r = evaluate_coco(dets, [gt(person, crowd_region, difficult=[False, True])], CLASSES)
    assert r['AP'] == near(1.0)                            # no 'iscrowd': 'difficult' is the crowd
    r = evaluate_coco(dets, [gt(person, crowd_region, iscrowd=[False, False], difficult=[False, True])],
                      CLASSES)
    assert r['AP'] < 0.5                                   # 'iscrowd' wins: now a plain ground truth


def test_crowd_iou_is_over_the_detection_area():
    """A small detection inside a big crowd: IoU 1 for the crowd rule, tiny for the plain one."""
    dets = [det((0, 0, 9, 9, 0.9, 1), (200, 200, 249, 249, 0.8, 1))]
    gts = [gt((0, 0, 99, 99, 1), (200, 200, 249, 249, 1), iscrowd=[True, False])]
    assert evaluate_coco(dets, gts, CLASSES)['AP'] == near(1.0)


def test_max_dets_counts_per_image_and_class():
    fps = [(1000 + 20 * i, 0, 1009 + 20 * i, 9, 0.9 - 0.01 * i, 1) for i in range(10)]
    dets = [det(*fps, (0, 0, 49, 49, 0.1, 1))]                      # the hit ranks 11th
    r = evaluate_coco(dets, [gt((0, 0, 49, 49, 1))], CLASSES)
    assert r['AR1'] == r['AR10'] == 0.0 and r['AR100'] == 1.0
    assert r['AP'] == near(1 / 11)            # envelope: 1/11 at every level
    many = [(1000 + 20 * i, 0, 1009 + 20 * i, 9, 0.9 - 0.001 * i, 1) for i in range(100)]
    r = evaluate_coco([det(*many, (0, 0, 49, 49, 0.01, 1))], [gt((0, 0, 49, 49, 1))], CLASSES)
    assert r['AP'] == r['AR100'] == 0.0                            # the 101st is dropped
    r = evaluate_coco([det((0, 0, 49, 49, 0.9, 1), (60, 0, 99, 49, 0.8, 2))],
                      [gt((0, 0, 49, 49, 1), (60, 0, 99, 49, 2))], CLASSES)
    assert r['AR1'] == 1.0                                         # one per class, not per image


def tie_case():
    """A detection with IoU 0.6 to two ground truths takes the LATER one (COCO's loop keeps
    the last best), which leaves the earlier one to the exact detection ranked next."""
    a, b = (0, 0, 99, 99, 1), (50, 0, 149, 99, 1)
    dets = [det((25, 0, 124, 99, 0.9, 1), (0, 0, 99, 99, 0.8, 1))]
    return dets, [gt(a, b)], [gt(b, a)]


def test_on_equal_iou_the_later_ground_truth_is_taken():
    dets, a_then_b, b_then_a = tie_case()
    assert evaluate_coco(dets, a_then_b, CLASSES)['AP50'] == near(1.0)
    assert evaluate_coco(dets, b_then_a, CLASSES)['AP50'] == near(51 / 101)   # recall stops at 1/2


def test_no_detections_and_no_ground_truth():
    empty = {'boxes': np.zeros((0, 4)), 'scores': np.zeros(0), 'labels': np.zeros(0, np.int64)}
    r = evaluate_coco([empty], [gt((0, 0, 49, 49, 1))], CLASSES)
    assert defined(r) == {'AP': 0.0, 'AP50': 0.0, 'AP75': 0.0, 'APm': 0.0, 'AR1': 0.0, 'AR10': 0.0,
                          'AR100': 0.0, 'ARm': 0.0}
    assert r['per_class']['cat'] == 0.0 and math.isnan(r['per_class']['dog'])
    r = evaluate_coco([det((0, 0, 9, 9, 0.5, 1))], [{'boxes': [], 'labels': []}], CLASSES)
    assert all(r[k] == -1.0 for k in KEYS)                         # nothing to find: undefined
    assert all(math.isnan(v) for v in r['per_class'].values())


def test_false_positives_in_an_image_without_ground_truth():
    hit, image_without_gt = gt((0, 0, 49, 49, 1)), {'boxes': np.zeros((0, 4)), 'labels': []}
    ranked_first = evaluate_coco([det((0, 0, 49, 49, 0.5, 1)), det((5, 5, 54, 54, 0.9, 1))],
                                 [hit, image_without_gt], CLASSES)
    assert ranked_first['AP'] == near(0.5)     # precision 1/2 at recall 1
    ranked_last = evaluate_coco([det((0, 0, 49, 49, 0.5, 1)), det((5, 5, 54, 54, 0.1, 1))],
                                [hit, image_without_gt], CLASSES)
    assert ranked_last['AP'] == near(1.0)                              # the envelope forgives it


def test_area_ranges():
    small, medium, large = (0, 0, 9, 9, 1), (100, 100, 149, 149, 1), (300, 300, 499, 499, 1)
    gts = [gt(small, medium, large)]
    r = evaluate_coco([det((*small[:4], 0.9, 1), (*medium[:4], 0.8, 1))], gts, CLASSES)
    assert (r['APs'], r['APm'], r['APl']) == near((1.0, 1.0, 0.0))
    assert (r['ARs'], r['ARm'], r['ARl']) == (1.0, 1.0, 0.0)
    # an unmatched large detection ranked first is a false positive for 'all' only
    r = evaluate_coco([det((600, 600, 799, 799, 0.95, 1), (*small[:4], 0.9, 1))], [gt(small)], CLASSES)
    assert r['APs'] == near(1.0) and r['AP'] == near(0.5)
    # 'areas' decides the range; 32^2 exactly is both small and medium (ends included)
    r = evaluate_coco([det((*large[:4], 0.9, 1))], [gt(large, areas=[32.0 ** 2])], CLASSES)
    assert (r['APs'], r['APm'], r['APl']) == near((1.0, 1.0, -1.0))


def test_bad_inputs_say_which_image():
    with pytest.raises(ValueError, match=r'detections\[0\].*scores'):
        evaluate_coco([{'boxes': np.zeros((1, 4)), 'labels': [1]}], [gt((0, 0, 9, 9, 1))], CLASSES)
    with pytest.raises(ValueError, match=r'ground_truths\[0\]: iscrowd has 2 entries'):
        evaluate_coco([det((0, 0, 9, 9, 0.5, 1))], [gt((0, 0, 9, 9, 1), iscrowd=[0, 1])], CLASSES)
    with pytest.raises(ValueError, match='one entry per image'):
        evaluate_coco([], [gt((0, 0, 9, 9, 1))], CLASSES)


def test_format_coco_table():
    r = evaluate_coco([det((0, 0, 59, 99, 0.9, 1))], [gt((0, 0, 99, 99, 1))], CLASSES)
    text = format_coco_table(r)
    lines = text.splitlines()
    assert len(lines) == 12 and lines[0].endswith('= 0.300') and 'AP75' in lines[2]
    assert 'n/a' in lines[3]                                       # APs: no small object
    text = format_coco_table(r, per_class=True)
    assert 'cat' in text and 'n/a (no ground truth)' in text.splitlines()[-1]


def test_thousands_of_detections_take_well_under_seconds():
    dets, gts, _ = random_case(12345, n_images=80, n_gt=(5, 15), n_classes=5, n_random=60)
    n = sum(len(d['scores']) for d in dets)
    start = time.perf_counter()
    evaluate_coco(dets, gts, [str(k) for k in range(5)])
    seconds = time.perf_counter() - start
    print(f'{n} detections, {sum(len(g["labels"]) for g in gts)} ground truths: {seconds:.2f} s')
    assert n > 3000 and seconds < 5


# ---------------------------------------------------------------- parity with pycocotools

def random_case(seed, n_images=None, n_gt=(0, 9), n_classes=None, n_random=None):
    """Images with boxes of every size (integer or fractional corners), crowds given as 'iscrowd'
    or as 'difficult', segmentation-like 'areas' or none, duplicated ground truths (IoU ties),
    jittered and random detections, tied scores in some cases, images with no gt or no detection,
    and now and then more than 100 detections of one class in an image."""
    rng = np.random.default_rng(seed)
    n_images = n_images or int(rng.integers(1, 7))
    K = n_classes or int(rng.integers(1, 5))
    integer, tied_scores = rng.random() < 0.5, rng.random() < 0.3
    crowd_key = rng.choice(['iscrowd', 'difficult', None])
    with_areas = rng.random() < 0.4

    def boxes(n):
        w, h = np.exp(rng.uniform(np.log(2), np.log(400), (2, n)))
        x, y = rng.uniform(0, 500, (2, n))
        b = np.stack([x, y, x + w - 1, y + h - 1], axis=1)
        return np.round(b) if integer else b

    dets, gts = [], []
    for _ in range(n_images):
        G = int(rng.integers(*n_gt)) if rng.random() > 0.15 else 0
        g_boxes, g_labels = boxes(G), rng.integers(1, K + 1, G)
        if G > 1 and rng.random() < 0.3:                             # an exact duplicate
            g_boxes[-1], g_labels[-1] = g_boxes[0], g_labels[0]
        item = {'boxes': g_boxes, 'labels': g_labels}
        if crowd_key is not None:
            item[crowd_key] = rng.random(G) < 0.2
        if with_areas:
            wh = (g_boxes[:, 2] - g_boxes[:, 0] + 1) * (g_boxes[:, 3] - g_boxes[:, 1] + 1)
            item['areas'] = wh * rng.uniform(0.3, 1.0, G)
            item['areas'][rng.random(G) < 0.1] = 32.0 ** 2               # on a range's end
        gts.append(item)

        copies = rng.integers(0, 4, G)
        d_boxes = np.repeat(g_boxes, copies, axis=0)
        size = np.tile(g_boxes[:, 2:] - g_boxes[:, :2] + 1, 2)    # w, h, w, h
        d_boxes = d_boxes + rng.normal(0, 0.08, d_boxes.shape) * np.repeat(size, copies, axis=0)
        d_labels = np.repeat(g_labels, copies)
        swap = rng.random(len(d_labels)) < 0.1                          # a wrong class
        d_labels[swap] = rng.integers(1, K + 1, swap.sum())
        extra = int(rng.integers(0, n_random or 10))
        if rng.random() < 0.08:
            extra = 120                                                  # past maxDets = 100
        d_boxes = np.concatenate([d_boxes, boxes(extra)])
        d_boxes[:, 2:] = np.maximum(d_boxes[:, 2:], d_boxes[:, :2])      # at least one pixel
        if integer:
            d_boxes = np.round(d_boxes)
        flood_label = g_labels[0] if G else 1                          # a class of this image
        d_labels = np.concatenate([d_labels, rng.integers(1, K + 1, extra) if extra < 120
                                   else np.full(extra, flood_label)])
        scores = rng.random(len(d_labels))
        if tied_scores:
            scores = np.round(scores, 1)
        if rng.random() < 0.15:
            d_boxes, scores, d_labels = d_boxes[:0], scores[:0], d_labels[:0]
        dets.append({'boxes': d_boxes, 'scores': scores, 'labels': d_labels})
    if not any(len(d['scores']) for d in dets):                          # loadRes needs one
        dets[0] = {'boxes': boxes(1), 'scores': np.array([0.5]), 'labels': np.array([1])}
    return dets, gts, K


def pycocotools_eval(dets, gts, K):
    """The same set through pycocotools: COCO objects built in memory, prints swallowed."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        return [float(b[0]), float(b[1]), float(b[2] - b[0] + 1), float(b[3] - b[1] + 1)]
    annotations = []
    for i, g in enumerate(gts):
        crowd = g.get('iscrowd', g.get('difficult', np.zeros(len(g['labels']), bool)))
        for j, (box, label) in enumerate(zip(g['boxes'], g['labels'])):
            bbox = xywh(box)
            area = float(g['areas'][j]) if 'areas' in g else bbox[2] * bbox[3]
            annotations.append({'id': len(annotations) + 1, 'image_id': i + 1, 'category_id': int(label),
                                'bbox': bbox, 'area': area, 'iscrowd': int(crowd[j])})
    results = [{'image_id': i + 1, 'category_id': int(label), 'bbox': xywh(box), 'score': float(s)}
               for i, d in enumerate(dets) for box, s, label in zip(d['boxes'], d['scores'], d['labels'])]
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {'images': [{'id': i + 1} for i in range(len(gts))], 'annotations': annotations,
                         'categories': [{'id': k, 'name': str(k)} for k in range(1, K + 1)]}
        truth.createIndex()
        E = COCOeval(truth, truth.loadRes(results), 'bbox')
        E.evaluate()
        E.accumulate()
        E.summarize()
    return E.stats, E.eval['precision'], E.eval['recall']


def test_parity_with_pycocotools_on_62_sets():
    pytest.importorskip('pycocotools')
    dets, a_then_b, b_then_a = tie_case()
    sets = [(dets, a_then_b, 2), (dets, b_then_a, 2)] + [random_case(seed) for seed in range(60)]
    worst = 0.0
    for seed, (dets, gts, K) in enumerate(sets):
        stats, precision, recall = pycocotools_eval(dets, gts, K)
        ours = evaluate_coco(dets, gts, [f'c{k}' for k in range(1, K + 1)])
        diff = max(abs(ours[k] - float(s)) for k, s in zip(KEYS, stats))
        diff = max(diff, np.abs(ours['precision'] - precision).max(), np.abs(ours['recall'] - recall).max())
        assert diff <= 1e-6, f'set {seed}: ' + ', '.join(
            f'{k} {ours[k]:.6f} vs {s:.6f}' for k, s in zip(KEYS, stats) if abs(ours[k] - s) > 1e-6)
        for k in range(K):                                   # per-class AP from COCOeval's array
            p = precision[:, :, k, 0, -1]
            expected = p[p > -1].mean() if np.any(p > -1) else math.nan
            assert ours['per_class'][f'c{k + 1}'] == pytest.approx(expected, abs=1e-6, nan_ok=True)
        worst = max(worst, diff)
    print(f'largest difference from pycocotools over {len(sets)} sets: {worst:.3g}')
    assert worst <= 1e-6
