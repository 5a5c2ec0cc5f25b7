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
# The paper finds the pyramid gives only a small gain in mAP for a much higher cost (Table 7:
# +1.3 mAP for the small network S, +1.5 for the medium M, at about 4x the test time) and uses
# a single scale. It trained and tested multi-scale only for S and M: the deep VGG16 (L) did
# not fit in GPU memory at five scales (Sec. 5.2). This chapter measures where the cost comes
# from.

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
          f'real, {pixels[name][1]:,d} with padding')
    assert scores.shape == (len(proposals), 7) and np.allclose(scores.sum(1), 1, atol=1e-5)
single, multi = timings.values()
(real_1, padded_1), (real_p, padded_p) = pixels.values()
print(f'pyramid / single: {multi / single:.1f}x the time, {real_p / real_1:.1f}x the real pixels, '
      f'{padded_p / padded_1:.1f}x the padded pixels (padding: {padded_p / real_p:.2f}x the real pyramid)')

fig, ax = plt.subplots(figsize=(6, 3))
ax.barh(list(timings), list(timings.values()), color=['C0', 'C1'])
ax.set(xlabel='seconds per image (vgg-tiny, CPU)', title='the pyramid multiplies the conv work')
plt.show()

# %% [markdown]
# The measured time ratio is not the pyramid's own cost: `im_detect` pads every level to the
# largest image of the blob (here the 400 level), so the convolutions run over the padded
# pixels printed above, not only the real ones (the ratios of both are printed). A pyramid
# computed level by level would pay only for the real pixels. The head (RoI pooling and the fc
# layers, once per proposal) is paid in both settings, so the time grows less than either
# pixel count.
#
# ## Multi-scale training costs more per step
#
# In training, multi-scale means `TrainConfig(scales=(480, 576, 688, 864, 1200))`: each
# image of a mini-batch is resized to one scale drawn at random. The conv work of a step grows
# with the pixels, about $s^2$ for shorter side $s$, so on average a step costs
# $\mathrm{mean}(s^2) / 600^2$ times a single-scale step. The paper capped the longer side at
# 2000 pixels for its pyramid (Sec. 5.2); `TrainConfig`'s default `max_size` is 1000, the
# single-scale cap, and on a 4:3 VOC image it binds for the two largest scales:

# %%
ratio = np.mean(np.array(scales, np.float64) ** 2) / 600 ** 2
print(f'mean s^2 / 600^2 = {ratio:.2f}')
assert round(ratio, 1) == 1.8
single_px = np.prod(image_pyramid(image, (600,), 1000)[0][0].shape[:2])   # 600 x 800 here
for max_size in (2000, 1000):
    levels_t = image_pyramid(image, scales, max_size)
    px = np.array([im.shape[0] * im.shape[1] for im, _ in levels_t])    # (5,) pixels per scale
    capped = [s for s, (im, _) in zip(scales, levels_t) if im.shape[0] < s]
    # N = 2 images of this shape at independent random scales, padded into one blob: 2 x the larger
    blob = np.mean([2 * max(a, b) for a in px for b in px]) / (2 * single_px)
    print(f'max_size {max_size}: a {image.shape[0]} x {image.shape[1]} image costs on average '
          f'{px.mean() / single_px:.2f}x its 600-pixel version ({blob:.2f}x for a padded 2-image blob); '
          f'the cap binds for scales {capped or "none"}')

# %% [markdown]
# So with the paper's scales a multi-scale step does about 1.8x the conv work of a
# single-scale step, more once the two images of a mini-batch are padded to the larger one.
# With the 1000-pixel cap it costs less, but then the two largest scales are not the paper's.
#
# ## Summary
#
# * Single scale: shorter side 600, longer at most 1000; the network learns scale invariance.
# * Pyramid: 5 scales; each RoI pooled at the level where its area is nearest $224^2$
#   (`pyramid_levels`); the conv work grows with the pyramid's pixels, and more here because
#   `im_detect` pads every level to the largest. The paper measures +1.3 (S) and +1.5 (M) mAP
#   at about 4x the test time (Table 7) and kept VGG16 single-scale (GPU memory). Single scale
#   is the default.
# * Multi-scale training draws one scale per image: on average about 1.8x a 600-pixel step's
#   pixels with the paper's scales, not the same cost.

# %% [markdown]
# ## Exercises
#
# Work each answer out first, then type it into the cell below the question and run the cell:
# it checks your answer against what tinyrcnn computes and prints `correct` or a hint (an
# unanswered cell, `answer = None`, prints what to do).
#
# 1. **Which level?** On this chapter's $375 \times 500$ image with the paper's pyramid
#    (480, 576, 688, 864, 1200; the factors are printed in the first section), at which scale
#    is a $100 \times 100$-pixel RoI pooled? And a $50 \times 200$ one (50 wide, 200 high)?
# 2. **Too small for any level.** A $40 \times 40$-pixel RoI: how many pixels wide is it at the
#    level `pyramid_levels` picks for it? Compare with the 224 pixels the rule aims for.
# 3. **The cap.** Training with the pyramid's scales but `max_size = 1000` (`TrainConfig`'s
#    default): what is the shape (height, width) of this image at scale 1200?

# %%
# 1. (scale for 100 x 100, scale for 50 x 200)
answer = None

two_rois = np.array([[0, 0, 99, 99], [0, 0, 49, 199]], np.float32)          # [x1, y1, x2, y2], inclusive
chosen = tuple(int(scales[k]) for k in pyramid_levels(two_rois, factors))
if answer is None:
    print('not answered yet: set answer = (., .). Hint: which factor f makes w * h * f^2 closest to 224^2?')
elif np.shape(answer) == (2,) and tuple(answer) == chosen:
    print('correct: the rule looks at the area only, whatever the shape')
else:
    print(f'not yet: {answer}. Compare w h f^2 with 224^2 = 50176 for every factor; the areas of the two '
          'RoIs may have more in common than their shapes.')

# %%
# 2. the width in pixels of a 40 x 40 RoI at its pyramid level
answer = None

level = pyramid_levels(np.array([[0, 0, 39, 39]], np.float32), factors)[0]
width_there = 40 * factors[level]
if answer is None:
    print('not answered yet: set answer to a number of pixels. Hint: which level has the largest factor?')
elif np.ndim(answer) == 0 and abs(answer - width_there) < 1:
    print('correct: even the largest level leaves it far below 224; the network must still see small objects small')
else:
    print(f'not yet: {answer}. The smaller the RoI, the larger the level it goes to; '
          'multiply its width by that factor.')

# %%
# 3. (height, width) of the 375 x 500 image at scale 1200 with max_size 1000
answer = None

capped_shape = image_pyramid(image, (1200,), max_size=1000)[0][0].shape[:2]
if answer is None:
    print('not answered yet: set answer = (height, width). Hint: scaling the shorter side to 1200 would make '
          'the longer one 1600.')
elif np.shape(answer) == (2,) and tuple(answer) == capped_shape:
    print('correct: the cap wins, so this "1200" level is smaller than the paper\'s')
else:
    print(f'not yet: {answer}. The factor is the smaller of 1200 / shorter side and max_size / longer side.')
