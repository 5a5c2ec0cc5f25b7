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
# matched ground-truth box of its class with IoU > 0.5, else a false positive; AP summarises the
# precision/recall curve (VOC07: the mean of the best precision at recall $\ge 0, 0.1, ..., 1$),
# and mAP is the mean over classes. Fast R-CNN with VGG16 detects in about 0.3 s per image
# (R-CNN: 47 s) and reaches 66% mAP on VOC 2012 (R-CNN: 62%).
#
# Here the detector is the CPU demo's: vgg-tiny on the synthetic shapes set, trained by
# `make demo` (about 9 minutes on a 2-core CPU) and kept in `tinyrcnn/assets/` with its weights rounded
# to float16 (4 MB instead of 8). It was made by
#
#     python -m tinyrcnn demo --out out/demo
#     python -m tinyrcnn convert-weights out/demo/model.npz tinyrcnn/assets/demo_model.npz --float16
#     cp out/demo/model.json tinyrcnn/assets/demo_model.json
#
# Without that file this notebook trains a smoke-sized model (30 iterations), enough to run
# every step below, but far too short for its numbers to mean anything.

# %%
import inspect
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
from tinyrcnn.demo import DATA
from tinyrcnn.eval import evaluate_voc, format_ap_table
from tinyrcnn.export import load_model
from tinyrcnn.fast_rcnn.detect import im_detect, postprocess
from tinyrcnn.train import FastRCNNTrainer, TrainConfig
from tinyrcnn.viz import draw_detections, plot_pr_curves

tinyrcnn.speed.enable()   # detection over thousands of proposals: the CPU speed paths on

ROOT = pathlib.Path(tr.__file__).resolve().parents[1]
work = pathlib.Path(tempfile.mkdtemp(prefix='tinyrcnn-ch7-'))
demo_model = ROOT / 'tinyrcnn' / 'assets' / 'demo_model.json'
trained = demo_model.exists()

# %% [markdown]
# ## The detector and the test images

# %%
start = time.perf_counter()
if trained:
    model, info = load_model(str(demo_model.with_suffix('')))   # the path without extension
    # the demo's data set: image i is drawn from generator (seed, i), so with the demo's seed and
    # number of training images these are its first 20 test images, byte for byte
    root = make_shapes_voc(work / 'shapes', num_train=DATA['num_train'], num_test=20, seed=0,
                           only_test=True)
    test_set, num_test = VOCDetection(root, 'test'), 20
    print(f'trained demo model: {info["trunk"]}, classes {info["class_names"]}')
else:
    root = make_shapes_voc(work / 'shapes', num_train=12, num_test=6, seed=0, image_size=(96, 128))
    train_set, test_set, num_test = VOCDetection(root, 'trainval'), VOCDetection(root, 'test'), 6
    train_props = {train_set.ids[i]: tr.proposals.selective_search(train_set[i]['image'])
                   for i in range(len(train_set))}
    cfg = TrainConfig(trunk='vgg-tiny', freeze_stages=0, scales=(112,), max_size=160, source='tiny',
                      lr=0.01, iterations=30, step_size=30, rois_per_batch=64)
    trainer = FastRCNNTrainer(cfg, train_set, train_props, out_dir=None)
    trainer.run(show_progress=False)
    model, info = load_model(trainer.export(str(work / 'model')))
    print(f'no {demo_model.relative_to(ROOT)}: trained a smoke-sized model, {cfg.iterations} iterations '
          f'on {len(train_set)} images (loss {trainer.history[0][1]:.2f} -> {trainer.history[-1][1]:.2f})')
net_args = dict(scales=tuple(info['scales']), max_size=info['max_size'], source=info['source'])
class_names = test_set.class_names
images = [test_set[i] for i in range(num_test)]
proposals = [tr.proposals.selective_search(item['image'], max_proposals=2000) for item in images]
print(f'{num_test} test images, {np.mean([len(p) for p in proposals]):.0f} proposals per image on average '
      f'({time.perf_counter() - start:.0f} s so far)')

# %% [markdown]
# ## mAP and precision/recall
#
# One forward pass per image scores all its proposals (`im_detect`); `postprocess` applies the
# per-class threshold and NMS. Because each proposal is scored independently, the detections
# that the best $k$ proposals would give are `postprocess` of the first $k$ rows: one pass
# serves every experiment below.
#
# Average precision follows the VOC devkit (`tinyrcnn/eval/voc.py`): detections of a class ranked
# over all images, each matched to the unmatched ground truth it overlaps most (IoU > 0.5),
# difficult objects neither hits nor misses; then VOC2007's 11-point average of the precision
# envelope:

# %%
print(inspect.getsource(tr.eval.voc_ap))

# %%
start = time.perf_counter()
raw = [im_detect(model, item['image'], p, **net_args)[:2] for item, p in zip(images, proposals)]
seconds = (time.perf_counter() - start) / num_test
ground_truths = [dict(boxes=item['boxes'], labels=item['labels'], difficult=item['difficult']) for item in images]
detections = [postprocess(scores, boxes) for scores, boxes in raw]
result = evaluate_voc(detections, ground_truths, class_names)
print(format_ap_table(result))
print(f'{seconds * 1000:.0f} ms per image for the network (proposals excluded)')
display(Image(plot_pr_curves(result, str(work / 'pr_curves.png'))))

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
# Selective search ranks its proposals; we keep the top $k$ for $k$ from 10 to 2000. The
# paper (Fig. 3) finds that mAP rises and then falls slightly as $k$ grows, while the recall
# of the proposals keeps rising: more proposals are not always better, and proposal recall is
# a poor predictor of detection mAP.

# %%
ks = [10, 25, 50, 100, 200, 500, 1000, 2000]
maps, recalls = [], []
for k in ks:
    dets = [postprocess(scores[:k], boxes[:k]) for scores, boxes in raw]
    maps.append(evaluate_voc(dets, ground_truths, class_names)['map'])
    hit = [box_iou(gt['boxes'][~gt['difficult']], p[:k]).max(axis=1) >= 0.5
           for gt, p in zip(ground_truths, proposals) if (~gt['difficult']).any()]
    recalls.append(np.concatenate(hit).mean())
for k, m, r in zip(ks, maps, recalls):
    print(f'top {k:4d} proposals: mAP {m:.3f}, recall@0.5 {r:.3f}')
assert all(b >= a for a, b in zip(recalls, recalls[1:]))      # recall can only grow with k

fig, ax = plt.subplots(figsize=(6.5, 3.8))
ax.plot(ks, maps, 'o-', label='mAP (VOC07)')
ax.plot(ks, recalls, 's--', label='proposal recall at IoU 0.5')
ax.set(xscale='log', xlabel='proposals per image (top k of selective search)', ylim=(0, 1.02),
       title='mAP and proposal recall against the number of proposals'
       + ('' if trained else '\n(smoke-sized model: its mAP means nothing)'))
ax.grid(alpha=0.3)
ax.legend()
plt.show()

# %% [markdown]
# ## Summary
#
# * mAP is computed with the VOC devkit's rules (`evaluate_voc`: IoU > 0.5, one match per ground
#   truth, difficult objects ignored, 11-point AP), and `plot_pr_curves` draws each class's curve.
# * Scoring the proposals once and post-processing the top $k$ shows how mAP and proposal recall
#   depend on the number of proposals: recall keeps growing, mAP need not. With the demo model
#   on these 20 images, recall reaches 1.0 at 200 proposals, where mAP peaks (0.871) before
#   settling at 0.864: the paper's observation in miniature.
