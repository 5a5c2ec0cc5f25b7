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
# # 6. Fast R-CNN detection: per-class NMS and truncated SVD (Sec. 3, 3.1)
#
# At test time the network takes an image and its ~2000 proposals and outputs, for every
# proposal $r$ and class $k$, a probability $p_k$ and a refined box. Many proposals cover the
# same object, so each class goes through **non-maximum suppression** independently, as in
# R-CNN. And because the fully connected layers run once per proposal, they take nearly half of
# the detection time: **truncated SVD** compresses them.

# %%
import inspect
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

import tinyrcnn as tr
import tinyrcnn.speed
from tinyrcnn.bench import timeit
from tinyrcnn.boxes import batched_nms, box_iou, nms
from tinyrcnn.data import SHAPES_CLASSES, VOCDetection, make_shapes_voc
from tinyrcnn.data.shapes import render_shapes_image
from tinyrcnn.demo import DATA, demo_settings
from tinyrcnn.eval import evaluate_voc
from tinyrcnn.export import DEMO_MODEL, load_model
from tinyrcnn.fast_rcnn.detect import im_detect, postprocess
from tinyrcnn.fast_rcnn.svd import svd_linear
from tinyrcnn.train import TrainConfig

tinyrcnn.speed.enable()   # detection over thousands of proposals: the CPU speed paths on
rng = np.random.default_rng(0)
tr.manual_seed(0)

# %% [markdown]
# ## Per-class non-maximum suppression
#
# Greedy NMS visits the boxes by decreasing score and drops every box whose IoU with a box
# already kept is above a threshold (0.3 in Fast R-CNN's test code). Fast R-CNN does this **per
# class**: a cross overlapping a ring must not suppress it. Below, twelve jittered, scored
# detections per object of a synthetic image.

# %%
image, objects, _ = render_shapes_image(np.random.default_rng(26), 240, 320)
gt = np.array([o['box'] for o in objects], np.float32)                      # (G, 4)
gt_labels = np.array([SHAPES_CLASSES.index(o['name']) + 1 for o in objects])
k = np.repeat(np.arange(len(gt)), 12)
size = (gt[k, 2:] - gt[k, :2] + 1)
boxes = (gt[k] + rng.normal(0, 0.08, (len(k), 4)) * np.hstack([size, size])).astype(np.float32)  # (D, 4)
scores = rng.uniform(0.3, 1.0, len(k)).astype(np.float32)
labels = gt_labels[k]

keep = batched_nms(boxes, scores, labels, 0.3)                                # indices, best first
keep_agnostic = nms(boxes, scores, 0.3)                                       # one NMS over all classes
print(f'{len(boxes)} detections -> per-class NMS keeps {len(keep)}, class-agnostic NMS keeps {len(keep_agnostic)}')
print('objects:', [o['name'] for o in objects])

# the contract: kept boxes of one class overlap by at most 0.3; every dropped box overlaps a kept
# box of its class, with a higher score, by more than 0.3
for c in np.unique(labels):
    kc = keep[labels[keep] == c]
    iou = box_iou(boxes[kc], boxes[kc])
    assert (iou[~np.eye(len(kc), dtype=bool)] <= 0.3).all()
dropped = np.setdiff1d(np.arange(len(boxes)), keep)
for d in dropped:
    same = keep[(labels[keep] == labels[d]) & (scores[keep] >= scores[d])]
    assert (box_iou(boxes[d:d + 1], boxes[same]) > 0.3).any()

fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
titles = ('before NMS', 'per-class NMS (Fast R-CNN)', 'class-agnostic NMS')
for ax, title, idx in zip(axes, titles, (np.arange(len(boxes)), keep, keep_agnostic)):
    ax.imshow(image)
    for i in idx:
        x1, y1, x2, y2 = boxes[i]
        colour = plt.cm.tab10(labels[i] % 10)
        ax.add_patch(Rectangle((x1, y1), x2 - x1 + 1, y2 - y1 + 1, fill=False, ec=colour, lw=1.5,
                               alpha=0.5 + 0.5 * (len(idx) < len(boxes))))
        if len(idx) < len(boxes):
            ax.text(x1, y1 - 2, f'{SHAPES_CLASSES[labels[i] - 1]} {scores[i]:.2f}', color='white', fontsize=7,
                    bbox=dict(fc=colour, alpha=0.8, pad=1, ec='none'))
    ax.set_title(f'{title}: {len(idx)} boxes')
    ax.axis('off')
plt.show()

# %% [markdown]
# With one NMS over all classes, an object that overlaps a higher-scoring object of another
# class by more than the threshold would be lost. `postprocess` (used by `detect`, in
# `tinyrcnn/fast_rcnn/detect.py`) applies the per-class version after a score threshold
# (0.05), then keeps the 100 best detections per image. These two settings are not in the
# Fast R-CNN paper: they come from the `test_net` of py-faster-rcnn, the released Faster R-CNN
# code, which tinyrcnn follows.

# %%
print(inspect.getsource(postprocess))

# %% [markdown]
# ## The demo model
#
# The rest of the chapter uses the trained model that ships with the package
# (`tinyrcnn/assets/demo_model`, made by `python -m tinyrcnn demo`, see chapter 7). It is a
# Fast R-CNN, but not trained as in Sec. 2.3. Its settings (`CPU_DEMO` in `tinyrcnn/demo.py`)
# next to the paper's (`TrainConfig`'s defaults):

# %%
model, info = load_model(DEMO_MODEL)
net_args = dict(scales=tuple(info['scales']), max_size=info['max_size'], source=info['source'])
paper, demo = vars(TrainConfig()), demo_settings('cpu')
assert [info[k] for k in ('trunk', 'max_size', 'freeze_stages')] == [demo[k] for k in ('trunk', 'max_size', 'freeze_stages')]
assert tuple(info['scales']) == demo['scales']
shown = {None: "the trunk's (0.5)", 0: '0 (none)'}
for key in ('trunk', 'weights', 'optimizer', 'lr', 'step_size', 'iterations', 'weight_decay',
            'dropout', 'freeze_stages', 'scales', 'max_size', 'ims_per_batch', 'rois_per_batch'):
    a, b = paper[key], demo[key]
    a, b = (shown.get(v, v) if key in ('dropout', 'weight_decay') else v for v in (a, b))
    if key == 'weights':                         # the paper's: ImageNet VGG16, given with --weights
        a, b = 'ImageNet VGG16', os.path.basename(b)          # the file's name, not its path
    print(f'{key:20s} paper {str(a):18s} demo {str(b):18s}{"" if a == b else "  <- differs"}')

# %% [markdown]
# The departures: a small trunk (vgg-tiny) with no ImageNet weights, starting from weights
# taught to classify crops of rendered shapes (`tinyrcnn/assets/vgg_tiny_shapes.npz`, made by
# `tinyrcnn/train/pretrain.py`: the stand-in for Sec. 2.2's ImageNet VGG16), then fine-tuned
# with **Adam** instead of SGD with momentum 0.9, **no dropout**, **no weight decay** (the
# paper: 0.0005), **all stages trainable** (the paper freezes conv1 and conv2 of VGG16), on
# proposals of selective search's cheaper 'single' strategy (tested on 'fast' ones), for 1000
# iterations instead of 40k, on images with
# shorter side **288** (longer at most 480) instead of 600 (1000). What it shares with
# Sec. 2.3: $N = 2$ images and $R = 128$ RoIs per mini-batch, 25% foreground, the multi-task
# loss with $\lambda = 1$ and normalised targets. Its numbers describe this model on synthetic
# shapes, not VGG16 on VOC.
#
# ## Box regression at test time
#
# For each proposal the network outputs one box per class (chapter 4: offsets $t^k$ decoded
# against the proposal). `im_detect` returns the scores, the decoded boxes and the proposals.
# How much does the regression move a proposal towards its object? On the demo's first 20
# test images (`make_shapes_voc(..., only_test=True)` draws exactly those) with their
# selective-search proposals, we take every foreground proposal (IoU $\ge 0.5$ with a ground
# truth, the training definition) and compare its IoU with that ground-truth box before and
# after regression, using the box of the class the network predicts (the highest-scoring
# object class).

# %%
root = make_shapes_voc(tempfile.mkdtemp(prefix='tinyrcnn-ch6-'), DATA['num_train'], 20, seed=0,
                       only_test=True)
test_set = VOCDetection(root, 'test')
items = [test_set[i] for i in range(len(test_set))]
props = [tr.proposals.selective_search(item['image']) for item in items]
raw_full = [im_detect(model, it['image'], p, **net_args) for it, p in zip(items, props)]  # (scores, boxes, proposals)

K = model.num_classes
iou_before, iou_after, iou_true, right_class, shown_boxes = [], [], [], [], []
for it, (sc, bo, pr) in zip(items, raw_full):
    gt = it['boxes'][~np.asarray(it['difficult'], bool)].astype(np.float32)      # (G, 4)
    gt_labels = it['labels'][~np.asarray(it['difficult'], bool)]
    iou = box_iou(pr, gt)                                                        # (P, G)
    fg = np.flatnonzero(iou.max(1) >= 0.5)                                       # foreground proposals
    j = iou[fg].argmax(1)                                                        # their ground truth
    k = sc[fg, 1:].argmax(1) + 1                                                 # predicted class, 1..K
    per_class = bo.reshape(len(pr), K + 1, 4)[fg]                                # (F, K+1, 4)
    reg = per_class[np.arange(len(fg)), k]                                       # (F, 4) predicted class's box
    reg_true = per_class[np.arange(len(fg)), gt_labels[j]]                       # (F, 4) true class's box
    iou_before.append(iou[fg, j])
    iou_after.append(box_iou(reg, gt)[np.arange(len(fg)), j])
    iou_true.append(box_iou(reg_true, gt)[np.arange(len(fg)), j])
    right_class.append(k == gt_labels[j])
    shown_boxes.append((pr[fg], reg, gt, j))
iou_before, iou_after, iou_true, right_class = map(np.concatenate, (iou_before, iou_after, iou_true, right_class))
gain = iou_after - iou_before
print(f'{len(gain)} foreground proposals on {len(items)} test images; predicted class right for {right_class.mean():.0%}')
print(f'IoU with the ground truth: mean {iou_before.mean():.3f} before -> {iou_after.mean():.3f} after regression '
      f'({iou_true.mean():.3f} with the true class\'s box); improved for {(gain > 0).mean():.0%}; '
      f'IoU >= 0.7: {(iou_before >= 0.7).mean():.0%} before, {(iou_after >= 0.7).mean():.0%} after')
assert iou_after.mean() > iou_before.mean()

fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
busiest = np.argsort([-len(b[2]) for b in shown_boxes], kind='stable')[:2]   # the two images with most objects
for ax, n in zip(axes[:2], busiest):
    pr_fg, reg, gt, j = shown_boxes[n]
    ax.imshow(items[n]['image'])
    before_n = box_iou(pr_fg, gt)[np.arange(len(j)), j]
    for g in range(len(gt)):
        x1, y1, x2, y2 = gt[g]
        ax.add_patch(Rectangle((x1, y1), x2 - x1 + 1, y2 - y1 + 1, fill=False, ec='white', lw=3))
        mine = np.flatnonzero(j == g)
        if len(mine) == 0:
            continue
        i = mine[before_n[mine].argmin()]                                        # its worst proposal
        for (x1, y1, x2, y2), ls in ((pr_fg[i], '--'), (reg[i], '-')):
            ax.add_patch(Rectangle((x1, y1), x2 - x1 + 1, y2 - y1 + 1, fill=False, ec=plt.cm.tab10(g),
                                   lw=2, ls=ls))
    ax.set_title(f'test image {n}: worst proposal of each object')
    ax.axis('off')
fig.suptitle('proposal (dashed) and its box for the predicted class (solid); ground truth in white')
axes[2].scatter(iou_before, iou_after, s=6, alpha=0.5)
axes[2].plot([0.5, 1], [0.5, 1], 'k--', lw=1)
axes[2].set(xlabel='IoU of the proposal', ylabel='IoU after regression (predicted class)',
            title=f'mean {iou_before.mean():.2f} -> {iou_after.mean():.2f}, {(gain > 0).mean():.0%} improved')
fig.tight_layout()
plt.show()

# %% [markdown]
# Regression helps most where the proposal fits worst (the left of the scatter); a proposal
# that already fits well has little to gain and can lose a little. The box of the predicted
# class is what detection uses; the loss trains the true class's box, whose mean IoU is printed
# beside it.

# %% [markdown]
# ## Truncated SVD (Sec. 3.1)
#
# A fully connected layer $y = Wx + b$ with $W \in \mathbb{R}^{u \times v}$ costs $uv$
# multiplications per RoI. Its singular value decomposition, truncated to the $t$ largest
# singular values,
#
# $$W \approx U \Sigma_t V^\top,$$
#
# splits it into two layers, $\Sigma_t V^\top$ ($t \times v$, no bias) and $U$ ($u \times t$,
# with the original bias): $t(u + v)$ multiplications. In `tinyrcnn/fast_rcnn/svd.py`:

# %%
print(inspect.getsource(svd_linear))

# %% [markdown]
# For VGG16 the paper keeps the top 1024 singular values of fc6 and 256 of fc7:

# %%
for name, (u, v, t) in {'fc6': (4096, 25088, 1024), 'fc7': (4096, 4096, 256)}.items():
    print(f'{name}: {u * v / 1e6:6.1f} M -> {t * (u + v) / 1e6:5.1f} M multiplications per RoI '
          f'({u * v / (t * (u + v)):.1f}x fewer)')

# %% [markdown]
# We measure it on the demo model's vgg-tiny, with the same fractions of the ranks (fc6:
# 256 x 6272, rank 64; fc7: 256 x 256, rank 16). Truncation works when a few singular values
# carry most of the energy; beside the trained fc6, a random matrix of the same shape (what an
# untrained fc6 looks like) has a flat spectrum, the worst case.

# %%
W6 = model.classifier[0].weight.numpy()
singular = np.linalg.svd(W6.astype(np.float64), compute_uv=False)
energy = np.cumsum(singular ** 2) / np.sum(singular ** 2)
random_sv = np.linalg.svd(rng.standard_normal(W6.shape), compute_uv=False)
random_energy = np.cumsum(random_sv ** 2) / np.sum(random_sv ** 2)
print(f'fc6 {W6.shape}: the top 64 of {len(singular)} singular values hold {energy[63]:.0%} of the energy '
      f'(a random matrix of that shape: {random_energy[63]:.0%})')

fig, ax = plt.subplots(figsize=(6, 3.3))
ax.plot(np.arange(1, len(singular) + 1), singular / singular[0], label='trained fc6 (demo model)')
ax.plot(np.arange(1, len(random_sv) + 1), random_sv / random_sv[0], label='random, same shape')
ax.axvline(64, color='grey', ls='--', label='rank kept (64)')
ax.set(xlabel='index', ylabel='singular value / largest', yscale='log', title='fc6 spectrum')
ax.legend()
plt.show()

# %% [markdown]
# Detection before and after compression, on a synthetic image and its selective-search
# proposals; then the time of the fully connected layers for 2000 RoIs.

# %%
test_image, _, _ = render_shapes_image(np.random.default_rng(11), 200, 260)
proposals = tr.proposals.selective_search(test_image)                         # (P, 4)
scores_full, boxes_full, _ = im_detect(model, test_image, proposals, **net_args)  # (P, K+1), (P, 4(K+1))
x = tr.Tensor(np.random.default_rng(1).standard_normal((2000, W6.shape[1])).astype(np.float32))


def fc_time():
    with tr.no_grad():
        return timeit(lambda: model.classifier(x), repeats=5)


t_full = fc_time()
counts = model.compress(fc6_rank=64, fc7_rank=16)                            # in place
t_svd = fc_time()
scores_svd, boxes_svd, _ = im_detect(model, test_image, proposals, **net_args)

print(f"parameters {counts['parameters_before']:,d} -> {counts['parameters_after']:,d}")
print(f'fc6 + fc7 for 2000 RoIs: {t_full * 1000:.0f} ms -> {t_svd * 1000:.0f} ms ({t_full / t_svd:.1f}x faster)')
dp = np.abs(scores_svd - scores_full)
same_class = (scores_svd.argmax(1) == scores_full.argmax(1)).mean()
print(f'{len(proposals)} proposals: max |change in p| {dp.max():.4f}, mean {dp.mean():.5f}; '
      f'same top class for {same_class:.1%}')
assert counts['parameters_after'] < counts['parameters_before']
assert isinstance(model.classifier[0], tr.nn.Sequential)                    # fc6 is now two layers

dets_full, dets_svd = postprocess(scores_full, boxes_full), postprocess(scores_svd, boxes_svd)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
axes[0].hist(dp[:, 1:].ravel(), bins=50, log=True)
axes[0].set(xlabel='|p_k(SVD) - p_k(full)|, object classes', ylabel='(proposal, class) pairs',
            title='change in the scores')
axes[1].scatter(scores_full[:, 1:].ravel(), scores_svd[:, 1:].ravel(), s=3)
axes[1].plot([0, 1], [0, 1], 'k--', lw=1)
axes[1].set(xlabel='p_k, full fc layers', ylabel='p_k, truncated SVD', title='scores, before vs after')
plt.show()
print(f'detections (score > 0.05): {len(dets_full["scores"])} before, {len(dets_svd["scores"])} after')

# %% [markdown]
# What the paper measures is mAP. We score the 20 test images of the box-regression section
# before (the detections computed there) and after the truncation, with the same
# selective-search proposals.

# %%
truths = [dict(boxes=it['boxes'], labels=it['labels'], difficult=it['difficult']) for it in items]
dets = {'full': [postprocess(sc, bo) for sc, bo, _ in raw_full],
        'SVD 64/16': [postprocess(*im_detect(model, it['image'], p, **net_args)[:2]) for it, p in zip(items, props)]}
maps = {name: evaluate_voc(d, truths, SHAPES_CLASSES)['map'] for name, d in dets.items()}
print(f'mAP on {len(items)} test images: ' + ', '.join(f'{k} {v:.3f}' for k, v in maps.items()))

# %% [markdown]
# ## Summary
#
# * Detection = one forward pass, softmax scores and per-class box refinements for every
#   proposal, then, **per class**, a score threshold and greedy NMS (IoU 0.3); the threshold
#   0.05 and the cap of 100 detections per image are py-faster-rcnn's.
# * Box regression moves the foreground proposals towards their objects: the mean IoU and the
#   share improved are printed below, for the demo model (vgg-tiny, crop-pretrained, Adam,
#   shorter side 288: not Sec. 2.3's training).
# * Truncated SVD replaces a $u \times v$ layer by $t \times v$ and $u \times t$ layers. For
#   VGG16 (fc6 rank 1024, fc7 rank 256) it cuts fc6's work 3.4x and fc7's 8x; the paper
#   reports over 30% less detection time for a 0.3 point mAP drop.
# * How much the scores move depends on the spectrum: trained layers concentrate their energy in
#   few singular values, random ones do not. For the demo's vgg-tiny, keeping a quarter of fc6's
#   rank and a sixteenth of fc7's gives the mAP change and fc speed-up measured above:

# %%
print(f'box regression: mean IoU {iou_before.mean():.3f} -> {iou_after.mean():.3f}, '
      f'{(gain > 0).mean():.0%} of {len(gain)} foreground proposals improved')
print(f"truncated SVD: mAP {maps['full']:.3f} -> {maps['SVD 64/16']:.3f} on {len(items)} test images, "
      f'fc layers {t_full / t_svd:.1f}x faster; fc6 top-64 energy {energy[63]:.0%} (random: {random_energy[63]:.0%})')

# %% [markdown]
# ## Exercises
#
# Work each answer out first, then type it into the cell below the question and run the cell:
# it checks your answer against what tinyrcnn computes and prints `correct` or a hint (an
# unanswered cell, `answer = None`, prints what to do).
#
# 1. **Greedy NMS by hand.** Three detections of one class, in inclusive pixels:
#    A $= [0, 0, 99, 99]$ with score 0.9, B $= [10, 10, 109, 109]$ with 0.8 and
#    C $= [55, 10, 154, 109]$ with 0.7. Which does `nms(boxes, scores, 0.3)` keep (indices,
#    best first)? Compute the IoUs that matter, and only those.
# 2. **Per class.** The same boxes, now labelled A: class 1, B: class 2, C: class 1. Which does
#    `batched_nms` keep?
# 3. **Truncated SVD's cost.** The demo model's fc6 is $256 \times 6272$ ($u \times v$), and
#    `model.compress(fc6_rank=64, ...)` above replaced it by two layers. How many multiplications
#    per RoI do they need together? And what is the largest rank $t$ at which truncating the
#    $256 \times 256$ fc7 still saves work at all?

# %%
# 1. the indices nms keeps, best first
answer = None

abc = np.array([[0, 0, 99, 99], [10, 10, 109, 109], [55, 10, 154, 109]], np.float32)
abc_scores = np.array([0.9, 0.8, 0.7], np.float32)
kept = [int(i) for i in nms(abc, abc_scores, 0.3)]
if answer is None:
    print('not answered yet: set answer = [...]. Hint: A is kept first; then each box in score order is '
          'dropped if its IoU with a box already kept is above 0.3.')
elif list(np.ravel(answer)) == kept:
    print('correct: a dropped box suppresses nothing, so C is only compared with A')
else:
    print(f'not yet: {answer}. IoU = intersection / union with +1 pixel widths (A is 100 x 100); '
          'a box compares itself only with the boxes kept so far.')

# %%
# 2. the indices batched_nms keeps with labels (1, 2, 1), best first
answer = None

kept_per_class = [int(i) for i in batched_nms(abc, abc_scores, np.array([1, 2, 1]), 0.3)]
if answer is None:
    print('not answered yet: set answer = [...]. Hint: boxes of different classes never suppress each other.')
elif list(np.ravel(answer)) == kept_per_class:
    print('correct: B is a different class, so it survives A')
else:
    print(f'not yet: {answer}. Run exercise 1 once per class, then merge by score.')

# %%
# 3. (multiplications of the compressed fc6 per RoI, the largest rank that saves work for fc7)
answer = None

fc6_two, fc7_two = model.classifier[0], model.classifier[3]            # Sequential(t x v, u x t) each
mults = sum(layer.weight.size for layer in fc6_two)
u, v = fc7_two[1].weight.shape[0], fc7_two[0].weight.shape[1]         # fc7's original shape, 256 x 256
largest = max(t for t in range(1, min(u, v) + 1) if t * (u + v) < u * v)
if answer is None:
    print('not answered yet: set answer = (., .). Hint: a Linear layer of n inputs and m outputs needs '
          'n * m multiplications per RoI.')
elif np.shape(answer) == (2,) and tuple(answer) == (mults, largest):
    print(f'correct: fc6 does {256 * 6272 / mults:.1f}x less work; a square layer must keep less than half '
          'its rank to gain anything')
else:
    print(f'not yet: {answer}. The two layers are t x v and u x t; compare t (u + v) with u v.')
