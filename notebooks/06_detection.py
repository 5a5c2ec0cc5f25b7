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
import pathlib

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

import tinyrcnn as tr
import tinyrcnn.speed
from tinyrcnn.bench import timeit
from tinyrcnn.boxes import batched_nms, box_iou, nms
from tinyrcnn.data import SHAPES_CLASSES
from tinyrcnn.data.shapes import render_shapes_image
from tinyrcnn.export import load_model
from tinyrcnn.fast_rcnn.detect import im_detect, postprocess
from tinyrcnn.fast_rcnn.svd import svd_linear

tinyrcnn.speed.enable()   # detection over thousands of proposals: the CPU speed paths on
ROOT = pathlib.Path(tr.__file__).resolve().parents[1]
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
# (0.05), then keeps the 100 best detections per image:

# %%
print(inspect.getsource(postprocess))

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
# We measure it on the vgg-tiny detector, with the same fractions of the ranks (fc6: 256 x 6272,
# rank 64; fc7: 256 x 256, rank 16). If `tinyrcnn/assets/demo_model.json` is there (the model trained by
# `python -m tinyrcnn demo`, see chapter 7) it is used; otherwise an untrained network. Its
# random fc6 has a flat spectrum (the worst case for truncation), but its output layer starts so
# small (std 0.01) that every score stays near $1/(K+1)$: the change in scores only means
# something for the trained model.

# %%
demo_model = ROOT / 'tinyrcnn' / 'assets' / 'demo_model.json'
if demo_model.exists():
    model, info = load_model(str(demo_model.with_suffix('')))   # the path without extension
    net_args = dict(scales=tuple(info['scales']), max_size=info['max_size'], source=info['source'])
    print('using the trained demo model', demo_model)
else:
    model = tr.models.FastRCNN('vgg-tiny', num_classes=len(SHAPES_CLASSES), freeze_stages=0).eval()
    net_args = dict(scales=(192,), max_size=320, source='tiny')
    print('no tinyrcnn/assets/demo_model.json: using an untrained vgg-tiny Fast R-CNN')
trained = demo_model.exists()

W6 = model.classifier[0].weight.numpy()
singular = np.linalg.svd(W6.astype(np.float64), compute_uv=False)
energy = np.cumsum(singular ** 2) / np.sum(singular ** 2)
print(f'fc6 {W6.shape}: the top 64 of {len(singular)} singular values hold {energy[63]:.0%} of the energy')

fig, ax = plt.subplots(figsize=(6, 3.3))
ax.plot(np.arange(1, len(singular) + 1), singular / singular[0])
ax.axvline(64, color='grey', ls='--', label='rank kept (64)')
ax.set(xlabel='index', ylabel='singular value / largest', yscale='log',
       title=f'fc6 spectrum ({"trained" if trained else "untrained"} vgg-tiny)')
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
# What the paper measures is mAP. With the trained demo model we score the demo's first 20 test
# images (`make_shapes_voc(..., only_test=True)` draws exactly those) before and after the
# truncation, with the same selective-search proposals.

# %%
if trained:
    import tempfile
    from tinyrcnn.data import VOCDetection, make_shapes_voc
    from tinyrcnn.demo import DATA
    from tinyrcnn.eval import evaluate_voc
    root = make_shapes_voc(tempfile.mkdtemp(prefix='tinyrcnn-ch6-'), DATA['num_train'], 20, seed=0,
                           only_test=True)
    test_set = VOCDetection(root, 'test')
    items = [test_set[i] for i in range(len(test_set))]
    props = [tr.proposals.selective_search(item['image']) for item in items]
    truths = [dict(boxes=it['boxes'], labels=it['labels'], difficult=it['difficult']) for it in items]
    full, _ = load_model(str(demo_model.with_suffix('')))                  # uncompressed again
    maps = {}
    for name, net in (('full', full), ('SVD 64/16', model)):
        dets = [postprocess(*im_detect(net, it['image'], p, **net_args)[:2]) for it, p in zip(items, props)]
        maps[name] = evaluate_voc(dets, truths, SHAPES_CLASSES)['map']
    print('mAP on 20 test images: ' + ', '.join(f'{k} {v:.3f}' for k, v in maps.items()))
else:
    print('no trained model: an mAP comparison would mean nothing')

# %% [markdown]
# ## Summary
#
# * Detection = one forward pass, softmax scores and per-class box refinements for every
#   proposal, then, **per class**, a score threshold and greedy NMS (IoU 0.3).
# * Truncated SVD replaces a $u \times v$ layer by $t \times v$ and $u \times t$ layers. For
#   VGG16 (fc6 rank 1024, fc7 rank 256) it cuts fc6's work 3.4x and fc7's 8x; the paper
#   reports over 30% less detection time for a 0.3 point mAP drop.
# * How much the scores move depends on the spectrum: trained layers concentrate their energy in
#   few singular values, random ones do not. For the demo's trained vgg-tiny, keeping a quarter
#   of fc6's rank and a sixteenth of fc7's cost about 2 points of mAP on 20 test images
#   (0.864 -> 0.840) for fc layers 2.8x faster.
