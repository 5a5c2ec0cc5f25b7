# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 7. Results: mAP, precision/recall, and "are more proposals always better?" (Sec. 4, 5.5)
#
# Detection is scored with PASCAL VOC's average precision (AP): per class, detections of all
# test images are ranked by score; a detection is a true positive if it overlaps a not yet
# matched ground-truth box of its class with IoU above 0.5 (strictly or not: see below), else a
# false positive; AP summarises the precision/recall curve (VOC07: the mean of the best precision at
# recall $\ge 0, 0.1, ..., 1$), and mAP is the mean over classes.
#
# Fast R-CNN with VGG16 reaches 66% mAP on VOC 2012 (R-CNN: 62%) and runs its network in about
# 0.3 s per image on a GPU (R-CNN: 47 s; Table 4). That time **excludes the proposals**: the
# paper's test times leave out selective search, which takes another 1.5-2 s per image on a CPU
# (Faster R-CNN, Sec. 1 and Table 5), several times the network's own time. Below, both are
# measured on this machine.
#
# Here the detector is the CPU demo's: vgg-tiny on the synthetic shapes set, trained by
# `make demo` (about 3 minutes on a 2-core CPU) and kept in `tinyrcnn/assets/` with its weights rounded
# to float16 (4 MB instead of 8). It was made by
#
#     python -m tinyrcnn demo --out out/demo
#     python -m tinyrcnn convert-weights out/demo/model.npz tinyrcnn/assets/demo_model.npz --float16
#     cp out/demo/model.json tinyrcnn/assets/demo_model.json
#
# and is tested here on the demo's whole test split (100 images), the images `make demo`
# reports its mAP on. Without that file this notebook trains a smoke-sized model (30 iterations)
# and tests it on 6 images, enough to run every step below, but far too short for its numbers to
# mean anything.

# %%
import dataclasses
import inspect
import json
import os
import pathlib
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

import tinyrcnn as tr
import tinyrcnn.speed
from tinyrcnn.boxes import box_iou
from tinyrcnn.data import VOCDetection, make_shapes_voc
from tinyrcnn.demo import DATA, demo_settings
from tinyrcnn.eval import evaluate_voc, format_ap_table
from tinyrcnn.export import load_model
from tinyrcnn.fast_rcnn.detect import im_detect, postprocess
from tinyrcnn.proposals import compute_dataset_proposals, selective_search
from tinyrcnn.train import FastRCNNTrainer, TrainConfig
from tinyrcnn.viz import draw_detections, plot_pr_curves

tinyrcnn.speed.enable()   # detection over thousands of proposals: the CPU speed paths on

ROOT = pathlib.Path(tr.__file__).resolve().parents[1]
work = pathlib.Path(tempfile.mkdtemp(prefix='tinyrcnn-ch7-'))   # scratch: data, proposal cache, pictures
demo_model = ROOT / 'tinyrcnn' / 'assets' / 'demo_model.json'
trained = demo_model.exists()
chapter_start = time.perf_counter()

# %% [markdown]
# ## The demo model is not trained as in Sec. 2.3
#
# The paper fine-tunes ImageNet-pretrained VGG16 with SGD (momentum 0.9, weight decay 0.0005,
# learning rate 0.001 for 30k iterations then 0.0001 for 10k), keeps VGG16's dropout in fc6 and
# fc7, leaves conv1 and conv2 fixed (Sec. 4.5), and trains at scale 600. The defaults of `TrainConfig` are
# those settings; the CPU demo (`tinyrcnn.demo.CPU_DEMO`) departs from them as printed here, so
# its numbers below are this small model's, not a reproduction of the paper's.

# %%
paper, demo = dataclasses.asdict(TrainConfig()), demo_settings('cpu')
bookkeeping = {'checkpoint_every', 'threads', 'device', 'seed', 'keep_checkpoints', 'skip_nonfinite',
               'weights'}                                   # printed below
print(f'{"setting":<20} {"Sec. 2.3 (TrainConfig)":<24} CPU demo')
for key in paper:
    if key not in bookkeeping and paper[key] != demo[key]:
        before = "0.5 (VGG16's)" if key == 'dropout' and paper[key] is None else paper[key]
        print(f'{key:<20} {str(before):<24} {demo[key]}')
print(f"weights: {os.path.basename(demo['weights'])}, vgg-tiny trained to classify crops of rendered "
      'shapes (train/pretrain.py), the stand-in for ImageNet pretraining')

# %% [markdown]
# ## The detector, the test images and their proposals
#
# Selective search ('fast' mode, at most 2000 boxes, as the demo tests with; it trained on the
# cheaper 'single' strategy) runs over the test images once, one process per core, into a cache in the scratch folder
# (`compute_dataset_proposals`).

# %%
start = time.perf_counter()
if trained:
    model, info = load_model(str(demo_model.with_suffix('')))   # the path without extension
    # the shipped model was trained with the CPU demo's settings printed above
    assert (info['trunk'], tuple(info['scales']), info['max_size']) == \
        (demo['trunk'], tuple(demo['scales']), demo['max_size'])
    # the demo's data set: image i is drawn from generator (seed, i), so with the demo's seed and
    # number of training images these are its test images, byte for byte
    root = make_shapes_voc(work / 'shapes', num_train=DATA['num_train'], num_test=DATA['num_test'],
                           seed=0, only_test=True)
    test_set = VOCDetection(root, 'test')
    print(f'trained demo model: {info["trunk"]}, classes {info["class_names"]}')
else:
    root = make_shapes_voc(work / 'shapes', num_train=12, num_test=6, seed=0, image_size=(96, 128))
    train_set, test_set = VOCDetection(root, 'trainval'), VOCDetection(root, 'test')
    train_props = compute_dataset_proposals(train_set, work / 'proposals_train.npz')
    cfg = TrainConfig(trunk='vgg-tiny', freeze_stages=0, scales=(112,), max_size=160, source='tiny',
                      lr=0.01, iterations=30, step_size=30, rois_per_batch=64)
    trainer = FastRCNNTrainer(cfg, train_set, train_props, out_dir=None)
    trainer.run(show_progress=False)
    model, info = load_model(trainer.export(str(work / 'model')))
    print(f'no {demo_model.relative_to(ROOT)}: trained a smoke-sized model, {cfg.iterations} iterations '
          f'on {len(train_set)} images (loss {trainer.history[0][1]:.2f} -> {trainer.history[-1][1]:.2f})')
net_args = dict(scales=tuple(info['scales']), max_size=info['max_size'], source=info['source'])
class_names = test_set.class_names
num_test = len(test_set)
images = [test_set[i] for i in range(num_test)]
print(f'{num_test} test images ({time.perf_counter() - start:.0f} s so far)')

start = time.perf_counter()
cached = compute_dataset_proposals(test_set, work / 'proposals_test.npz', 'fast', max_proposals=2000)
proposals = [cached[item['id']] for item in images]
pool_seconds = time.perf_counter() - start
counts = np.array([len(p) for p in proposals])
median_proposals = int(np.median(counts))
print(f'selective search: {pool_seconds:.0f} s for {num_test} images on all cores; proposals per image: '
      f'median {median_proposals}, min {counts.min()}, max {counts.max()}')

# %% [markdown]
# The cache's wall time is shared among the cores; one image in one process, as a detector
# would run it, takes this long (and gives the cached boxes):

# %%
start = time.perf_counter()
for i in range(3):
    assert np.array_equal(selective_search(images[i]['image'], 'fast', 2000), proposals[i])
proposal_seconds = (time.perf_counter() - start) / 3
print(f'selective search: {proposal_seconds:.2f} s per image (one process, mean of 3)')

# %% [markdown]
# ## mAP and precision/recall
#
# One forward pass per image scores all its proposals (`im_detect`); `postprocess` applies the
# per-class threshold and NMS. Because each proposal is scored independently, the detections
# that the best $k$ proposals would give are `postprocess` of the first $k$ rows: one pass
# serves every experiment below.
#
# Average precision (`tinyrcnn/eval/voc.py`): detections of a class ranked over all images, each
# matched to the ground truth it overlaps most, a hit if that IoU is **strictly above** 0.5 and
# the ground truth is not yet taken; difficult objects are neither hits nor misses; then
# VOC2007's 11-point average of the precision envelope. The strict `>` is py-faster-rcnn's
# `voc_eval.py` (`if ovmax > ovthresh`), the Python evaluation released with Faster R-CNN; the
# VOC devkit's MATLAB `VOCevaldet`, which Fast R-CNN's own code called, uses `>=`
# (`ovmax>=VOCopts.minoverlap`). tinyrcnn follows the Python code so that its numbers compare
# with what the released Python code prints; the two rules differ only for a detection whose
# best IoU is exactly 0.5 (counted further below).

# %%
print(inspect.getsource(tr.eval.voc_ap))

# %%
start = time.perf_counter()
raw = [im_detect(model, item['image'], p, **net_args)[:2] for item, p in zip(images, proposals)]
network_seconds = (time.perf_counter() - start) / num_test
ground_truths = [dict(boxes=item['boxes'], labels=item['labels'], difficult=item['difficult']) for item in images]
detections = [postprocess(scores, boxes) for scores, boxes in raw]
result = evaluate_voc(detections, ground_truths, class_names)
print(format_ap_table(result))
print(f'network: {network_seconds:.2f} s per image (CPU, {median_proposals} proposals in the median); '
      f'selective search: {proposal_seconds:.2f} s per image; together {network_seconds + proposal_seconds:.2f} s')
print('the paper (VGG16, GPU): 0.32 s network + 1.5-2 s selective search on a CPU')
display(Image(plot_pr_curves(result, str(work / 'pr_curves.png'))))

# %% [markdown]
# How many detections sit exactly on the boundary, where `>` and `>=` part ways?

# %%
best = np.concatenate([box_iou(d['boxes'][d['labels'] == k], g['boxes'][g['labels'] == k]).max(axis=1)
                       for d, g in zip(detections, ground_truths) for k in range(1, len(class_names) + 1)
                       if (d['labels'] == k).any() and (g['labels'] == k).any()])
print(f'{len(best)} detections with a ground truth of their class in their image; best IoU exactly 0.5: '
      f'{int((best == 0.5).sum())}')

# %% [markdown]
# Detections scoring at least 0.5 (coloured) and the ground truth (dashed white):

# %%
for i in range(3):
    path = draw_detections(images[i]['image'], detections[i], class_names, str(work / f'det{i}.png'),
                           score_min=0.5, ground_truth=images[i])
    display(Image(path, width=300))

# %% [markdown]
# ## Are more proposals always better? (Sec. 5.5)
#
# **The paper's experiment.** Using selective search's *quality* mode, the paper sweeps from 1k
# to 10k proposals per image, **re-training and re-testing** model M (VGG_CNN_M_1024) at each
# point, and plots VOC07 mAP together with the proposals' **Average Recall** (AR, Hosang et
# al.): mAP rises and then falls slightly as the count grows, while AR keeps rising. AR
# correlates with mAP for a fixed number of proposals per image, but a higher AR from *more*
# proposals does not mean a higher mAP (Fig. 3).
#
# **What this chapter can do.** One model (trained on fast-mode proposals) is tested on the top
# $k$ of each image's ranked fast-mode proposals; nothing is re-trained. An image with fewer
# than $k$ proposals gives all of them, so past the median count the top $k$ of most images
# stop changing: $k$ therefore runs up to the median number of proposals per image.
#
# **Average Recall.** Recall at IoU threshold $t$ is the fraction of objects whose best IoU with
# any of the $k$ proposals is at least $t$; AR averages it over $t \in [0.5, 1]$:
# $\mathrm{AR} = 2\int_{0.5}^{1} \mathrm{recall}(t)\,dt$, which for objects with best IoUs
# $o_j$ is exactly $\frac{2}{n}\sum_j \max(o_j - 0.5, 0)$. Recall at 0.5 only asks whether an
# object is found at all; AR also rewards finding it *precisely*. Difficult objects are left
# out, as in AP. The closed form, checked against the average over a fine grid of thresholds:

# %%
def best_ious(gt, boxes):
    """Each non-difficult ground-truth box's best IoU with any of `boxes`, (G,)."""
    gt_boxes = gt['boxes'][~gt['difficult']]
    if len(boxes) == 0:
        return np.zeros(len(gt_boxes))
    return box_iou(gt_boxes, boxes).max(axis=1) if len(gt_boxes) else np.zeros(0)


o = np.concatenate([best_ious(gt, p[:100]) for gt, p in zip(ground_truths, proposals)])
grid = np.linspace(0.5, 1.0, 2001)
ar_grid = np.mean([(o >= t).mean() for t in grid])
ar_closed = 2 * np.maximum(o - 0.5, 0).mean()
print(f'top 100 proposals: AR {ar_closed:.4f} (closed form), {ar_grid:.4f} (mean over {len(grid)} thresholds)')
assert abs(ar_closed - ar_grid) < 2e-3

# %% [markdown]
# **Error bars.** With a hundred test images, differences of a point or two in mAP can be luck
# of the draw. The bootstrap asks how much: redraw the test set's images with replacement (1000
# times), recompute each number on the redrawn set, and take the middle 95% of the values.
#
# Recomputing mAP 1000 times with `evaluate_voc` per $k$ would take minutes, but a detection's
# outcome (true positive, false positive, or ignored on a difficult object) depends only on the
# detections of its own image, so it is found once; a redrawn set is then a weight per image
# (how often it was drawn), and each class's precision/recall curve is a weighted cumulative
# sum, scored with `voc_ap`'s 11-point rule for all redrawn sets at once. `outcomes` follows
# `evaluate_voc`'s matching rule, and the asserts below check that the shortcut gives
# `evaluate_voc`'s APs (to 1e-12), on the test set and on redrawn sets written out image by image.

# %%
def outcomes(detections, ground_truths, k, iou_threshold=0.5):
    """For class k, every detection of every image: (image index, score, hit, counted) arrays,
    with evaluate_voc's rule (a hit takes its ground truth; a hit on a difficult one, counted=0,
    is ignored; a second hit on a taken one is a false positive)."""
    rows = []
    for i, (d, g) in enumerate(zip(detections, ground_truths)):
        mine = d['labels'] == k
        scores, boxes = d['scores'][mine], d['boxes'][mine]
        gt, difficult = g['boxes'][g['labels'] == k], g['difficult'][g['labels'] == k].astype(bool)
        taken = np.zeros(len(gt), bool)
        for r in np.argsort(-scores, kind='stable'):
            hit, counted = 0, 1
            if len(gt):
                iou = box_iou(boxes[r:r + 1], gt)[0]
                j = int(np.argmax(iou))
                if iou[j] > iou_threshold:
                    if difficult[j]:
                        counted = 0
                    elif not taken[j]:
                        hit, taken[j] = 1, True
            rows.append((i, scores[r], hit, counted))
    return np.array(rows, dtype=np.float64).reshape(-1, 4).T


def bootstrap_ap(detections, ground_truths, weights):
    """AP per class (K,) for each row of image weights (B, N) -> (B, K); NaN where a class has
    no ground truth in the redrawn set."""
    npos = np.array([[int(((g['labels'] == k) & ~g['difficult'].astype(bool)).sum()) for k in
                      range(1, len(class_names) + 1)] for g in ground_truths])      # (N, K)
    aps = np.full((len(weights), len(class_names)), np.nan)
    for c in range(len(class_names)):
        image, score, hit, counted = outcomes(detections, ground_truths, c + 1)
        order = np.argsort(-score, kind='stable')   # image order breaks ties, as in evaluate_voc
        w = weights[:, image[order].astype(int)]                                    # (B, D)
        tp = np.cumsum(w * hit[order], axis=1)
        n = np.cumsum(w * counted[order], axis=1)
        positives = weights @ npos[:, c]                                            # (B,)
        with np.errstate(invalid='ignore', divide='ignore'):
            recall = tp / positives[:, None]
        precision = tp / np.maximum(n, np.finfo(float).eps)
        # voc_ap's 11-point rule, all redrawn sets at once: the best precision at recall >= t
        best = [np.where(recall >= t, precision, 0).max(axis=1) if recall.shape[1] else np.zeros(len(w))
                for t in np.arange(0.0, 1.1, 0.1)]
        aps[:, c] = np.where(positives > 0, np.sum(best, axis=0) / 11.0, np.nan)
    return aps


rng = np.random.default_rng(0)
B = 1000
weights = rng.multinomial(num_test, np.full(num_test, 1 / num_test), size=B).astype(float)   # (B, N)

# the shortcut is evaluate_voc: on the test set (all weights 1) and on three redrawn sets
check = np.vstack([np.ones(num_test), weights[:3]])
fast = bootstrap_ap(detections, ground_truths, check)
for row, aps in zip(check, fast):
    drawn = np.repeat(np.arange(num_test), row.astype(int))
    slow = evaluate_voc([detections[i] for i in drawn], [ground_truths[i] for i in drawn], class_names)
    assert np.allclose(aps, [slow['ap'][n] for n in class_names], equal_nan=True, rtol=0, atol=1e-12)
print('bootstrap shortcut == evaluate_voc on the test set and 3 redrawn sets')

# %% [markdown]
# Now every $k$ up to the median number of proposals: mAP, AR and recall at IoU 0.5, each with
# its 95% bootstrap interval (the same 1000 redrawn sets for every number).

# %%
start = time.perf_counter()
def interval(values):
    return np.nanpercentile(values, [2.5, 97.5])            # the middle 95% of the resamples


def cell(r, name):
    return f'{r[name]:.3f} [{r[name + "_ci"][0]:.3f}, {r[name + "_ci"][1]:.3f}]'


ks = [k for k in (10, 20, 50, 100, 200, 300) if k < median_proposals] + [median_proposals]
rows = []
for k in ks:
    dets = [postprocess(scores[:k], boxes[:k]) for scores, boxes in raw]
    m = evaluate_voc(dets, ground_truths, class_names)['map']
    with np.errstate(invalid='ignore'):
        boot_map = np.nanmean(bootstrap_ap(dets, ground_truths, weights), axis=1)    # (B,)
    o = [best_ious(gt, p[:k]) for gt, p in zip(ground_truths, proposals)]
    n_obj = np.array([len(x) for x in o], float)                                    # (N,)
    ar_sum = np.array([2 * np.maximum(x - 0.5, 0).sum() for x in o])
    hit_sum = np.array([(x >= 0.5).sum() for x in o], float)
    with np.errstate(invalid='ignore'):
        boot_ar, boot_recall = weights @ ar_sum / (weights @ n_obj), weights @ hit_sum / (weights @ n_obj)
    rows.append(dict(k=k, map=m, ar=ar_sum.sum() / n_obj.sum(), recall=hit_sum.sum() / n_obj.sum(),
                     boot_map=boot_map, map_ci=interval(boot_map), ar_ci=interval(boot_ar), recall_ci=interval(boot_recall),
                     images_with_k=(counts >= k).mean()))
print(f'{int(sum(len(x) for x in o))} objects (non-difficult) in {num_test} images; '
      f'{B} bootstrap resamples of the images ({time.perf_counter() - start:.0f} s)')
print(f'{"k":>5} {"images with >= k":>17}  {"mAP [95% CI]":>22}  {"AR [95% CI]":>22}  {"recall@0.5 [95% CI]":>22}')
for r in rows:
    print(f'{r["k"]:5d} {r["images_with_k"]:17.0%}  {cell(r, "map"):>22}  {cell(r, "ar"):>22}  '
          f'{cell(r, "recall"):>22}')
print(f'all proposals (up to 2000, median {median_proposals}): mAP {result["map"]:.3f}')
assert all(b['recall'] >= a['recall'] and b['ar'] >= a['ar'] for a, b in zip(rows, rows[1:]))  # only grow with k

fig, ax = plt.subplots(figsize=(6.5, 4))
x = np.array(ks)
for name, label, style in (('map', 'mAP (VOC07)', 'o-'), ('ar', 'Average Recall (IoU 0.5-1)', 's-'),
                           ('recall', 'recall at IoU 0.5', '^--')):
    y, ci = np.array([r[name] for r in rows]), np.array([r[name + '_ci'] for r in rows])
    line, = ax.plot(x, y, style, label=label)
    ax.fill_between(x, ci[:, 0], ci[:, 1], color=line.get_color(), alpha=0.2)
ax.set(xscale='log', xlabel=f'top k selective-search proposals per image (up to the median, {median_proposals})',
       ylim=(0, 1.02), title=f'mAP, AR and recall against k, {num_test} test images, 95% bootstrap intervals'
       + ('' if trained else '\n(smoke-sized model: its mAP means nothing)'))
ax.title.set_fontsize(9)
ax.grid(alpha=0.3)
ax.legend(loc='lower right')
plt.show()

# %% [markdown]
# ## How much would another training run say? (seeds)
#
# The intervals above redraw the *test images* of one trained model. The other source of spread
# is the training run itself: another seed gives another synthetic data set, other initial
# weights, another order of mini-batches, and another mAP. `python -m tinyrcnn demo --seeds 3`
# runs a demo once per seed (0, 1, 2) and prints the mean and the sample standard deviation;
# `notebooks/runs/demo_seeds.py` ran it for both demos and stored what it printed, read here
# (running it again takes about 15 minutes on 2 CPU cores). A single demo number, such
# as the README's, is one draw from this spread.

# %%
seeds = json.loads((ROOT / 'notebooks' / 'runs' / 'demo_seeds.json').read_text())
print(f"`{seeds['command']}`, {seeds['cpu']}, {seeds['date']}, commit {seeds['git_commit']}")
names = {'fast': 'Fast R-CNN demo', 'faster': 'Faster R-CNN demo'}
for model, m in seeds['models'].items():
    per_seed = ', '.join(f"seed {r['seed']} {r['map']:.3f}" for r in m['rows'])
    print(f"{names[model]:<18} mAP {m['mean']:.3f} +- {m['std']:.3f} (sample std, {len(m['rows'])} seeds: {per_seed})")

spreads = [max(r['map'] for r in m['rows']) - min(r['map'] for r in m['rows']) for m in seeds['models'].values()]
print(f"range over the seeds: {', '.join(f'{d:.3f}' for d in spreads)}; width of this chapter's "
      f"95% test-set interval: {rows[-1]['map_ci'][1] - rows[-1]['map_ci'][0]:.3f}")

fig, ax = plt.subplots(figsize=(8.5, 3.2))
for x, (model, m) in enumerate(seeds['models'].items()):
    maps = [r['map'] for r in m['rows']]
    ax.plot([x] * len(maps), maps, 'o', alpha=0.6, label='one seed' if x == 0 else None, color='C0')
    ax.errorbar(x + 0.15, m['mean'], yerr=m['std'], fmt='s', color='C1', capsize=4,
                label='mean +- std over seeds' if x == 0 else None)
lo, hi = rows[-1]['map_ci']               # this chapter's model, its test images redrawn
ax.errorbar(-0.15, rows[-1]['map'], yerr=[[rows[-1]['map'] - lo], [hi - rows[-1]['map']]], fmt='^',
            color='C2', capsize=4, label=f'95% bootstrap over test images (k = {rows[-1]["k"]}, this chapter)')
ax.set(xticks=range(len(seeds['models'])), xticklabels=[names[m] for m in seeds['models']],
       xlim=(-0.6, len(seeds['models']) - 0.4), ylabel='mAP@0.5 (VOC07)',
       title='The demos over seeds, beside the test-set interval of one model')
ax.title.set_fontsize(9)
ax.grid(alpha=0.3, axis='y')
ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1))
plt.show()

# %% [markdown]
# Three seeds make a rough standard deviation (its own uncertainty is large: with three draws it
# could be half or twice the true one), but the order of magnitude is the point: the runs of one
# recipe spread over several points of mAP, a good part of the test-set interval's width, so a
# difference of a point or two between two settings, from one run each, says little. Chapter 12's design
# evaluations average two seeds for that reason.

# %% [markdown]
# ## Summary
#
# * mAP follows `evaluate_voc`: one match per ground truth, difficult objects ignored, 11-point
#   AP, a hit when IoU is strictly above 0.5 as in py-faster-rcnn's `voc_eval.py` (the MATLAB
#   devkit has $\ge$; the two differ only at exactly 0.5, counted above). `plot_pr_curves` draws
#   each class's curve.
# * The paper's 0.3 s per image is the network alone; selective search adds 1.5-2 s to it. This
#   chapter's network and selective-search times per image are printed above and again below.
# * Scoring the proposals once and post-processing the top $k$ shows how mAP, AR and recall at
#   0.5 depend on $k$ for one fixed model, with bootstrap intervals over the test images. This
#   is not Sec. 5.5's experiment (which re-trains at each of 1k-10k quality-mode proposals); on
#   these small images selective search gives only a few hundred boxes, so $k$ stops at their
#   median. Where the intervals of two $k$ overlap, this test set cannot tell them apart; the
#   last lines below compare the largest $k$ with the best one on the same redrawn sets (a
#   paired interval of the difference).
# * Another seed is another training run: `demo --seeds 3` measures that spread (mean and
#   standard deviation above), which one reported number does not show.

# %%
first, last = rows[0], rows[-1]
print(f'network {network_seconds:.2f} s + selective search {proposal_seconds:.2f} s per image')
for r in (first, last):
    print(f'k = {r["k"]}: mAP {cell(r, "map")}, AR {cell(r, "ar")}, recall@0.5 {cell(r, "recall")}')
if len(rows) > 1:
    peak = max(rows[:-1], key=lambda r: r['map'])
    diff = last['boot_map'] - peak['boot_map']       # the same redrawn sets: a paired difference
    lo, hi = np.nanpercentile(diff, [2.5, 97.5])
    print(f'mAP at k = {last["k"]} minus mAP at k = {peak["k"]} (the best smaller k): '
          f'{last["map"] - peak["map"]:+.3f}, 95% interval [{lo:+.3f}, {hi:+.3f}]; '
          f'AR {last["ar"] - peak["ar"]:+.3f}')
print(f'chapter run time {time.perf_counter() - chapter_start:.0f} s')

# %% [markdown]
# ## Exercises
#
# Each exercise has a code cell: put your answer in `answer` (it starts as `None`) and run the
# cell; it prints "correct", or "not yet" and a hint, by comparing with what tinyrcnn computes.
#
# 1. **AP by hand (Sec. 4).** A class has 4 ground-truth objects in the test set. Its 7
#    detections, ranked by score, are: hit, miss, hit, miss, hit, miss, miss (one object is never
#    found). Write down recall and precision after each detection, then compute the VOC07
#    11-point AP (`voc_ap`) and the VOC2010+ area under the precision envelope
#    (`use_07_metric=False`). Why do the thresholds 0.8, 0.9 and 1.0 add nothing to the first?
# 2. **Exactly 0.5.** A ground truth $[0, 0, 9, 9]$ and one detection $[0, 0, 9, 19]$ of its class
#    (0-based inclusive pixels, as everywhere in tinyrcnn). What is their IoU? What AP does
#    `evaluate_voc` give this one detection, and what would it be with the MATLAB devkit's
#    $\ge 0.5$ rule?
# 3. **Average Recall rewards precise boxes (Sec. 5.5).** Two proposal sets for the same four
#    objects give the objects the best IoUs A = (0.52, 0.55, 0.51, 0.60) and B = (0.95, 0.90,
#    0.30, 0.92). Which set has the higher recall at IoU 0.5? Compute the AR of each. Which set
#    would you expect to give the higher mAP after box regression, and which at COCO's stricter
#    thresholds (chapter 13)?

# %%
from tinyrcnn.utils import check_answer as check   # 'correct', or 'not yet' and a hint


# %%
# Exercise 1: answer = (11-point AP, area AP)
answer = None
hits = np.array([1, 0, 1, 0, 1, 0, 0])               # the ranked detections: 1 hit, 0 miss
tp, fp = np.cumsum(hits), np.cumsum(1 - hits)
recall, precision = tp / 4, tp / (tp + fp)
check(answer, [tr.eval.voc_ap(recall, precision), tr.eval.voc_ap(recall, precision, use_07_metric=False)],
      'at each t in 0, 0.1, ..., 1 take the best precision at recall >= t (0 if recall never gets '
      'there) and average the 11; the area sums (recall step) x (best precision at that recall or later)')

# %%
# Exercise 2: answer = (IoU, AP with tinyrcnn's > 0.5, AP with the devkit's >= 0.5)
answer = None
gt = [dict(boxes=np.array([[0, 0, 9, 9]], np.float32), labels=np.array([1]), difficult=np.array([False]))]
det = [dict(boxes=np.array([[0, 0, 9, 19]], np.float32), scores=np.array([0.9]), labels=np.array([1]))]
iou = float(box_iou(det[0]['boxes'], gt[0]['boxes'])[0, 0])
strict = evaluate_voc(det, gt, ['shape'])['map']
at_least = evaluate_voc(det, gt, ['shape'], iou_threshold=np.nextafter(0.5, 0))['map']  # > (just below 0.5)
check(answer, [iou, strict, at_least],
      'a box [x1, y1, x2, y2] is x2 - x1 + 1 pixels wide; one object and one detection give AP 1 '
      'if it is a hit and 0 if not')

# %%
# Exercise 3: answer = (AR of A, AR of B)
answer = None
best = [np.array([0.52, 0.55, 0.51, 0.60]), np.array([0.95, 0.90, 0.30, 0.92])]
t = np.linspace(0.5, 1.0, 100001)                    # AR: the mean recall over IoU thresholds in [0.5, 1]
check(answer, [(o[None, :] >= t[:, None]).mean() for o in best],
      'AR is the mean over t in [0.5, 1] of the fraction of objects with best IoU >= t; '
      'each object adds its share of that interval (the closed form above)')
