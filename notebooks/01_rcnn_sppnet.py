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
# # 1. R-CNN and SPPnet: why share the convolutions
#
# R-CNN (Girshick et al., 2014) classifies each of ~2000 selective-search proposals by
# cropping it (with a margin of context), warping it to 224 x 224 and running the whole CNN on
# it: one forward pass *per proposal*, with nothing shared, 47 s per image with VGG16 (Fast
# R-CNN, Sec. 1.1). SPPnet (He et al., 2014) runs the convolutions *once per image*, and cuts
# each proposal's features out of the shared feature map with spatial pyramid pooling. Fast
# R-CNN keeps this sharing and makes it trainable end to end.
#
# This chapter measures the difference on a small trunk, and shows spatial pyramid pooling.

# %%
import inspect
import time

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle
from skimage.transform import resize

import tinyrcnn as tr
import tinyrcnn.functional as F
import tinyrcnn.speed
from tinyrcnn.data import preprocess
from tinyrcnn.data.shapes import render_shapes_image
from tinyrcnn.ops.roi_pool import bin_edges, roi_spp

tinyrcnn.speed.enable()   # a chapter of timings: the CPU speed paths on (chapter 0 shows the reference code)
tr.manual_seed(0)
image, objects, _ = render_shapes_image(np.random.default_rng(3), 240, 320)   # (H, W, 3) uint8
proposals = tr.proposals.selective_search(image)[:200]                     # (200, 4) best first
print('image', image.shape, ' proposals', proposals.shape)

# %% [markdown]
# ## R-CNN: one CNN pass per proposal
#
# vgg-tiny has VGG16's five stages (and stride) with far fewer channels. R-CNN's feature for a
# proposal is pool5 of the warped crop. The crop is not the bare box: R-CNN first enlarges it so
# that, after warping, 16 pixels of context surround the original box (R-CNN, Appendix A: "p =
# 16"). We time a few crops one by one; the cost is linear in the number of proposals, so the
# measured time per crop gives the time for all 200.

# %%
vgg = tr.models.vgg_tiny().eval()


def warp(box, size=224, context=16):
    """R-CNN's input: the proposal, grown so that `context` pixels surround it once warped, then
    anisotropically warped to size x size. (R-CNN fills what falls outside the image with the
    mean pixel; here the grown box is clipped to the image.)"""
    grow = size / (size - 2 * context)                      # 224 / 192: the box fills 192 of 224
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half_w, half_h = grow * (box[2] - box[0] + 1) / 2, grow * (box[3] - box[1] + 1) / 2
    x1, y1 = int(max(cx - half_w, 0)), int(max(cy - half_h, 0))
    x2, y2 = int(min(cx + half_w, image.shape[1] - 1)), int(min(cy + half_h, image.shape[0] - 1))
    crop = image[y1:y2 + 1, x1:x2 + 1]
    return resize(crop, (size, size), preserve_range=True).astype(np.uint8)


def rcnn_features(boxes):
    with tr.no_grad():
        return [vgg.features(tr.Tensor(preprocess(warp(b))[None])) for b in boxes]  # (1, 128, 7, 7) each


rcnn_features(proposals[:1])                                # warm-up
counts = [1, 2, 4, 8]
rcnn_times = []
for n in counts:
    start = time.perf_counter()
    rcnn_features(proposals[:n])
    rcnn_times.append(time.perf_counter() - start)
per_crop = np.polyfit(counts, rcnn_times, 1)[0]             # seconds per proposal (slope)
print('R-CNN, measured:', ', '.join(f'{n} crops {s:.2f} s' for n, s in zip(counts, rcnn_times)))
print(f'R-CNN: {per_crop * 1000:.0f} ms per proposal -> {200 * per_crop:.1f} s for 200 proposals')

# %% [markdown]
# ## SPPnet: one CNN pass per image, then pool each proposal
#
# The conv layers run once on the whole image. The last max pool is left out, so the map has
# stride 16. Spatial pyramid pooling max-pools a proposal's window of the map into an
# $L \times L$ grid for each level $L$ and concatenates them. SPPnet's detector used four
# levels, $6 \times 6$, $3 \times 3$, $2 \times 2$ and $1 \times 1$: a fixed-length vector of
# $C \cdot (36 + 9 + 4 + 1) = 50C$ numbers, whatever the proposal's size. `F.roi_spp` is one RoI
# pooling per level, flattened side by side; Fast R-CNN's RoI pooling is the one-level case
# (chapter 2).
#
# Which cells a proposal covers is a choice. tinyrcnn's RoI pooling projects a proposal
# $[x_1, y_1, x_2, y_2]$ in pixels with Fast R-CNN's rule (Caffe's RoI pooling layer): cells
# $\mathrm{round}(x_1/16)$ to $\mathrm{round}(x_2/16)$, both included. SPPnet mapped the corners
# its own way (its Appendix A): each onto the cell whose receptive field is centred nearest to
# it, $\lfloor x_1/16 \rfloor + 1$ on the left and top, $\lceil x_2/16 \rceil - 1$ on the right
# and bottom. This chapter uses Fast R-CNN's rule for both.

# %%
print(inspect.getsource(roi_spp))

# %%
LEVELS = (6, 3, 2, 1)                                                       # SPPnet's detector
rois = np.hstack([np.zeros((len(proposals), 1), np.float32), proposals])  # (R, 5) [batch, x1, y1, x2, y2]
conv = vgg.features[:-1]                                                    # stride 16
x = tr.Tensor(preprocess(image)[None])                                      # (1, 3, H, W)
with tr.no_grad():
    conv(x)                                                                 # warm-up
    start = time.perf_counter()
    feats = conv(x)                                                         # (1, 128, H/16, W/16)
    t_conv = time.perf_counter() - start
    start = time.perf_counter()
    spp = F.roi_spp(feats, rois, levels=LEVELS, spatial_scale=1 / 16)        # (R, 128 * 50)
    t_spp = time.perf_counter() - start
print('feature map', feats.shape, ' SPP features', spp.shape)
print(f'SPPnet: conv once {t_conv:.2f} s + pooling 200 proposals {t_spp * 1000:.0f} ms')
print(f'speed-up over R-CNN for 200 proposals: {200 * per_crop / (t_conv + t_spp):.0f}x')
print(f'one warped crop costs {per_crop / t_conv:.1f}x one pass over the whole {image.shape[0]} x '
      f'{image.shape[1]} image: R-CNN for 200 proposals = {200 * per_crop / t_conv:.0f} such passes')
assert spp.shape == (200, 128 * sum(L * L for L in LEVELS))

# %% [markdown]
# Check: the $1 \times 1$ level (the last $C$ numbers) is the maximum of the feature map over
# the proposal's window, channel by channel (a thin proposal along the bottom or right edge can
# round to a window past the map's end: it is empty and pools to 0).

# %%
H, W = feats.shape[2:]
hs, he, ws, we = bin_edges(rois, 1 / 16, (1, 1), H, W)                      # (R, 1) each
f = feats.numpy()[0]


def window_max(r):
    window = f[:, hs[r, 0]:he[r, 0], ws[r, 0]:we[r, 0]]
    return window.max(axis=(1, 2)) if window.size else np.zeros(len(f), f.dtype)  # empty: 0


expected = np.stack([window_max(r) for r in range(len(rois))])
assert np.array_equal(spp.numpy()[:, -128:], expected)
print('1x1 level == max over each window: ok')

# %% [markdown]
# ## The timing, as a picture
#
# SPPnet's cost grows with the number of proposals too, but each proposal adds a pooling step
# instead of a CNN pass. We time the pyramid for 1 to 1000 RoIs twice: with the reference RoI
# pooling (`ops/roi_pool.py`, a Python loop over RoIs and bins, the readable spec) and with the
# speed path this chapter turned on (`speed/roi_pool.py`: C++, every channel of a bin at once,
# where g++ is installed). A straight-line fit gives the cost per RoI.

# %%
R_values = [1, 10, 50, 200, 1000]
many = np.repeat(rois, 5, axis=0)                                           # 1000 RoIs
pool_times = {}
for path, on in (('speed path', True), ('reference loop', False)):
    times = []
    with tinyrcnn.speed.enabled(on), tr.no_grad():
        for R in R_values:
            start = time.perf_counter()
            F.roi_spp(feats, many[:R], LEVELS, 1 / 16)
            times.append(time.perf_counter() - start)
    pool_times[path] = np.array(times)
    per_roi = np.polyfit(R_values, times, 1)[0]
    print(f'SPP pooling, {path:14s}: {per_roi * 1000:.2f} ms per RoI, 1000 RoIs {times[-1] * 1000:.0f} ms')
per_roi = np.polyfit(R_values, pool_times['speed path'], 1)[0]
print(f'R-CNN: {per_crop * 1000:.0f} ms per proposal = {per_crop / per_roi:.0f}x the pooling of one RoI')
print(f'conv once: {t_conv * 1000:.0f} ms = the pooling of {t_conv / per_roi:.0f} RoIs (speed path)')


def conv_macs(cfg, H, W, channels=3):
    """Multiply-adds of VGG-style 3x3 conv layers (cfg as in tinyrcnn.vgg) on an H x W image."""
    macs = 0
    for v in cfg:
        if v == 'M':
            H, W = H // 2, W // 2
        else:
            macs, channels = macs + 9 * channels * v * H * W, v
    return macs


ours, paper = conv_macs(vgg.cfg, *image.shape[:2]), conv_macs(tr.vgg.VGG16_CFG, 600, 1000)
print(f'conv multiply-adds: vgg-tiny at {image.shape[0]} x {image.shape[1]} {ours / 1e9:.2f} G, '
      f'VGG16 at 600 x 1000 {paper / 1e9:.0f} G ({paper / ours:.0f}x)')

fig, ax = plt.subplots(figsize=(6, 3.8))
ax.loglog(counts, rcnn_times, 'o', color='C3', label='R-CNN, measured')
ax.loglog(R_values, per_crop * np.array(R_values), '--', color='C3', label='R-CNN, linear in proposals')
ax.loglog(R_values, t_conv + pool_times['speed path'], 's-', color='C0',
          label='SPPnet: conv once + SPP (speed path)')
ax.loglog(R_values, t_conv + pool_times['reference loop'], 's:', color='C0', alpha=0.6,
          label='SPPnet: conv once + SPP (reference loop)')
ax.axhline(t_conv, color='grey', lw=0.8, ls='--', label='conv once')
ax.set(xlabel='proposals per image', ylabel='seconds per image (vgg-tiny, CPU)',
       title='sharing the convolutions')
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Per proposal, pooling is far cheaper than R-CNN's CNN pass (the ratio printed above): that is
# SPPnet's speed-up. Whether pooling is also cheap *next to the convolutions* depends on both
# sides, and this chapter is not the papers' setting. Its trunk is tiny, so one conv pass is
# quick, and its pooling runs on a CPU core or two, one pass over each RoI's pixels per pyramid
# level (one Python step per RoI and bin in the reference): a few hundred RoIs already cost as
# much as the whole conv pass (the break-even printed above). In the papers the conv layers do far more work (VGG16 at 600 x 1000: the multiply-adds
# printed above) and RoI pooling is a CUDA kernel with one thread per output: in Fast R-CNN's
# timing of VGG16 on 2000 RoIs (Fig. 2) RoI pooling takes about 5 % of the time, the conv
# layers about 46 %. The GPU section below runs that kernel.

# %% [markdown]
# ## The pyramid on one proposal
#
# The bins of each level on the proposal that best covers the largest object, drawn in image
# pixels (a cell of the map is 16 x 16 pixels, red: the proposal). Bins follow the map's cells,
# so they are only roughly equal, and neighbours may share a row or column of cells (drawn
# slightly inset, so shared cells show as double lines). The window snaps to whole cells, so it
# can overshoot the proposal by up to half a cell on each side, plus the inclusive last cell.

# %%
gt = np.array([o['box'] for o in objects], np.float32)                    # (G, 4)
largest = np.argmax((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]))
r = int(np.argmax(tr.boxes.box_iou(proposals, gt[largest:largest + 1])[:, 0]))  # the best proposal for it
fig, axes = plt.subplots(1, len(LEVELS), figsize=(14, 3.2))
for ax, L in zip(axes, LEVELS):
    ax.imshow(image)
    hs, he, ws, we = (e[r] for e in bin_edges(rois, 1 / 16, (L, L), H, W))
    for i in range(L):
        for j in range(L):
            ax.add_patch(Rectangle((16 * ws[j] + 1.5, 16 * hs[i] + 1.5), 16 * (we[j] - ws[j]) - 3,
                                   16 * (he[i] - hs[i]) - 3, fill=False, ec='yellow', lw=1.2))
    x1, y1, x2, y2 = proposals[r]
    ax.add_patch(Rectangle((x1, y1), x2 - x1 + 1, y2 - y1 + 1, fill=False, ec='red', lw=2, ls='--'))
    ax.set_title(f'level {L} x {L}')
    ax.axis('off')
plt.show()

# %% [markdown]
# ## On a GPU
#
# The same comparison with CuPy, where a GPU is present (on a CPU-only machine this is skipped).

# %%
if tr.cuda_available():
    import cupy
    vgg_gpu = tr.models.vgg_tiny().to('cuda').eval()
    crops = tr.Tensor(np.stack([preprocess(warp(b)) for b in proposals])).to('cuda')   # (200, 3, 224, 224)
    with tr.no_grad():
        vgg_gpu.features(crops[:8])
        cupy.cuda.Device().synchronize()
        start = time.perf_counter()
        vgg_gpu.features(crops)
        cupy.cuda.Device().synchronize()
        t_rcnn_gpu = time.perf_counter() - start
        start = time.perf_counter()
        F.roi_spp(vgg_gpu.features[:-1](x.to('cuda')), tr.Tensor(rois).to('cuda'), LEVELS, 1 / 16)
        cupy.cuda.Device().synchronize()
        t_spp_gpu = time.perf_counter() - start
    print(f'GPU: R-CNN (200 crops in one batch) {t_rcnn_gpu * 1000:.0f} ms, SPPnet {t_spp_gpu * 1000:.0f} ms')
else:
    print('no GPU: skipped')

# %% [markdown]
# ## Summary
#
# * R-CNN runs the CNN once per proposal, on the box grown by 16 pixels of context and warped
#   to 224 x 224: its test time is linear in the number of proposals (here one crop costs
#   about as much as a pass over the whole small image: the ratio is printed above).
# * SPPnet shares the convolutions: one pass per image, then spatial pyramid pooling turns
#   each proposal's window of the feature map into a fixed-length vector ($50C$ numbers with
#   its detector's {6 x 6, 3 x 3, 2 x 2, 1 x 1} pyramid). Each further proposal costs a pooling
#   step, not a CNN pass; that pooling is negligible next to the convolutions when it is a GPU
#   kernel behind VGG16, not when it is a Python loop behind a tiny trunk, as here.
# * The window a proposal covers on the map comes from a projection rule; tinyrcnn uses Fast
#   R-CNN's, $\mathrm{round}(x/16)$, where SPPnet had its own corner mapping.
# * SPPnet's drawbacks (Fast R-CNN, Sec. 1.1) are in training: a multi-stage pipeline
#   (fine-tuning, then SVMs, then box regressors), features cached on disk, and fine-tuning that
#   leaves the conv layers below the pyramid fixed. Back-propagating through the pyramid was
#   possible but inefficient: each training RoI came from a different image, and an RoI's
#   receptive field can span the whole image, so every RoI needed a conv pass of its own
#   (Sec. 2.3). Fast R-CNN fixes this with hierarchical sampling (N = 2 images per mini-batch,
#   R/N = 64 RoIs from each, sharing the conv pass), one fine-tuning stage with a multi-task
#   loss for classifier and box regressor together, and no feature cache (chapter 4). Its RoI
#   pooling is a one-level pyramid of 7 x 7 because fc6 of the pretrained network expects
#   VGG16's 7 x 7 pool5 grid (chapters 2 and 3).

# %% [markdown]
# ## Exercises
#
# Work each answer out first, then type it into the cell below the question and run the cell:
# it checks your answer against what tinyrcnn computes and prints `correct` or a hint (an
# unanswered cell, `answer = None`, prints what to do).
#
# 1. **Fixed-length features.** VGG16's conv5_3 has $C = 512$ channels. How many numbers does
#    SPPnet's four-level pyramid $\{6 \times 6, 3 \times 3, 2 \times 2, 1 \times 1\}$ give per
#    proposal, and how many does Fast R-CNN's single $7 \times 7$ RoI pooling give? (The second
#    is what VGG16's fc6 expects: chapter 3.)
# 2. **The projection rounds.** A proposal $[x_1, y_1, x_2, y_2] = [40, 24, 87, 120]$ pixels, on
#    a map of stride 16 (`spatial_scale = 1/16`) large enough not to clip it: how many cells
#    high and wide is its window, with Fast R-CNN's rule (cells $\mathrm{round}(x_1/16)$ to
#    $\mathrm{round}(x_2/16)$, both included)? Like Caffe, tinyrcnn rounds halves away from zero,
#    not to the nearest even number as Python's `round` does.
# 3. **An empty window.** On this chapter's $240 \times 320$ image the map is $15 \times 20$
#    cells. How many cells does the window of the thin proposal $[312, 0, 319, 239]$ along the
#    right edge cover, once clipped to the map? What does its $1 \times 1$ level then pool to?

# %%
# 1. (SPPnet's length, Fast R-CNN's length) per proposal for C = 512
answer = None

conv5 = tr.Tensor(np.zeros((1, 512, 38, 50), np.float32))                 # VGG16's map of a 600 x 800 image
one_roi = np.array([[0, 64, 64, 320, 480]], np.float32)
lengths = (F.roi_spp(conv5, one_roi, levels=(6, 3, 2, 1), spatial_scale=1 / 16).shape[1],
           int(np.prod(F.roi_pool(conv5, one_roi, (7, 7), 1 / 16).shape[1:])))
if answer is None:
    print('not answered yet: set answer = (., .). Hint: each level L gives L * L bins per channel.')
elif np.shape(answer) == (2,) and tuple(answer) == lengths:
    print('correct: nearly the same length; Fast R-CNN keeps the one level that matches fc6')
else:
    print(f'not yet: {answer}. Count the bins of every level, then multiply by the channels.')

# %%
# 2. (rows, columns) of the window of [40, 24, 87, 120] at stride 16
answer = None

hs, he, ws, we = bin_edges(np.array([[0, 40, 24, 87, 120]], np.float32), 1 / 16, (1, 1), 64, 64)
window = (int(he[0, 0] - hs[0, 0]), int(we[0, 0] - ws[0, 0]))
if answer is None:
    print('not answered yet: set answer = (rows, columns). Hint: 24/16 = 1.5 and 120/16 = 7.5.')
elif np.shape(answer) == (2,) and tuple(answer) == window:
    print('correct')
else:
    print(f'not yet: {answer}. Round each corner half away from zero and count both end cells.')

# %%
# 3. the number of cells covered by [312, 0, 319, 239] on the 15 x 20 map
answer = None

hs, he, ws, we = bin_edges(np.array([[0, 312, 0, 319, 239]], np.float32), 1 / 16, (1, 1), H, W)
cells = int((he[0, 0] - hs[0, 0]) * (we[0, 0] - ws[0, 0]))
if answer is None:
    print(f'not answered yet: set answer to a number of cells. Hint: the columns are 0..{W - 1}; '
          'where does round(312 / 16) fall?')
elif answer == cells:
    print('correct: the window starts past the last column, so it is empty and pools to 0 '
          '(the RoI pooling rules of chapter 2)')
else:
    print(f'not yet: {answer}. Project both x-corners, then clip the window to columns 0..{W - 1}.')
