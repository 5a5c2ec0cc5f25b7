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
# cropping it, warping it to 224 x 224 and running the whole CNN on it: one forward pass *per
# proposal*, with nothing shared, 47 s per image with VGG16 (Fast R-CNN, Sec. 1.1). SPPnet
# (He et al., 2014) runs the convolutions *once per image*, and cuts each proposal's features
# out of the shared feature map with spatial pyramid pooling. Fast R-CNN keeps this sharing and
# makes it trainable end to end.
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
# proposal is pool5 of the warped crop. We time a few crops one by one; the cost is linear in
# the number of proposals, so the measured time per crop gives the time for all 200.

# %%
vgg = tr.models.vgg_tiny().eval()


def warp(box, size=224):
    """R-CNN's input: the proposal's pixels, anisotropically warped to size x size."""
    x1, y1, x2, y2 = box.astype(int)
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
# stride 16: a proposal $[x_1, y_1, x_2, y_2]$ in pixels covers cells
# $[\mathrm{round}(x_1/16), \mathrm{round}(x_2/16)]$ of the map. Spatial pyramid pooling
# max-pools that window into $4 \times 4$, $2 \times 2$ and $1 \times 1$ grids and concatenates
# them: a fixed-length vector of $C \cdot (16 + 4 + 1) = 21C$ numbers, whatever the proposal's
# size. `F.roi_spp` is three RoI poolings flattened side by side; Fast R-CNN's RoI pooling is
# the one-level case (chapter 2):

# %%
print(inspect.getsource(roi_spp))

# %%
rois = np.hstack([np.zeros((len(proposals), 1), np.float32), proposals])  # (R, 5) [batch, x1, y1, x2, y2]
conv = vgg.features[:-1]                                                    # stride 16
x = tr.Tensor(preprocess(image)[None])                                      # (1, 3, H, W)
with tr.no_grad():
    conv(x)                                                                 # warm-up
    start = time.perf_counter()
    feats = conv(x)                                                         # (1, 128, H/16, W/16)
    t_conv = time.perf_counter() - start
    start = time.perf_counter()
    spp = F.roi_spp(feats, rois, levels=(4, 2, 1), spatial_scale=1 / 16)     # (R, 128 * 21)
    t_spp = time.perf_counter() - start
print('feature map', feats.shape, ' SPP features', spp.shape)
print(f'SPPnet: conv once {t_conv:.2f} s + pooling 200 proposals {t_spp * 1000:.0f} ms')
print(f'speed-up over R-CNN for 200 proposals: {200 * per_crop / (t_conv + t_spp):.0f}x')
assert spp.shape == (200, 128 * 21)

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
# R-CNN's cost grows with the number of proposals; SPPnet's barely does, because pooling is
# cheap next to the convolutions.

# %%
R_values = [1, 10, 50, 200, 1000]
spp_times = []
many = np.repeat(rois, 5, axis=0)                                           # 1000 RoIs
with tr.no_grad():
    for R in R_values:
        start = time.perf_counter()
        F.roi_spp(feats, many[:R], (4, 2, 1), 1 / 16)
        spp_times.append(t_conv + time.perf_counter() - start)

fig, ax = plt.subplots(figsize=(6, 3.8))
ax.loglog(counts, rcnn_times, 'o', color='C3', label='R-CNN, measured')
ax.loglog(R_values, per_crop * np.array(R_values), '--', color='C3', label='R-CNN, linear in proposals')
ax.loglog(R_values, spp_times, 's-', color='C0', label='SPPnet: conv once + SPP, measured')
ax.set(xlabel='proposals per image', ylabel='seconds per image (vgg-tiny, CPU)',
       title='sharing the convolutions')
ax.legend()
plt.show()

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
fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
for ax, L in zip(axes, (4, 2, 1)):
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
        F.roi_spp(vgg_gpu.features[:-1](x.to('cuda')), tr.Tensor(rois).to('cuda'), (4, 2, 1), 1 / 16)
        cupy.cuda.Device().synchronize()
        t_spp_gpu = time.perf_counter() - start
    print(f'GPU: R-CNN (200 crops in one batch) {t_rcnn_gpu * 1000:.0f} ms, SPPnet {t_spp_gpu * 1000:.0f} ms')
else:
    print('no GPU: skipped')

# %% [markdown]
# ## Summary
#
# * R-CNN runs the CNN once per proposal: its test time is linear in the number of proposals
#   (about 200 x the cost of one image-sized pass here).
# * SPPnet shares the convolutions: one pass per image, then spatial pyramid pooling turns
#   each proposal's window of the feature map into a fixed-length vector ($21C$ numbers).
# * SPPnet's drawbacks (Fast R-CNN, Sec. 1.1) are in training: a multi-stage pipeline, features
#   cached on disk, and conv layers that cannot be fine-tuned through the pyramid. Fast R-CNN
#   fixes these with a single-level pyramid (RoI pooling, chapter 2) and a training scheme that
#   back-propagates through it (chapter 4).
