"""VOC evaluation: hand-computed APs for each devkit rule, and a check against a plain
re-implementation of the devkit's voc_eval loop."""
import math

import numpy as np
import pytest

from tinyrcnn.eval import evaluate_voc, format_ap_table, voc_ap

CLASSES = ('cat', 'dog')


def det(*rows):
    """Detections from rows (x1, y1, x2, y2, score, label)."""
    a = np.array(rows, dtype=np.float64).reshape(-1, 6)
    return {'boxes': a[:, :4].astype(np.float32), 'scores': a[:, 4].astype(np.float32),
            'labels': a[:, 5].astype(np.int64)}


def gt(*rows):
    """Ground truth from rows (x1, y1, x2, y2, label, difficult)."""
    a = np.array(rows, dtype=np.float64).reshape(-1, 6)
    return {'boxes': a[:, :4].astype(np.float32), 'labels': a[:, 4].astype(np.int64),
            'difficult': a[:, 5].astype(bool)}


def both(dets, gts):
    return (evaluate_voc(dets, gts, CLASSES)['ap']['cat'],
            evaluate_voc(dets, gts, CLASSES, use_07_metric=False)['ap']['cat'])


def test_duplicates_and_unmatched_detections():
    gts = [gt([0, 0, 9, 9, 1, 0]), gt([20, 20, 39, 39, 1, 0], [50, 50, 59, 59, 1, 0])]
    dets = [det([0, 0, 9, 9, .9, 1], [0, 0, 9, 9, .8, 1]),          # TP, then a duplicate: FP
            det([20, 20, 39, 39, .7, 1], [100, 100, 110, 110, .6, 1])]  # TP, then no match: FP
    r = evaluate_voc(dets, gts, CLASSES)
    # npos = 3. Ranked: TP FP TP FP -> recall 1/3 1/3 2/3 2/3, precision 1 1/2 2/3 1/2.
    np.testing.assert_allclose(r['recall']['cat'], [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(r['precision']['cat'], [1, 1 / 2, 2 / 3, 1 / 2])
    # 11-point: t = 0, .1, .2, .3 -> 1; t = .4, .5, .6 -> 2/3; t >= .7 -> 0.  (4 + 3 * 2/3) / 11.
    assert r['ap']['cat'] == pytest.approx(6 / 11, abs=1e-12)
    # Area: envelope 1 on (0, 1/3], 2/3 on (1/3, 2/3], nothing beyond: 1/3 + 2/9 = 5/9.
    assert both(dets, gts)[1] == pytest.approx(5 / 9, abs=1e-12)
    # 'dog' has no ground truth: AP NaN, and mAP is the mean over 'cat' only.
    assert math.isnan(r['ap']['dog']) and r['map'] == pytest.approx(6 / 11)
    assert r['npos'] == {'cat': 3, 'dog': 0}


def test_difficult_objects_are_neither_hits_nor_misses():
    gts = [gt([0, 0, 9, 9, 1, 0], [30, 30, 39, 39, 1, 1], [70, 70, 79, 79, 2, 1])]
    dets = [det([60, 60, 69, 69, .97, 1],   # no match: FP
                [30, 30, 39, 39, .95, 1],   # best match is difficult: ignored
                [31, 30, 40, 39, .92, 1],   # IoU 90/110 with the difficult box: ignored
                [0, 0, 9, 9, .9, 1],        # TP
                [70, 70, 79, 79, .5, 2])]   # a dog on a difficult dog
    # npos = 1 (the difficult cat does not count). tp = 0 0 0 1, fp = 1 1 1 1:
    # precision 0 0 0 1/2, recall 0 0 0 1 -> 11-point: max precision 1/2 at every t -> 1/2.
    # Had the ignored ones been FPs, precision at the TP would be 1/4.
    r = evaluate_voc(dets, gts, CLASSES)
    np.testing.assert_allclose(r['precision']['cat'], [0, 0, 0, 0.5])
    assert both(dets, gts) == (pytest.approx(0.5), pytest.approx(0.5))
    # Only difficult dogs: npos 0, AP NaN, excluded from mAP.
    assert math.isnan(r['ap']['dog']) and r['map'] == pytest.approx(0.5)


def test_match_needs_iou_strictly_above_threshold():
    gts = [gt([0, 0, 9, 9, 1, 0])]
    half = [det([0, 0, 9, 4, .9, 1])]  # contained, 50 / 100: IoU exactly 0.5 -> a miss
    assert both(half, gts) == (0.0, 0.0)
    assert evaluate_voc(half, gts, CLASSES, iou_threshold=0.49)['ap']['cat'] == pytest.approx(1.0)
    more = [det([0, 0, 9, 5, .9, 1])]  # 60 / 100 = 0.6 -> a hit
    assert both(more, gts) == (pytest.approx(1.0), pytest.approx(1.0))


def test_images_without_detections_and_without_ground_truth():
    empty = {'boxes': np.zeros((0, 4)), 'scores': np.zeros(0), 'labels': np.zeros(0, np.int64)}
    no_gt = {'boxes': np.zeros((0, 4)), 'labels': np.zeros(0, np.int64), 'difficult': np.zeros(0, bool)}
    gts = [gt([0, 0, 9, 9, 1, 0]), no_gt, gt([0, 0, 9, 9, 1, 0])]
    dets = [empty, det([0, 0, 9, 9, .9, 1]), det([0, 0, 9, 9, .8, 1])]
    # npos = 2 (image 0's cat is never found). Ranked: FP (image 1), TP (image 2):
    # precision 0 1/2, recall 0 1/2. 11-point: 1/2 for t = 0 .. 0.5 (6 points) -> 3/11.
    # Area: 1/2 * 1/2 = 1/4.
    assert both(dets, gts) == (pytest.approx(3 / 11), pytest.approx(0.25))
    # No detections at all: AP 0 for a class with ground truth.
    assert both([empty] * 3, gts) == (0.0, 0.0)


def test_each_ground_truth_matches_once_even_if_another_is_free():
    # Two overlapping cats. Both detections pick A (IoU 1); the second is a duplicate and is NOT
    # reassigned to B (IoU 100/120 = 0.83), as in the devkit.
    gts = [gt([0, 0, 9, 9, 1, 0], [0, 0, 9, 11, 1, 0])]
    dets = [det([0, 0, 9, 9, .9, 1], [0, 0, 9, 9, .8, 1])]
    # recall 1/2 1/2, precision 1 1/2: 11-point 6/11; area 1/2 * 1 = 1/2.
    assert both(dets, gts) == (pytest.approx(6 / 11), pytest.approx(0.5))


def test_ranking_is_over_all_images_and_stable():
    gts = [gt([0, 0, 9, 9, 1, 0]), gt([0, 0, 9, 9, 1, 0])]
    # Equal scores: image 0's FP ranks before image 1's TP (stable) -> precision 0, 1/2, and
    # recall 0, 1/2: 11-point 6 * 1/2 / 11. The other order would give precision 1 first: 6/11.
    dets = [det([50, 50, 59, 59, .5, 1]), det([0, 0, 9, 9, .5, 1])]
    assert both(dets, gts)[0] == pytest.approx(3 / 11)
    # A higher score in a later image comes first regardless of image order: TP then FP.
    dets = [det([50, 50, 59, 59, .5, 1]), det([0, 0, 9, 9, .6, 1])]
    assert both(dets, gts)[0] == pytest.approx(6 / 11)


def test_07_thresholds_as_the_devkit():
    # 10 cats, 3 found with precision 1: recall 0.1 0.2 0.3. The devkit's thresholds come from
    # np.arange(0, 1.1, 0.1), whose 4th value is 0.30000000000000004 > 3/10: recall 0.3 does not
    # reach it, so AP = 3/11 (t = 0, .1, .2), not 4/11.
    assert voc_ap(np.array([0.1, 0.2, 3 / 10]), np.ones(3)) == pytest.approx(3 / 11)
    # The area metric has no thresholds: 0.3 * 1.
    assert voc_ap(np.array([0.1, 0.2, 3 / 10]), np.ones(3), use_07_metric=False) == pytest.approx(0.3)
    # Precision is interpolated from the right: FP TP TP with npos 2 gives recall 0 1/2 1 and
    # precision 0 1/2 2/3. The envelope lifts the 1/2 at recall 1/2 to 2/3: area 1/2 * 2/3 + 1/2 * 2/3
    # = 2/3 (0.583 without the envelope); 11-point: 2/3 at every t.
    rec, prec = np.array([0, .5, 1.]), np.array([0, .5, 2 / 3])
    assert voc_ap(rec, prec, use_07_metric=False) == pytest.approx(2 / 3)
    assert voc_ap(rec, prec) == pytest.approx(2 / 3)


def test_bad_inputs():
    gts = [gt([0, 0, 9, 9, 1, 0])]
    with pytest.raises(ValueError, match='one entry per image'):
        evaluate_voc([], gts, CLASSES)
    with pytest.raises(ValueError, match=r'labels must lie in 1\.\.2'):
        evaluate_voc([det([0, 0, 9, 9, .9, 3])], gts, CLASSES)
    with pytest.raises(ValueError, match=r'labels must lie in 1\.\.2'):
        evaluate_voc([det([0, 0, 9, 9, .9, 1])], [gt([0, 0, 9, 9, 0, 0])], CLASSES)
    with pytest.raises(ValueError, match=r'shape \(n, 4\)'):
        evaluate_voc([{'boxes': np.zeros((1, 3)), 'scores': np.ones(1), 'labels': np.ones(1, int)}],
                     gts, CLASSES)
    with pytest.raises(ValueError, match="missing key 'scores'"):
        evaluate_voc([{'boxes': np.zeros((1, 4)), 'labels': np.ones(1, int)}], gts, CLASSES)
    with pytest.raises(ValueError, match='scores has 2 entries but there are 1 boxes'):
        evaluate_voc([{'boxes': np.zeros((1, 4)), 'scores': np.ones(2), 'labels': np.ones(1, int)}],
                     gts, CLASSES)


# ---------------------------------------------------------------------------------------------
# Against a plain re-implementation of the devkit's voc_eval (per class, dicts, Python loops)
# ---------------------------------------------------------------------------------------------
def reference_voc_eval(dets, gts, k, thresh, use_07):
    records = {}
    npos = 0
    for i, g in enumerate(gts):
        sel = g['labels'] == k
        records[i] = {'bbox': g['boxes'][sel].astype(float).tolist(),
                      'difficult': g['difficult'][sel].tolist(), 'det': [False] * int(sel.sum())}
        npos += int((~g['difficult'][sel]).sum())
    entries = [(float(s), i, b.astype(float).tolist()) for i, d in enumerate(dets)
               for b, s, l in zip(d['boxes'], d['scores'], d['labels']) if l == k]
    entries.sort(key=lambda e: -e[0])  # Python's sort is stable
    tp, fp = [], []
    for _, i, bb in entries:
        R = records[i]
        ovmax, jmax = -float('inf'), -1
        for j, g in enumerate(R['bbox']):
            iw = max(min(bb[2], g[2]) - max(bb[0], g[0]) + 1.0, 0.0)
            ih = max(min(bb[3], g[3]) - max(bb[1], g[1]) + 1.0, 0.0)
            inter = iw * ih
            uni = (bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0) + (g[2] - g[0] + 1.0) * (g[3] - g[1] + 1.0) - inter
            if inter / uni > ovmax:
                ovmax, jmax = inter / uni, j
        t = f = 0
        if ovmax > thresh:
            if not R['difficult'][jmax]:
                if not R['det'][jmax]:
                    t, R['det'][jmax] = 1, True
                else:
                    f = 1
        else:
            f = 1
        tp.append(t)
        fp.append(f)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / npos
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if use_07:
        return sum((max(p for p, r in zip(prec, rec) if r >= t) if any(rec >= t) else 0) / 11
                   for t in np.arange(0.0, 1.1, 0.1))
    mrec, mpre = [0.0] + list(rec) + [1.0], [0.0] + list(prec) + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1))


def random_scene(rng, num_images=12, num_classes=3):
    dets, gts = [], []
    for _ in range(num_images):
        G = rng.integers(0, 5)
        xy = rng.integers(0, 80, (G, 2))
        wh = rng.integers(8, 40, (G, 2))
        g_boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
        g_labels = rng.integers(1, num_classes + 1, G)
        gts.append({'boxes': g_boxes, 'labels': g_labels, 'difficult': rng.random(G) < 0.2})
        # Detections: jittered copies of the ground truth (some duplicated, some mislabelled)
        # plus random boxes; scores on a coarse grid so that ties happen.
        src = rng.integers(0, max(G, 1), 2 * G) if G else np.zeros(0, int)
        jit = g_boxes[src] + rng.integers(-4, 5, (len(src), 4)) if G else np.zeros((0, 4))
        xy = rng.integers(0, 80, (3, 2))
        rand = np.concatenate([xy, xy + rng.integers(8, 40, (3, 2))], axis=1)
        boxes = np.concatenate([jit, rand]).astype(np.float32)
        labels = np.concatenate([g_labels[src] if G else np.zeros(0, int), rng.integers(1, num_classes + 1, 3)])
        labels = np.where(rng.random(len(labels)) < 0.1, rng.integers(1, num_classes + 1, len(labels)), labels)
        dets.append({'boxes': boxes, 'scores': rng.integers(0, 20, len(boxes)) / 20, 'labels': labels})
    return dets, gts


@pytest.mark.parametrize('seed', range(5))
def test_matches_reference_voc_eval(seed):
    rng = np.random.default_rng(seed)
    dets, gts = random_scene(rng)
    names = ('a', 'b', 'c')
    for use_07 in (True, False):
        for thresh in (0.5, 0.7):
            r = evaluate_voc(dets, gts, names, iou_threshold=thresh, use_07_metric=use_07)
            for k, name in enumerate(names, start=1):
                if r['npos'][name]:
                    assert r['ap'][name] == pytest.approx(reference_voc_eval(dets, gts, k, thresh, use_07),
                                                          abs=1e-12)
            valid = [a for a in r['ap'].values() if not math.isnan(a)]
            assert r['map'] == pytest.approx(np.mean(valid))


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------
def test_table():
    gts = [gt([0, 0, 9, 9, 1, 0], [20, 20, 39, 39, 1, 0])]
    r = evaluate_voc([det([0, 0, 9, 9, .9, 1], [60, 60, 69, 69, .8, 1])], gts, CLASSES)
    # recall 1/2 1/2, precision 1 1/2 -> 6/11 = 0.5455.
    table = format_ap_table(r)
    assert 'cat' in table and '0.5455' in table
    assert 'dog' in table and 'n/a' in table
    assert table.splitlines()[-1].startswith('mAP') and '0.5455' in table.splitlines()[-1]
