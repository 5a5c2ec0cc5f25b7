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
# # 5. Scale invariance: one scale or an image pyramid (Fast R-CNN, Sec. 2.4)
#
# Objects appear at every size. Fast R-CNN tries the two approaches of SPPnet:
#
# * **brute force (single scale)**: every image is resized so that its shorter side is
#   $s = 600$ pixels (the longer at most 1000), and the network must learn scale invariance
#   from the data;
# * **image pyramid (multi-scale)**: the image is resized to several scales (480, 576, 688,
#   864, 1200). At test time each RoI is pooled at the scale where its area comes closest to
#   $224 \times 224$ pixels, the size the ImageNet network saw; in training a scale is sampled at
#   random for each image.
#
# The paper finds the pyramid gives only a small gain in mAP (about one point) for a much
# higher cost, and uses a single scale. This chapter measures where the cost comes from.

# %%
import inspect
import time

import matplotlib.pyplot as plt
import numpy as np

import tinyrcnn as tr
import tinyrcnn.speed
from tinyrcnn.data import image_pyramid
from tinyrcnn.data.shapes import render_shapes_image
from tinyrcnn.fast_rcnn.detect import PYRAMID_TARGET_AREA, im_detect, pyramid_levels

tr.manual_seed(0)
image, objects, _ = render_shapes_image(np.random.default_rng(7), 375, 500)   # VOC-sized (375, 500, 3)
proposals = tr.proposals.selective_search(image)                             # (P, 4)
print('image', image.shape, ' proposals', proposals.shape)

# %% [markdown]
# ## The pyramid
#
# `image_pyramid(image, scales, max_size)` resizes the shorter side to each scale (unless the
# longer would pass `max_size`) and returns each image with its factor.

# %%
scales = (480, 576, 688, 864, 1200)                                  # the paper's pyramid
pyramid = image_pyramid(image, scales, max_size=2000)
for s, (im, factor) in zip(scales, pyramid):
    print(f'scale {s:4d}: {im.shape[0]:4d} x {im.shape[1]:4d} pixels, factor {factor:.3f}')
assert [im.shape[0] for im, _ in pyramid] == list(scales)            # the shorter side is H here

fig, axes = plt.subplots(1, len(pyramid), figsize=(13, 3.2),
                         gridspec_kw=dict(width_ratios=[f for _, f in pyramid]))
for ax, s, (im, f) in zip(axes, scales, pyramid):
    ax.imshow(im)
    ax.set_title(f'{s} ({f:.1f}x)')
    ax.axis('off')
plt.show()

# %% [markdown]
# ## Which level for which RoI
#
# SPPnet's rule: RoI $r$ of $w \times h$ pixels goes to the level $k$ whose factor $f_k$
# minimises $|w h f_k^2 - 224^2|$ (`pyramid_levels`). Small RoIs go to the large images and
# large RoIs to the small ones. RoIs smaller than $224 / 3.2 = 70$ pixels stay below 224 even
# at the largest level, and many selective-search proposals are that small; still, the pyramid
# moves the sizes the network sees towards 224. In `tinyrcnn/fast_rcnn/detect.py`:

# %%
print(inspect.getsource(pyramid_levels))

# %%
factors = np.array([f for _, f in pyramid])
levels = pyramid_levels(proposals, factors)                          # (P,) level index
w = proposals[:, 2] - proposals[:, 0] + 1
h = proposals[:, 3] - proposals[:, 1] + 1
scaled_side = np.sqrt(w * h) * factors[levels]                       # sqrt of the area at its level
cost = np.abs((w * h)[:, None] * factors[None] ** 2 - PYRAMID_TARGET_AREA)   # (P, S)
assert np.all(cost[np.arange(len(levels)), levels] == cost.min(axis=1))      # the nearest level
print('RoIs per level:', np.bincount(levels, minlength=len(scales)).tolist())

fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
side = np.sqrt(w * h)
for k in range(len(scales)):
    m = levels == k
    axes[0].scatter(side[m], scaled_side[m], s=8, label=f'level {scales[k]}')
axes[0].axhline(224, color='k', ls='--', lw=1)
axes[0].set(xlabel='RoI size sqrt(w h) in the original image', ylabel='size at its pyramid level',
            xscale='log', yscale='log', title='the level chosen for each RoI')
axes[0].legend(fontsize='small')
single_factor = image_pyramid(image, (600,), 1000)[0][1]            # brute force: shorter side 600
axes[1].hist(side * single_factor, bins=40, alpha=0.6, label='single scale (600)')
axes[1].hist(scaled_side, bins=40, alpha=0.6, label='pyramid')
axes[1].axvline(224, color='k', ls='--', lw=1)
axes[1].set(xlabel='RoI size where it is pooled (pixels)', ylabel='RoIs', title='RoI sizes seen by the network')
axes[1].legend()
plt.show()

# %% [markdown]
# ## What it costs
#
# `im_detect(model, image, proposals, scales)` runs the whole pyramid as one zero-padded batch:
# every level is padded to the largest one. We time a vgg-tiny Fast R-CNN (untrained: only the
# time matters here) on a pyramid scaled down for the CPU, the paper's scales divided by 3
# (so the single scale is 200 instead of 600, the pyramid 160..400 instead of 480..1200), with
# the CPU speed paths on (`tinyrcnn.speed`), as a detector would run.

# %%
tinyrcnn.speed.enable()
model = tr.models.FastRCNN('vgg-tiny', num_classes=6, freeze_stages=0).eval()
settings = {'single scale (200)': ((200,), 334), 'pyramid (160..400)': ((160, 192, 229, 288, 400), 667)}
timings, pixels = {}, {}
for name, (s, max_size) in settings.items():
    im_detect(model, image, proposals[:10], s, max_size, source='tiny')            # warm-up
    start = time.perf_counter()
    scores, boxes, _ = im_detect(model, image, proposals, s, max_size, source='tiny')
    timings[name] = time.perf_counter() - start
    levels_s = image_pyramid(image, s, max_size)
    pixels[name] = (sum(im.shape[0] * im.shape[1] for im, _ in levels_s),
                    len(levels_s) * max(im.shape[0] for im, _ in levels_s) * max(im.shape[1] for im, _ in levels_s))
    print(f'{name:20s} {timings[name]:.2f} s for {len(proposals)} proposals; pixels {pixels[name][0]:,d} '
          f'({pixels[name][1]:,d} with padding)')
    assert scores.shape == (len(proposals), 7) and np.allclose(scores.sum(1), 1, atol=1e-5)
single, multi = timings.values()
print(f'pyramid / single: {multi / single:.1f}x the time')

fig, ax = plt.subplots(figsize=(6, 3))
ax.barh(list(timings), list(timings.values()), color=['C0', 'C1'])
ax.set(xlabel='seconds per image (vgg-tiny, CPU)', title='the pyramid multiplies the conv work')
plt.show()

# %% [markdown]
# In training, multi-scale means `TrainConfig(scales=(480, 576, 688, 864, 1200))`: each
# image of a mini-batch is resized to one scale drawn at random, so training costs no more per
# step, but the network must learn from every scale.
#
# ## Summary
#
# * Single scale: shorter side 600, longer at most 1000; the network learns scale invariance.
# * Pyramid: 5 scales; each RoI pooled at the level where its area is nearest $224^2$
#   (`pyramid_levels`); the conv work grows with the pyramid's pixels (here padded into one
#   batch), for a gain the paper measures at about one mAP point. Single scale is the default.
