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
# # 8. Receptive fields, and mapping boxes onto the feature map
#
# Fast R-CNN runs the conv layers once and then needs, for every RoI given in image pixels,
# the part of the conv5_3 feature map that "sees" it. Convolution and pooling change sizes in
# a computable way. For a layer with kernel $f$, stride $s$ and padding $p$:
#
# $$\text{output size} = \left\lfloor \frac{H - f + 2p}{s} \right\rfloor + 1,$$
#
# a unit's **receptive field** in the layer below, going down one layer at a time from
# $r = 1$ at the unit itself, and the **centre** of a unit at position $p_{i+1}$ mapped to the
# layer below:
#
# $$r_i = (r_{i+1} - 1)\, s_i + f_i, \qquad p_i = s_i\, p_{i+1} + \frac{f_i - 1}{2} - \mathrm{pad}_i.$$
#
# This chapter computes both for VGG16, and checks them numerically on vgg-tiny with a gradient.

# %%
import inspect

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

import tinyrcnn as tr
from tinyrcnn.data.shapes import render_shapes_image
from tinyrcnn.ops.conv import conv_output_size
from tinyrcnn.ops.roi_pool import round_half_away

tr.manual_seed(0)
print(inspect.getsource(conv_output_size))      # the first formula, as tinyrcnn/ops/conv.py has it

# %% [markdown]
# ## VGG16, layer by layer
#
# `tr.models.make_features(tr.models.VGG16_CFG)` is the `features` part of `tr.models.vgg16()`
# (built alone here, without the 120 M fc weights). We read each layer's kernel, stride and
# padding from the modules themselves.

# %%
def geometry(module):
    """(f, s, pad) of a conv or max-pool layer, None for layers that keep the geometry (ReLU)."""
    if isinstance(module, tr.nn.Conv2d):
        return module.kernel_size[0], module.stride, module.padding
    if isinstance(module, tr.nn.MaxPool2d):
        return module.kernel_size, module.stride or module.kernel_size, 0
    return None


def layer_names(features):
    names, stage, conv = [], 1, 0
    for m in features:
        if isinstance(m, tr.nn.Conv2d):
            conv += 1
            names.append(f'conv{stage}_{conv}')
        elif isinstance(m, tr.nn.MaxPool2d):
            names.append(f'pool{stage}')
            stage, conv = stage + 1, 0
    return names


def receptive_field(layers):
    """Receptive field size, total stride and the input-pixel centre of unit 0 of the last layer,
    by the formulas above, walking down from the last layer to the input."""
    r, p, stride = 1, 0.0, 1
    for f, s, pad in reversed(layers):
        r = (r - 1) * s + f
        p = s * p + (f - 1) / 2 - pad
        stride *= s
    return r, stride, p


vgg16_features = tr.models.make_features(tr.models.VGG16_CFG)
layers = [g for g in map(geometry, vgg16_features) if g is not None]
names = layer_names(vgg16_features)
H = W = 224
print(f'{"layer":8s} {"f":>2s} {"s":>2s} {"p":>2s} {"output (224 in)":>16s} {"stride":>7s} {"RF":>5s} {"centre of unit 0":>17s}')
for i, (name, (f, s, pad)) in enumerate(zip(names, layers)):
    H, W = (H - f + 2 * pad) // s + 1, (W - f + 2 * pad) // s + 1
    r, stride, p0 = receptive_field(layers[:i + 1])
    print(f'{name:8s} {f:2d} {s:2d} {pad:2d} {f"{H} x {W}":>16s} {stride:7d} {r:5d} {p0:17.1f}')
    if name == 'conv5_3':
        assert (r, stride, p0) == (196, 16, 7.5)
assert receptive_field(layers) == (212, 32, 15.5)     # pool5

# %% [markdown]
# conv5_3, where Fast R-CNN pools its RoIs, has stride 16 (hence `spatial_scale = 1/16`) and
# a receptive field of 196 x 196 pixels; pool5, which RoI pooling replaces, would have 212 and
# stride 32. Unit $c$ of conv5_3 is centred on pixel $16c + 7.5$.
#
# Check of the output-size formula: the predicted size after each stage against a real forward
# pass of VGG16's conv layers on a 96 x 160 image.

# %%
is_pool = [isinstance(m, tr.nn.MaxPool2d) for m in vgg16_features if geometry(m) is not None]


def predicted(size, ceil_mode=False):
    """Map size after each pool; ceil_mode=True rounds the pools' division up, as Caffe does."""
    h, w = size
    sizes = []
    for (f, s, pad), pool in zip(layers, is_pool):
        if pool and ceil_mode:
            h, w = -(-(h - f + 2 * pad) // s) + 1, -(-(w - f + 2 * pad) // s) + 1
        else:
            h, w = (h - f + 2 * pad) // s + 1, (w - f + 2 * pad) // s + 1
        if pool:
            sizes.append((h, w))
    return sizes


x = tr.Tensor(np.random.default_rng(0).standard_normal((1, 3, 96, 160)).astype(np.float32))
actual = []
with tr.no_grad():
    for m in vgg16_features:
        x = m(x)
        if isinstance(m, tr.nn.MaxPool2d):
            actual.append(x.shape[2:])
print('after each pool:', actual)
assert actual == predicted((96, 160))
floor_map, ceil_map = predicted((600, 1000))[3], predicted((600, 1000), ceil_mode=True)[3]
print('600 x 1000 image -> conv5_3 map (after pool4, before pool5):')
print(f'  floor mode (tinyrcnn, PyTorch):      {floor_map[0]} x {floor_map[1]};  after each pool', predicted((600, 1000)))
print(f'  ceil mode (Caffe, the papers\' code): {ceil_map[0]} x {ceil_map[1]};  after each pool',
      predicted((600, 1000), ceil_mode=True))
assert floor_map == (37, 62) and ceil_map == (38, 63)
del vgg16_features

# %% [markdown]
# The two differ at pool4: $600 / 8 = 75$ rows enter it, and $75 / 2$ is 37 whole windows plus
# one row. tinyrcnn's `MaxPool2d` (like PyTorch's default) drops that row: the bottom 8 pixels of
# the image have no conv5_3 unit of their own (they still reach the units above them through the
# receptive field). Caffe's pooling rounds up and pools the last, partial window, so the released
# Fast and Faster R-CNN code sees a 38 x 63 map. Chapter 9 counts anchors on it: 37 x 62 x 9
# with tinyrcnn, 38 x 63 x 9 in Caffe. A 2x2 pool in ceil mode needs no padding to do that: its
# last window simply has one row or column instead of two.

# %% [markdown]
# ## Measured: which pixels can change one unit?
#
# The receptive field is the set of input pixels on which a unit depends, so it is where the
# gradient of that unit with respect to the input can be non-zero. vgg-tiny's conv layers
# (`vgg_tiny().features[:-1]`, up to its last conv and ReLU) have the same strides as VGG16 and
# fewer layers per stage; the formulas predict:

# %%
tiny = tr.models.vgg_tiny().features[:-1]
r_tiny, stride_tiny, p0_tiny = receptive_field([g for g in map(geometry, tiny) if g is not None])
print(f'vgg-tiny last conv: receptive field {r_tiny}, stride {stride_tiny}, unit c centred on pixel '
      f'{stride_tiny}c + {p0_tiny}')

# %% [markdown]
# We back-propagate from all channels of one unit in the middle of the map, for a few random
# inputs (a max pool passes gradient only to its winner and a ReLU only where it is active, so
# one input may leave a few pixels of the field without gradient; the union fills it), and
# compare the support of the gradient with the prediction.

# %%
u = v = 7                                                           # unit (row 7, column 7) of a 14 x 14 map
support = np.zeros((224, 224), bool)
magnitude = np.zeros((224, 224))
rng = np.random.default_rng(1)
tiny.to(dtype=np.float64)                                           # float64: no gradient rounds to 0
for _ in range(3):
    x = tr.Tensor(rng.standard_normal((1, 3, 224, 224)), requires_grad=True)
    out = tiny(x)                                                   # (1, 128, 14, 14)
    out[0, :, u, v].sum().backward()
    g = np.abs(x.grad[0]).sum(axis=0)
    support |= g > 0
    magnitude += g
rows, cols = np.nonzero(support)
half = (r_tiny - 1) / 2
expected = (stride_tiny * u + p0_tiny - half, stride_tiny * u + p0_tiny + half)
print(f'gradient support: rows {rows.min()}..{rows.max()}, cols {cols.min()}..{cols.max()} '
      f'({rows.max() - rows.min() + 1} x {cols.max() - cols.min() + 1} pixels)')
print(f'predicted: {expected[0]:.0f}..{expected[1]:.0f} ({r_tiny} pixels)')
assert (rows.min(), rows.max()) == expected and (cols.min(), cols.max()) == expected

fig, ax = plt.subplots(figsize=(5, 4.5))
ax.imshow(np.log10(magnitude + 1e-12), cmap='magma', vmin=np.log10(magnitude.max()) - 4)
ax.add_patch(Rectangle((expected[0] - 0.5, expected[0] - 0.5), r_tiny, r_tiny, fill=False, ec='cyan', lw=1.5))
ax.plot(stride_tiny * v + p0_tiny, stride_tiny * u + p0_tiny, '+', color='cyan', ms=12)
ax.set_title(f'|d unit ({u},{v}) / d input| (log scale)\npredicted receptive field in cyan')
plt.show()

# %% [markdown]
# The gradient is concentrated in the middle of the field (the *effective* receptive field is
# much smaller than the theoretical one). Next, what this means for a RoI on an image.
# RoI pooling maps pixel $x$ to cell $\mathrm{round}(x / 16)$; the cells it pools are drawn
# with their centres $16c + 7.5$, and, in cyan, the receptive field of the RoI's corner cells.

# %%
image, objects, _ = render_shapes_image(np.random.default_rng(3), 224, 224)
box = np.array(max(objects, key=lambda o: o['box'][2] - o['box'][0])['box'], np.float32)
cells = round_half_away(box * np.float32(1 / 16)).astype(int)                # [cx1, cy1, cx2, cy2]
fig, ax = plt.subplots(figsize=(5, 5))
ax.imshow(image)
x1, y1, x2, y2 = box
ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1 + 1, y2 - y1 + 1, fill=False, ec='red', lw=2))
cy, cx = np.meshgrid(np.arange(cells[1], cells[3] + 1), np.arange(cells[0], cells[2] + 1), indexing='ij')
ax.plot(16 * cx + p0_tiny, 16 * cy + p0_tiny, '.', color='yellow', ms=5)
for c in (cells[:2], cells[2:]):
    centre = 16 * c + p0_tiny
    ax.add_patch(Rectangle(centre - half - 0.5, r_tiny, r_tiny, fill=False, ec='cyan', lw=1, ls='--'))
ax.set(xlim=(-40, 264), ylim=(264, -40), title=f'RoI {box.astype(int).tolist()} -> cells {cells.tolist()}')
plt.show()
print(f'cells {cells[0]}..{cells[2]} x {cells[1]}..{cells[3]}: centres at pixels '
      f'{16 * cells[0] + p0_tiny:.1f}..{16 * cells[2] + p0_tiny:.1f} (RoI {x1:.0f}..{x2:.0f})')

# %% [markdown]
# The rounding treats cell $c$ as the pixels around $16c$, while its receptive field is centred
# on $16c + 7.5$: the original RoI pooling accepts this half-cell offset, and the coarse 16-pixel
# quantisation of the RoI's corners (later removed by RoIAlign).
#
# ## How many proposals share one pooling window?
#
# A worry from the paper notes this project started from (seed 001): on a 14 x 14 map,
# proposals that differ by a few pixels round to the same cells, so RoI pooling gives them the
# *same* features, yet one may be an object (IoU >= 0.5) and another background. How often does
# that happen? Take chapter 5's VOC-sized image (375 x 500), its selective-search proposals, and
# project each one as RoI pooling does, $\mathrm{round}(x \cdot f / 16)$ at image factor $f$;
# proposals with the same four cells get identical pooled features. A *mixed* window holds a
# foreground proposal (IoU >= 0.5 with an object) and a background one (IoU in [0.1, 0.5), Fast
# R-CNN's training labels, Sec. 2.3).

# %%
from tinyrcnn.boxes import box_iou

image, objects, _ = render_shapes_image(np.random.default_rng(7), 375, 500)   # chapter 5's image
proposals = tr.proposals.selective_search(image)                             # (P, 4) in pixels
gt_boxes = np.array([o['box'] for o in objects], np.float32)
best_iou = box_iou(proposals, gt_boxes).max(axis=1)
fg, bg = best_iou >= 0.5, (best_iou >= 0.1) & (best_iou < 0.5)


def windows(factor):
    """Number of distinct RoI-pooling windows, the number of mixed ones and the proposals in them."""
    cells = round_half_away(proposals * np.float32(factor / 16)).astype(np.int64)   # (P, 4)
    distinct, group = np.unique(cells, axis=0, return_inverse=True)
    group = group.reshape(-1)
    mixed = np.intersect1d(group[fg], group[bg])                     # windows holding both
    return len(distinct), len(mixed), int(np.isin(group, mixed).sum())


print(f'{len(proposals)} proposals ({fg.sum()} foreground, {bg.sum()} background), '
      f'{len(np.unique(proposals.astype(int), axis=0))} distinct in pixels')
print(f'{"shorter side":>12s} {"factor":>6s} {"stride in image px":>18s} {"windows":>8s} {"mixed":>6s} '
      f'{"proposals in mixed":>18s}')
sides = (375, 480, 600, 864, 1200)
counts = {}
for side in sides:
    f = side / image.shape[0]
    counts[side] = windows(f)
    print(f'{side:12d} {f:6.2f} {16 / f:18.1f} {counts[side][0]:8d} {counts[side][1]:6d} {counts[side][2]:18d}')
assert counts[375][0] < counts[600][0] < len(proposals)

fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(sides, [counts[s][0] for s in sides], 'o-', label='distinct windows')
ax.axhline(len(proposals), color='gray', ls='--', label='proposals')
ax.axvline(600, color='tab:red', lw=0.8)
ax.set(xlabel='shorter side of the network input (pixels)', ylabel='count', ylim=(0, len(proposals) * 1.1),
       title='proposals onto RoI-pooling windows (stride 16)')
ax.legend(loc='lower right')
plt.show()

# %% [markdown]
# At the image's own size (no upsampling) one 16-pixel cell is 16 image pixels and many
# proposals collapse: the table's first row. This is one reason for Fast R-CNN's single scale
# of 600 (Sec. 5.2): PASCAL images are about 384 x 473 pixels on average, so resizing the
# shorter side to 600 *upsamples* them by about 1.6 and the effective stride of RoI pooling
# becomes about 16 / 1.6 = 10 image pixels; the row for 600 shows how many more windows that
# separates. Collapsing does not vanish even at 1200: selective search returns many boxes a
# pixel or two apart. The mixed windows are few, and a handful of proposals with the same
# features but different labels is label noise that a classifier absorbs; the regression
# targets of collapsed proposals differ too, and the head learns their average. RoIAlign (Mask
# R-CNN) later removed the rounding altogether.
#
# ## Summary
#
# * Output size $\lfloor (H - f + 2p)/s \rfloor + 1$; receptive field $r_i = (r_{i+1} - 1)s_i + f_i$;
#   centres $p_i = s_i p_{i+1} + (f_i - 1)/2 - \mathrm{pad}_i$.
# * VGG16's conv5_3: stride 16, receptive field 196 pixels, unit $c$ centred on pixel
#   $16c + 7.5$ (pool5: 212 pixels, stride 32). A 600 x 1000 image gives a 37 x 62 map with
#   floor-mode pooling (tinyrcnn), 38 x 63 with Caffe's ceil mode (the papers' code).
# * The gradient of one unit of vgg-tiny is non-zero exactly on its predicted field (printed above).
# * Rounding to the 16-pixel grid merges proposals into fewer pooling windows (the table above);
#   upsampling a VOC image by about 1.6 (shorter side 600, Sec. 5.2) makes the stride about 10
#   image pixels and separates more of them.

# %% [markdown]
# ## Exercises
#
# Each exercise has a code cell: put your answer in `answer` (it starts as `None`) and run the
# cell; it prints "correct", or "not yet" and a hint, by comparing with what tinyrcnn computes.
#
# 1. **The conv5_3 map of a VOC image (Sec. 2.1, 5.2).** The most common PASCAL image, 500 x 375,
#    becomes a 600 x 800 input at Fast R-CNN's scale 600. How many rows and columns has VGG16's
#    conv5_3 map with tinyrcnn's floor-mode pooling, and with Caffe's ceil mode? Which image
#    pixels have no conv5_3 unit of their own in floor mode?
# 2. **Model S.** Fast R-CNN's small model S is CaffeNet (AlexNet): conv1 11 x 11 with stride 4
#    and no padding, pool1 3 x 3 with stride 2, conv2 5 x 5 with padding 2, pool2 3 x 3 with
#    stride 2, conv3 to conv5 3 x 3 with padding 1; its RoIs are pooled from conv5. What are a
#    conv5 unit's total stride and receptive field? Which `spatial_scale` does RoI pooling need
#    for model S?
# 3. **Which cells does a RoI pool? (Sec. 2.1)** RoI pooling takes a RoI in input pixels to the
#    cells $\mathrm{round}(x / 16)$, with C's `round` (halves away from zero, as
#    `round_half_away`). Which cells $[c_{x1}, c_{y1}, c_{x2}, c_{y2}]$ does the RoI
#    $[40, 8, 199, 135]$ pool from conv5_3? How many cells wide and high is its window, and
#    which corners would NumPy's `np.round` (halves to even) move?

# %%
from tinyrcnn.utils import check_answer as check   # 'correct', or 'not yet' and a hint


# %%
# Exercise 1: answer = ((rows, cols) in floor mode, (rows, cols) in ceil mode)
answer = None
check(answer, [predicted((600, 800))[3], predicted((600, 800), ceil_mode=True)[3]],
      'the 3x3 convs with padding 1 keep the size; each 2x2 pool halves it, rounding down (floor) '
      'or up (ceil); conv5_3 comes after four pools')

# %%
# Exercise 2: answer = (total stride, receptive field) of CaffeNet's conv5
answer = None
caffenet_conv5 = [(11, 4, 0), (3, 2, 0), (5, 1, 2), (3, 2, 0), (3, 1, 1), (3, 1, 1), (3, 1, 1)]  # (f, s, pad)
rf, total_stride, _ = receptive_field(caffenet_conv5)
check(answer, (total_stride, rf),
      'the stride is the product of the strides; walk down from r = 1 at conv5 with '
      'r = (r - 1) s + f, one layer at a time')

# %%
# Exercise 3: answer = [cx1, cy1, cx2, cy2]
answer = None
roi = np.array([40, 8, 199, 135], np.float32)
check(answer, round_half_away(roi * np.float32(1 / 16)),
      'divide each coordinate by 16 and round; 2.5 and 0.5 round away from zero')
