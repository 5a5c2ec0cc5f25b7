"""Fast R-CNN's design evaluations (Girshick, ICCV 2015, Sec. 4.5 and 5.1-5.4), in small CPU runs.

    python notebooks/runs/design_evaluations.py [--out notebooks/runs/design_evaluations.json]
                                                [--seeds 2] [--pyramid-seeds 1]
                                                [--iterations 150] [--work DIR]

writes the JSON that chapter 12 (`notebooks/12_design_evaluations.py`) reads. One data set, one
set of proposals and one crop-pretrained trunk are made once (cached in --work); then, for each
seed, short Fast R-CNN runs (vgg-tiny, the CPU demo's Adam settings, fewer iterations, a smaller
scale) for these comparisons, each scored with VOC07 mAP on the same 100 test images:

  (a) Sec. 5.1, Table 6: multi-task training (lambda = 1) vs classification only (lambda = 0) vs
      stage-wise (the lambda = 0 network, everything frozen but bbox_pred, trained with L_loc);
      each tested with and without box regression where the network has a regressor.
  (b) Sec. 4.5, Table 5: all conv layers frozen (freeze_stages=5: fc6, fc7 and the outputs
      learn) vs all fine-tuned (freeze_stages=0, the CPU demo's choice).
  (c) Sec. 5.3: half of the training images vs all of them, same number of iterations.
  (d) Sec. 5.4, Table 8: the softmax vs post-hoc one-vs-rest linear SVMs on the same network's
      fc7 features (R-CNN's recipe, small: see `train_svms`).
  (e) Sec. 5.2, Table 7 (test side only): the multi-task model of the first seed tested at its
      training scale vs on an image pyramid, no retraining; the spread is a paired bootstrap
      over the test images.

A seed changes the initial cls_score/bbox_pred weights, the order of the images, the sampled
RoIs and the flips; data, proposals and the pretrained trunk are shared by all runs. Two seeds
by default: the stored JSON took 31 minutes on 2 CPU cores shared with other jobs (it records
its wall time, and each run's); the JSON is rewritten after each seed.
"""
import argparse
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import tinyrcnn.speed  # noqa: E402
from tinyrcnn import boxes as bx  # noqa: E402
from tinyrcnn.data import VOCDetection, make_shapes_voc  # noqa: E402
from tinyrcnn.data.transforms import image_pyramid, preprocess  # noqa: E402
from tinyrcnn.eval import evaluate_voc  # noqa: E402
from tinyrcnn.export import load_model  # noqa: E402
from tinyrcnn.fast_rcnn.detect import (PYRAMID_TARGET_AREA, im_detect, postprocess,  # noqa: E402
                                       pyramid_levels)
from tinyrcnn.proposals import compute_dataset_proposals  # noqa: E402
from tinyrcnn.tensor import Tensor, no_grad  # noqa: E402
from tinyrcnn.train import FastRCNNTrainer, TrainConfig  # noqa: E402
from tinyrcnn.train.pretrain import pretrain_vgg_tiny  # noqa: E402

DATA = dict(num_train=300, num_test=100, seed=0, image_size=(128, 192))
PROPOSALS = dict(mode='single', max_proposals=2000)      # selective search, its cheapest mode
PRETRAIN = dict(num_images=200, iterations=200, batch=64, crop=48, lr=0.001, seed=2026)
# CPU_DEMO's settings (tinyrcnn/demo.py), shorter and at a smaller scale: the images are drawn
# at 128-192 pixels and enlarged to a shorter side of 160 (the demo: 160-256, enlarged to 288)
TRAIN = dict(trunk='vgg-tiny', source='tiny', freeze_stages=0, scales=(160,), max_size=256,
             optimizer='adam', lr=0.001, weight_decay=0.0, dropout=0.0, ims_per_batch=2,
             rois_per_batch=128, pretrain_iterations=0, threads=2)
# Sec. 5.2 tests on s in {480, 576, 688, 864, 1200} around s = 600: the same ratios around 160
PYRAMID = (128, 154, 184, 230, 320)
PYRAMID_MAX_SIZE = 512     # the paper caps the longer side at 2000 instead of 1000 for pyramids
SVM = dict(neg_iou=0.3, C=1.0, hard_margin=-1.0, chunk_images=50, maxiter=200)


class Subset:
    """The first `n` images of a VOCDetection-like data set (for 'half of the training data')."""

    def __init__(self, dataset, n):
        self.dataset, self.n = dataset, n
        self.class_names = dataset.class_names
        self.ids = list(dataset.ids[:n])

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.dataset[i]

    def annotation(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.dataset.annotation(i)


# ----- scoring ----------------------------------------------------------------------------------
def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def levels_for(proposals, factors, target_area):
    """SPPnet's level choice (`pyramid_levels`), with the target area as a parameter."""
    w = proposals[:, 2].astype(np.float64) - proposals[:, 0] + 1
    h = proposals[:, 3].astype(np.float64) - proposals[:, 1] + 1
    scaled = (w * h)[:, None] * np.asarray(factors, np.float64)[None, :] ** 2
    return np.abs(scaled - target_area).argmin(axis=1)


def roi_outputs(model, image, proposals, scales, max_size, source, target_area=PYRAMID_TARGET_AREA):
    """For every proposal: fc7 features (P, D), softmax probabilities (P, K+1) and class-specific
    regressed boxes (P, 4(K+1)) in image pixels. One scale: as `im_detect`. Several: each level
    is run on its own (not in one padded blob) and each RoI pooled at the level chosen by
    `levels_for(..., target_area)`."""
    H, W = image.shape[:2]
    pyramid = image_pyramid(image, scales, max_size)
    factors = np.array([f for _, f in pyramid], np.float32)
    levels = (levels_for(proposals, factors, target_area) if len(scales) > 1
              else np.zeros(len(proposals), np.int64))
    K1 = model.num_classes + 1
    fc7, logits, deltas = None, np.zeros((len(proposals), K1)), np.zeros((len(proposals), 4 * K1))
    model.eval()
    with no_grad():
        for level, (resized, factor) in enumerate(pyramid):
            sel = np.nonzero(levels == level)[0]
            if sel.size == 0:
                continue
            feats = model.features(Tensor(preprocess(resized, source)[None]))
            rois = np.hstack([np.zeros((sel.size, 1), np.float32),
                              proposals[sel] * np.float32(factor)]).astype(np.float32)
            pooled = model.roi_pool(feats, rois)                          # (R, C, 7, 7)
            h = model.classifier(pooled.reshape(sel.size, -1))            # fc7, (R, D)
            if fc7 is None:
                fc7 = np.zeros((len(proposals), h.shape[1]), np.float32)
            fc7[sel] = h.numpy()
            logits[sel] = model.cls_score(h).numpy()
            deltas[sel] = model.bbox_pred(h).numpy()
    boxes = bx.clip_boxes(bx.decode(proposals, deltas.astype(np.float32)), H, W)
    return dict(fc7=fc7, probs=_softmax(logits).astype(np.float32), boxes=boxes.astype(np.float32),
                proposals=proposals, levels=levels, image_size=(H, W))


def score_set(model, dataset, proposals, scales, max_size, source, target_area=PYRAMID_TARGET_AREA):
    return [roi_outputs(model, dataset[i]['image'], proposals[dataset.ids[i]], scales, max_size,
                        source, target_area) for i in range(len(dataset))]


def detections_of(outputs, regress=True, class_scores=None):
    """Detections (`postprocess`) from `outputs` (one `roi_outputs` dict per image): softmax
    scores or `class_scores(output) -> (P, K+1)`; class-specific regressed boxes, or the
    proposals themselves (`regress=False`: no box regression at test time)."""
    detections = []
    for out in outputs:
        scores = out['probs'] if class_scores is None else class_scores(out)
        boxes = out['boxes'] if regress else np.tile(out['proposals'], (1, scores.shape[1]))
        detections.append(postprocess(scores, boxes))
    return detections


def truths_of(dataset):
    return [{k: dataset.annotation(i)[k] for k in ('boxes', 'labels', 'difficult')}
            for i in range(len(dataset))]


def voc_map(outputs, dataset, regress=True, class_scores=None):
    """VOC07 mAP (11-point) of `detections_of(outputs, ...)` on `dataset`."""
    return float(evaluate_voc(detections_of(outputs, regress, class_scores), truths_of(dataset),
                              dataset.class_names)['map'])


def paired_bootstrap(dets_a, dets_b, dataset, n=200, seed=0):
    """mAP(b) - mAP(a) on `n` resamples of the test images (the same resample for both):
    the spread that comes from which test images were drawn. Returns mean and 5-95 %."""
    rng = np.random.default_rng(seed)
    truths, names, diffs = truths_of(dataset), dataset.class_names, []
    for _ in range(n):
        idx = rng.integers(0, len(truths), len(truths))
        m = [evaluate_voc([d[i] for i in idx], [truths[i] for i in idx], names)['map']
             for d in (dets_a, dets_b)]
        diffs.append(m[1] - m[0])
    return dict(mean=float(np.mean(diffs)), p05=float(np.percentile(diffs, 5)),
                p95=float(np.percentile(diffs, 95)), resamples=n)


# ----- one-vs-rest SVMs (Sec. 5.4) --------------------------------------------------------------
def _fit_l2svm(x, y, C, w0, maxiter):
    """min_w,b 1/2 |w|^2 + C sum_i max(0, 1 - y_i (w x_i + b))^2, by L-BFGS (the bias is not
    regularised). x (n, D), y (n,) in {-1, +1}."""
    from scipy.optimize import minimize

    def f(wb):
        w, b = wb[:-1], wb[-1]
        margin = 1 - y * (x @ w + b)
        active = margin > 0
        m = margin[active]
        g = -2 * C * (y[active] * m)
        grad = np.concatenate([w + x[active].T @ g, [g.sum()]])
        return 0.5 * w @ w + C * (m @ m), grad

    res = minimize(f, w0, jac=True, method='L-BFGS-B', options=dict(maxiter=maxiter))
    return res.x


def train_svms(model, dataset, proposals, scales, max_size, source, cfg=SVM):
    """One linear SVM per class on fc7 features of the training images (no flips), R-CNN's
    labelling: positives are the ground-truth boxes of the class, negatives the proposals with
    IoU < 0.3 with every box of the class, the rest ignored. Hard negative mining in one pass:
    the images go by in chunks; after each chunk the negatives inside the margin (score > -1)
    join the cache and the SVM is refit, warm-started; easy ones leave the cache. Features are
    divided by their mean L2 norm on the positives. Returns (W (D, K), b (K,), scale, stats)."""
    K = len(dataset.class_names)
    feats, labels, neg_masks = [], [], []
    for i in range(len(dataset)):
        gt = dataset.annotation(i)
        keep = ~np.asarray(gt['difficult'], bool)
        gt_boxes = np.asarray(gt['boxes'], np.float32)[keep]
        gt_labels = np.asarray(gt['labels'], np.int64)[keep]
        props = proposals[dataset.ids[i]]
        rois = np.concatenate([gt_boxes, props]).astype(np.float32)
        out = roi_outputs(model, dataset[i]['image'], rois, scales, max_size, source)
        is_gt = np.arange(len(rois)) < len(gt_boxes)
        lab = np.where(is_gt, np.concatenate([gt_labels, np.zeros(len(props), np.int64)]), 0)
        neg = np.zeros((len(rois), K), bool)
        for k in range(1, K + 1):
            own = gt_boxes[gt_labels == k]
            iou = bx.box_iou(rois, own).max(axis=1) if len(own) else np.zeros(len(rois))
            neg[:, k - 1] = ~is_gt & (iou < cfg['neg_iou'])
        feats.append(out['fc7'])
        labels.append(lab)
        neg_masks.append(neg)
    pos_all = np.concatenate([f[lab > 0] for f, lab in zip(feats, labels)])
    scale = float(np.linalg.norm(pos_all, axis=1).mean()) or 1.0
    D = pos_all.shape[1]
    W, b = np.zeros((D, K)), np.zeros(K)
    stats = {'positives': [], 'cached_negatives': [], 'negatives_seen': []}
    chunks = np.array_split(np.arange(len(dataset)), max(1, len(dataset) // cfg['chunk_images']))
    for k in range(1, K + 1):
        pos = np.concatenate([f[lab == k] for f, lab in zip(feats, labels)]) / scale
        cache = np.zeros((0, D))
        wb = np.zeros(D + 1)
        seen = 0
        for chunk in chunks:
            negs = np.concatenate([feats[i][neg_masks[i][:, k - 1]] for i in chunk]) / scale
            seen += len(negs)
            hard = negs[negs @ wb[:-1] + wb[-1] > cfg['hard_margin']]    # inside the margin
            cache = np.concatenate([cache, hard])
            x = np.concatenate([pos, cache])
            y = np.concatenate([np.ones(len(pos)), -np.ones(len(cache))])
            wb = _fit_l2svm(x, y, cfg['C'], wb, cfg['maxiter'])
            cache = cache[cache @ wb[:-1] + wb[-1] > 1.2 * cfg['hard_margin']]   # drop easy ones
        W[:, k - 1], b[k - 1] = wb[:-1], wb[-1]
        stats['positives'].append(int(len(pos)))
        stats['cached_negatives'].append(int(len(cache)))
        stats['negatives_seen'].append(int(seen))
    return W, b, scale, stats


def svm_scores(W, b, scale):
    """(P, K+1) scores from the SVMs: column 0 (background) unused, a logistic squashing of
    the SVM outputs so that `postprocess`'s threshold (0.05, i.e. SVM score > -2.94) and its
    cross-class cap of 100 per image apply; within a class the ranking is the SVM's."""
    def scores(out):
        s = 1 / (1 + np.exp(-(out['fc7'] / scale @ W + b)))
        return np.hstack([np.zeros((len(s), 1)), s]).astype(np.float32)
    return scores


# ----- training ---------------------------------------------------------------------------------
def train(settings, dataset, proposals, work, name, model=None):
    """One Fast R-CNN run; returns (the exported model, ready for testing, run record)."""
    cfg = TrainConfig(**settings)
    start = time.time()
    trainer = FastRCNNTrainer(cfg, dataset, proposals, out_dir=None, model=model)
    trainer.run(show_progress=False)
    seconds = time.time() - start
    path = trainer.export(os.path.join(work, 'models', name))
    last = np.mean([h[1:] for h in trainer.history[-20:]], axis=0)
    record = dict(train_seconds=round(seconds, 1), iterations=cfg.iterations,
                  final_loss=dict(zip(('total', 'cls', 'loc'), (round(float(v), 4) for v in last))),
                  trainable_parameters=int(sum(p.data.size for _, p in trainer.model.trainable_parameters())))
    return trainer, load_model(path)[0], record


def cpu_model():
    try:
        out = subprocess.run(['lscpu'], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith('Model name:'):
                return line.split(':', 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def git_commit():
    try:
        return subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'], capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def recall_at(proposals, dataset, threshold=0.5):
    found = total = 0
    for i in range(len(dataset)):
        gt = dataset.annotation(i)
        g = np.asarray(gt['boxes'], np.float32)[~np.asarray(gt['difficult'], bool)]
        if len(g) == 0:
            continue
        p = proposals[dataset.ids[i]]
        total += len(g)
        if len(p):
            found += int((bx.box_iou(g, p).max(axis=1) >= threshold).sum())
    return found / max(total, 1)


def summary(values):
    v = np.asarray(values, np.float64)
    return dict(mean=float(v.mean()), std=float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                min=float(v.min()), max=float(v.max()), n=int(len(v)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=os.path.join(ROOT, 'notebooks', 'runs', 'design_evaluations.json'))
    parser.add_argument('--seeds', type=int, default=2)
    parser.add_argument('--pyramid-seeds', type=int, default=1,
                        help='how many of the seeds are also tested on the pyramid (e)')
    parser.add_argument('--iterations', type=int, default=150)
    parser.add_argument('--work', default=os.path.join(tempfile.gettempdir(), 'tinyrcnn-design-evaluations'),
                        help='scratch folder: data, proposal caches, pretrained trunk, models')
    parser.add_argument('--smoke', action='store_true', help='tiny sizes, to check the script runs')
    args = parser.parse_args(argv)
    tinyrcnn.speed.enable()
    data, pretrain, iterations, svm = dict(DATA), dict(PRETRAIN), args.iterations, dict(SVM)
    if args.smoke:
        data.update(num_train=12, num_test=6)
        pretrain.update(num_images=10, iterations=4)
        iterations, svm['chunk_images'] = 4, 6
    start_all = time.time()
    os.makedirs(args.work, exist_ok=True)
    log = lambda *a: print(f'[{time.time() - start_all:6.0f} s]', *a, flush=True)  # noqa: E731

    # 1. data, proposals, the pretrained trunk: once
    t = time.time()
    tag = f"{data['num_train']}_{data['num_test']}"
    root = make_shapes_voc(os.path.join(args.work, f'data_{tag}'), data['num_train'], data['num_test'],
                           seed=data['seed'], image_size=data['image_size'])
    train_set, test_set = VOCDetection(root, 'trainval'), VOCDetection(root, 'test')
    data_seconds = time.time() - t
    t = time.time()
    props = {split: compute_dataset_proposals(ds, os.path.join(root, f'proposals_{split}.npz'),
                                              PROPOSALS['mode'], PROPOSALS['max_proposals'])
             for split, ds in (('trainval', train_set), ('test', test_set))}
    proposal_seconds = time.time() - t
    counts = [len(p) for p in props['test'].values()]
    log(f'{len(train_set)} training and {len(test_set)} test images; selective search '
        f"({PROPOSALS['mode']}): median {np.median(counts):.0f} proposals, recall@0.5 "
        f"{recall_at(props['test'], test_set):.3f} on the test images")
    weights = os.path.join(args.work, f"vgg_tiny_crops_{pretrain['num_images']}_{pretrain['iterations']}.npz")
    t = time.time()
    pretrain_acc = None
    if not os.path.exists(weights):
        history = pretrain_vgg_tiny(weights, threads=2, log=log, **pretrain)
        pretrain_acc = float(np.mean([h[2] for h in history[-50:]]))
    pretrain_seconds = time.time() - t

    base = dict(TRAIN, weights=weights, iterations=iterations, step_size=max(1, iterations * 3 // 4))
    net = dict(scales=TRAIN['scales'], max_size=TRAIN['max_size'], source=TRAIN['source'])
    half = Subset(train_set, len(train_set) // 2)
    # the area the detector saw objects at: median ground-truth box area at the training scale
    areas = []
    for i in range(len(train_set)):
        gt = train_set.annotation(i)
        h, w = train_set[i]['image'].shape[:2]
        f = min(TRAIN['scales'][0] / min(h, w), TRAIN['max_size'] / max(h, w))   # as `rescale`
        b = np.asarray(gt['boxes'], np.float64)
        areas += list((b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1) * f ** 2)
    trained_area = float(np.median(areas))

    runs, maps = [], {}

    def record(key, seed, value):
        maps.setdefault(key, []).append(round(value, 4))
        log(f'seed {seed}: {key} mAP {value:.3f}')

    def save(seeds_done):
        """The JSON, rewritten after each seed (a stopped run leaves the seeds it finished)."""
        result = dict(
            command='python notebooks/runs/design_evaluations.py' + (' ' + ' '.join(
                argv if argv is not None else sys.argv[1:])).rstrip(),
            created=datetime.datetime.now().strftime('%Y-%m-%d %H:%M'), cpu=cpu_model(),
            cpu_count=os.cpu_count(), python=platform.python_version(), numpy=np.__version__,
            git_commit=git_commit(), wall_seconds=round(time.time() - start_all, 1), seeds=seeds_done,
            complete=seeds_done == args.seeds,
            settings=dict(data=data, proposals=PROPOSALS, pretrain=pretrain, svm=svm,
                          train=dataclasses.asdict(TrainConfig(**dict(base, weights=os.path.basename(weights)))),
                          pyramid=PYRAMID, pyramid_max_size=PYRAMID_MAX_SIZE, half_data_images=len(half),
                          trained_object_area=round(trained_area, 1)),
            setup=dict(data_seconds=round(data_seconds, 1), proposal_seconds=round(proposal_seconds, 1),
                       median_test_proposals=float(np.median(counts)),
                       test_recall_at_05=round(recall_at(props['test'], test_set), 4),
                       pretrain_seconds=round(pretrain_seconds, 1), pretrain_crop_accuracy=pretrain_acc),
            maps=maps, summary={k: summary(v) for k, v in maps.items()}, runs=runs)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + '.tmp', 'w') as f:
            json.dump(result, f, indent=1)
        os.replace(args.out + '.tmp', args.out)
        return result

    for seed in range(args.seeds):
        s = dict(base, seed=seed)
        # multi-task (lambda = 1), all layers fine-tuned, all images: the reference run
        _, mt, rec = train(s, train_set, props['trainval'], args.work, f'multitask_{seed}')
        runs.append(dict(variant='multitask', seed=seed, **rec))
        out = score_set(mt, test_set, props['test'], **net)
        if seed == 0:       # the scoring above is im_detect's, number for number
            ref, _, _ = im_detect(mt, test_set[0]['image'], props['test'][test_set.ids[0]], **net)
            assert np.allclose(ref, out[0]['probs'], atol=1e-5), 'roi_outputs differs from im_detect'
        record('multitask/bbox_reg', seed, voc_map(out, test_set))
        record('multitask/no_bbox_reg', seed, voc_map(out, test_set, regress=False))
        # (d) one-vs-rest SVMs on the same network's fc7
        t = time.time()
        W, b, scale, stats = train_svms(mt, train_set, props['trainval'], cfg=svm, **net)
        runs.append(dict(variant='svm', seed=seed, train_seconds=round(time.time() - t, 1), **stats))
        record('svm/bbox_reg', seed, voc_map(out, test_set, class_scores=svm_scores(W, b, scale)))
        record('svm/no_bbox_reg', seed, voc_map(out, test_set, regress=False,
                                                class_scores=svm_scores(W, b, scale)))
        # (e) the same network on a pyramid (the first `--pyramid-seeds` models: 4-9x the
        # convolutions of one scale): SPPnet's rule (pool each RoI where it is closest to
        # 224 x 224), and the same rule aimed at the object size this detector was trained on
        if seed < args.pyramid_seeds:
            single = detections_of(out)
            for key, area in (('pyramid_224', PYRAMID_TARGET_AREA), ('pyramid_trained_area', trained_area)):
                t = time.time()
                outp = score_set(mt, test_set, props['test'], PYRAMID, PYRAMID_MAX_SIZE, TRAIN['source'], area)
                if seed == 0 and key == 'pyramid_224':
                    p0 = props['test'][test_set.ids[0]]
                    f0 = [f for _, f in image_pyramid(test_set[0]['image'], PYRAMID, PYRAMID_MAX_SIZE)]
                    assert np.array_equal(levels_for(p0, f0, PYRAMID_TARGET_AREA), pyramid_levels(p0, f0))
                share = np.bincount(np.concatenate([o['levels'] for o in outp]), minlength=len(PYRAMID))
                seconds = time.time() - t
                record(f'{key}/bbox_reg', seed, voc_map(outp, test_set))
                runs.append(dict(variant=key, seed=seed, test_seconds=round(seconds, 1),
                                 level_share=[round(float(v), 3) for v in share / share.sum()],
                                 bootstrap_vs_single=paired_bootstrap(single, detections_of(outp), test_set)))
        del out

        # (a) classification only (lambda = 0), then stage-wise: its regressor trained alone
        trainer0, m0, rec = train(dict(s, loss_lambda=0.0), train_set, props['trainval'], args.work,
                                  f'lambda0_{seed}')
        runs.append(dict(variant='lambda0', seed=seed, **rec))
        out0 = score_set(m0, test_set, props['test'], **net)
        record('lambda0/no_bbox_reg', seed, voc_map(out0, test_set, regress=False))
        model = trainer0.model
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith('bbox_pred.')
        _, ms, rec = train(dict(s, loss_lambda=1.0), train_set, props['trainval'], args.work,
                           f'stagewise_{seed}', model=model)
        runs.append(dict(variant='stagewise', seed=seed, **rec))
        # only bbox_pred differs from the lambda = 0 network: its fc7 and scores serve
        for o in out0:
            with no_grad():
                deltas = ms.bbox_pred(Tensor(o['fc7'])).numpy()
            H, W = o['image_size']
            o['boxes'] = bx.clip_boxes(bx.decode(o['proposals'], deltas), H, W).astype(np.float32)
        record('stagewise/bbox_reg', seed, voc_map(out0, test_set))
        del out0

        # (b) all conv layers frozen
        _, mf, rec = train(dict(s, freeze_stages=5), train_set, props['trainval'], args.work, f'frozen_{seed}')
        runs.append(dict(variant='conv_frozen', seed=seed, **rec))
        record('conv_frozen/bbox_reg', seed, voc_map(score_set(mf, test_set, props['test'], **net), test_set))

        # (c) half of the training images, as many iterations
        _, mh, rec = train(s, half, props['trainval'], args.work, f'half_{seed}')
        runs.append(dict(variant='half_data', seed=seed, **rec))
        record('half_data/bbox_reg', seed, voc_map(score_set(mh, test_set, props['test'], **net), test_set))
        result = save(seed + 1)

    wall = time.time() - start_all
    print(f'\n{"variant/test":<32} mAP (mean +- std over {args.seeds} seeds; min-max)')
    for k, v in result['summary'].items():
        print(f"{k:<32} {v['mean']:.3f} +- {v['std']:.3f}  ({v['min']:.3f}-{v['max']:.3f})")
    print(f'wrote {args.out}; {wall / 60:.1f} minutes on {result["cpu"]}')
    return result


if __name__ == '__main__':
    main()
