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
# # 9. The Region Proposal Network (Faster R-CNN, Ren et al., 2015, Sec. 3.1)
#
# After Fast R-CNN, the slowest part of detection is no longer the network: it is selective
# search, about 2 s per image on a CPU. Faster R-CNN predicts the proposals with a small
# **Region Proposal Network** (RPN) that slides over the same conv5_3 feature map the detector
# uses. This chapter takes the RPN apart: its sliding window and what that window sees, why it is
# translation invariant and small, the anchors, which anchors it is trained to call objects, and
# why anchors crossing the image border are left out. Chapter 10 puts it into the detector.

# %%
import inspect

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

import tinyrcnn as tr
from tinyrcnn.boxes import box_iou, decode, encode
from tinyrcnn.data.shapes import render_shapes_image
from tinyrcnn.faster_rcnn.anchor_targets import anchor_targets
from tinyrcnn.faster_rcnn.anchors import generate_anchors, shift_anchors
from tinyrcnn.faster_rcnn.network import FasterRCNN
from tinyrcnn.faster_rcnn.rpn import RPNHead, flatten_outputs

tr.manual_seed(0)

# %% [markdown]
# ## A 3x3 window and a 512-d layer (Sec. 3.1)
#
# The RPN is a mini-network applied at every position of the last shared conv map: a $3 \times 3$
# window of that map is mapped to a 512-d vector (256-d for the ZF net), then two sibling
# $1 \times 1$ layers give, for each of the $k$ anchors of that position, 2 scores (object, not
# object) and 4 box offsets. Because the window slides, the "fully connected" layers are
# convolutions, shared by all positions. In `tinyrcnn/faster_rcnn/rpn.py`:

# %%
print(inspect.getsource(RPNHead))

# %% [markdown]
# What does one $3 \times 3$ window see in the image? Chapter 8's recursion, $r_i = (r_{i+1} - 1)
# s_i + f_i$ walked down from $r = 1$, with the RPN's 3x3 conv on top of conv5_3. VGG16's layers
# come from its configuration (`VGG16_CFG`: 3x3 convs with padding 1, 2x2 pools; pool5 dropped,
# as in Fast R-CNN); ZF's (Zeiler & Fergus, the paper's smaller net) are written out from its
# definition.

# %%
def receptive_field(layers):
    """Chapter 8's formulas: receptive field, total stride and centre of unit 0 of the last layer."""
    r, p, stride = 1, 0.0, 1
    for f, s, pad in reversed(layers):
        r = (r - 1) * s + f
        p = s * p + (f - 1) / 2 - pad
        stride *= s
    return r, stride, p


RPN_WINDOW = (3, 1, 1)                                                  # the RPN's 3x3 conv
vgg16_conv5_3 = [(2, 2, 0) if v == 'M' else (3, 1, 1) for v in tr.models.VGG16_CFG[:-1]]
zf_conv5 = [(7, 2, 3), (3, 2, 1), (5, 2, 2), (3, 2, 1), (3, 1, 1), (3, 1, 1), (3, 1, 1)]
for name, layers in [('VGG16', vgg16_conv5_3), ('ZF', zf_conv5)]:
    print(f'{name:5s}: last conv unit sees {receptive_field(layers)[0]:3d} px, '
          f'a 3x3 window of them {receptive_field(layers + [RPN_WINDOW])[0]:3d} px, '
          f'stride {receptive_field(layers)[1]}')
assert receptive_field(vgg16_conv5_3 + [RPN_WINDOW])[0] == 228
assert receptive_field(zf_conv5 + [RPN_WINDOW])[0] == 171

# %% [markdown]
# The paper's 228 pixels (VGG16) and 171 (ZF); the 3x3 window adds $2 \times 16 = 32$ pixels to
# conv5_3's 196. 228 pixels cover the 128- and 256-pixel anchors but not the 512-pixel ones:
# for those the RPN predicts a box larger than what it sees, which the paper (Sec. 3.3) finds
# possible: one can roughly infer an object's extent from its middle alone.
#
# ## Translation invariance, checked (Sec. 3.1.1)
#
# The same 3x3 window and the same $1 \times 1$ layers run at every position, and the anchors of
# each position are the same $k$ boxes moved by the stride: if an object moves by 16 pixels, the
# proposal should move by 16 pixels, with the same score. A method with a fixed set of anchors
# in image coordinates, such as MultiBox's 800 k-means boxes, has no such guarantee.
#
# Check it on a small RPN (vgg-tiny trunk, stride 16, untrained; translation equivariance holds
# for any weights, so a He initialisation of the RPN makes its outputs large enough to see):
# image B is image A moved by 16 pixels right and down, cut from one larger picture.

# %%
model = FasterRCNN('vgg-tiny', num_classes=6, freeze_stages=0, anchor_scales=(2, 4, 8)).eval()
tr.vgg.he_init(model.rpn)                           # any weights will do; these give large offsets
big, _, _ = render_shapes_image(np.random.default_rng(5), 256 + 16, 384 + 16)
image_a, image_b = big[16:, 16:], big[:-16, :-16]    # B[y + 16, x + 16] == A[y, x]
H, W = image_a.shape[:2]


def rpn_boxes(image):
    """Every anchor's decoded box and objectness, before the proposal layer's clip and NMS
    -> boxes (h, w, A, 4), objectness (h, w, A)."""
    with tr.no_grad():
        feats = model.features(tr.Tensor(tr.data.preprocess(image, 'tiny')[None]))
        logits, deltas = model.rpn(feats)                          # (1, 2A, h, w), (1, 4A, h, w)
    scores, offsets = flatten_outputs(logits.data, deltas.data)    # (hwA, 2), (hwA, 4)
    h, w = feats.shape[2:]
    boxes = decode(model.anchors(h, w), offsets)
    objectness = 1 / (1 + np.exp(scores[:, 0] - scores[:, 1]))
    return boxes.reshape(h, w, -1, 4), objectness.reshape(h, w, -1)


boxes_a, obj_a = rpn_boxes(image_a)
boxes_b, obj_b = rpn_boxes(image_b)
h, w = obj_a.shape[:2]

# Cell c of A is cell c + 1 of B. Compare the cells whose field (trunk + 3x3 window) lies inside
# both images: near the border, zero padding replaces pixels that differ between A and B.
r, stride, p0 = receptive_field([g for g in (
    (m.kernel_size[0], m.stride, m.padding) if isinstance(m, tr.nn.Conv2d) else
    (m.kernel_size, m.stride or m.kernel_size, 0) if isinstance(m, tr.nn.MaxPool2d) else None
    for m in model.features) if g is not None] + [RPN_WINDOW])
half = (r - 1) / 2


def clear(c, size):
    return (stride * c + p0 - half >= 0) & (stride * c + p0 + half <= size - 1)


rows, cols = np.arange(h - 1), np.arange(w - 1)
inner = (clear(rows, H) & clear(rows + 1, H))[:, None] & (clear(cols, W) & clear(cols + 1, W))[None, :]
moved = boxes_a[:-1, :-1] + np.float32(16)                           # A's boxes moved by 16 px
box_err = np.abs(boxes_b[1:, 1:] - moved).max(axis=(2, 3))         # (h-1, w-1) worst over anchors
obj_err = np.abs(obj_b[1:, 1:] - obj_a[:-1, :-1]).max(axis=2)
print(f'RPN field {r} px, stride {stride}: {inner.sum()} of {inner.size} cell pairs clear of the border')
print(f'inside:  boxes differ by at most {box_err[inner].max():.1e} px after the 16 px shift, '
      f'objectness by {obj_err[inner].max():.1e}')
print(f'border:  boxes differ by up to {box_err[~inner].max():.0f} px, objectness by {obj_err[~inner].max():.2f}')
assert box_err[inner].max() < 1e-2 and obj_err[inner].max() < 1e-4
assert np.abs(boxes_a).max() > 0 and box_err[~inner].max() > 1      # the check is not vacuous

# %%
top = np.argsort(-np.where(inner[..., None], obj_a[:-1, :-1], -1).reshape(-1))[:5]
ya, xa, aa = np.unravel_index(top, obj_a[:-1, :-1].shape)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
for ax, image, dy, title in [(axes[0], image_a, 0, 'image A'), (axes[1], image_b, 1, 'image B = A moved by (16, 16)')]:
    ax.imshow(image)
    boxes, obj = (boxes_a, obj_a) if dy == 0 else (boxes_b, obj_b)
    for y, x, a in zip(ya + dy, xa + dy, aa):
        x1, y1, x2, y2 = boxes[y, x, a]
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color='yellow', lw=1.5))
        ax.text(x1, y1, f'{obj[y, x, a]:.3f}', color='yellow', fontsize=7)
    ax.set(xlim=(-60, W + 60), ylim=(H + 60, -60), title=title)
fig.suptitle('the five best proposals from cells clear of the border: same boxes, moved, same scores', y=1.04)
plt.show()

# %% [markdown]
# Inside, the outputs are equal to float rounding; at the border they are not, because the
# zero padding now replaces different pixels. That is translation *equivariance* of the map, and
# the proposal layer (chapter 10) only adds a clip to the image. (Exactly 16 pixels: a shift that
# is not a multiple of the stride lands between cells, and then the proposals only approximately
# follow.)
#
# ## Small output layers (Sec. 3.1.1)
#
# Translation invariance also makes the RPN small: the output layers hold $(4 + 2) \times k$
# filters of the 512-d vector, whatever the image size. Counted on the layers themselves, for
# VGG16 (512 channels in and out of the 3x3 conv) and ZF (256):

# %%
def count(*modules):
    return sum(p.data.size for m in modules for p in m.parameters())


for name, channels in [('VGG16', 512), ('ZF', 256)]:
    head = RPNHead(channels, channels, num_anchors=9)
    out_weights = head.cls_score.weight.data.size + head.bbox_pred.weight.data.size
    print(f'{name:5s}: output layers {count(head.cls_score, head.bbox_pred):,} parameters '
          f'({out_weights:,} weights = {channels} x (4 + 2) x 9, plus biases); '
          f'with the 3x3 layer {count(head):,}')
    if name == 'VGG16':
        vgg_out, vgg_all = out_weights, count(head)
assert vgg_out == 512 * (4 + 2) * 9
multibox_out = 1536 * (4 + 1) * 800                      # GoogLeNet's 1536-d vector, 800 k-means boxes
multibox_all = 7 * 7 * (64 + 96 + 64 + 64) * 1536 + multibox_out
print(f'MultiBox: output layer {multibox_out:.3g} parameters, with its projection layer {multibox_all:.3g}')
print(f'ratio: {multibox_out / vgg_out:.0f}x for the output layers, {multibox_all / vgg_all:.0f}x in all')

# %% [markdown]
# The paper's numbers: $2.8 \times 10^4$ against MultiBox's $6.1 \times 10^6$ (two orders of
# magnitude), and $2.4 \times 10^6$ against about $27 \times 10^6$ with the layers below them
# (MultiBox's figures are the paper's, from its 1536-d GoogLeNet feature and 800 boxes). A
# small output layer is less likely to overfit a small data set such as PASCAL VOC.
#
# ## Anchors: a pyramid of references (Sec. 3.1.1, Fig. 1)
#
# There were two ways to find objects of several sizes: an **image pyramid** (resize the image,
# run the same filter on each; chapter 5, which measured its cost) and a **filter pyramid**
# (several filter sizes on one map, as in DPM's models of several aspect ratios). The RPN keeps
# one image scale and one 3x3 filter and puts the multiple scales and aspect ratios into the
# regression targets instead: at each position, $k$ reference boxes, the **anchors**, each with
# its own regressor. `generate_anchors()` gives the 9 of the first $16 \times 16$ cell; they are
# the released code's numbers exactly (the first is $[-84, -40, 99, 55]$, a 2:1 box of area
# about $128^2$). From `tinyrcnn/faster_rcnn/anchors.py`:

# %%
print(inspect.getsource(generate_anchors))

# %%
anchors = generate_anchors()
print(anchors)
assert anchors.shape == (9, 4) and list(anchors[0]) == [-84, -40, 99, 55]
aw = anchors[:, 2] - anchors[:, 0] + 1
ah = anchors[:, 3] - anchors[:, 1] + 1
print('sqrt(area):', np.sqrt(aw * ah).round(), ' ratios h/w:', (ah / aw).round(2))

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
colors = plt.cm.viridis(np.linspace(0, 1, 9))
ax = axes[0]                                                    # (a) pyramid of images
for i, f in enumerate((1.0, 0.7, 0.45)):
    x0 = [0, 330, 560][i]
    ax.add_patch(Rectangle((x0, 0), 300 * f, 300 * f, fill=False, color='black'))
    ax.add_patch(Rectangle((x0 + 20, 20), 60, 60, color='tab:red', alpha=0.6))
ax.set_title('(a) pyramid of images\none filter size, resized images')
ax = axes[1]                                                    # (b) pyramid of filters
ax.add_patch(Rectangle((0, 0), 600, 300, fill=False, color='black'))
for i, s in enumerate((60, 110, 170)):
    ax.add_patch(Rectangle((40 + 190 * i, 40), s, s, color='tab:red', alpha=0.6))
ax.set_title('(b) pyramid of filters\none image, several filter sizes')
ax = axes[2]                                                    # (c) pyramid of anchors
for (x1, y1, x2, y2), c in zip(anchors, colors):
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=c, lw=2))
ax.add_patch(Rectangle((0, 0), 16, 16, color='tab:red'))
ax.set_title('(c) pyramid of anchors (the 9 of one cell)\none image, one 3x3 filter, k references')
for ax, (lo, hi) in zip(axes, [(-20, 720), (-20, 620), (-380, 400)]):
    ax.set_xlim(lo, hi)
    ax.set_ylim(hi if ax is axes[2] else 340, -380 if ax is axes[2] else -20)
    ax.set_aspect('equal')
    ax.axis('off')
plt.show()

# %% [markdown]
# Anchors cost nothing at test time: the conv map is computed once, at one scale, and the $k$
# regressors share it. Shifted over a feature map of $h \times w$ cells with stride 16 they tile
# the image: $h \cdot w \cdot k$ candidate boxes (`shift_anchors`).

# %%
print(inspect.getsource(shift_anchors))

# %% [markdown]
# ## Which anchors are objects? (Sec. 3.1.2 and 3.1.3)
#
# An anchor is positive when its IoU with a ground-truth box is at least 0.7, or when it is
# the best anchor of some ground truth (so that every object gets one); negative below 0.3 with
# every ground truth; the others do not count. Anchors crossing the image border are ignored
# while training; 256 are sampled per image, at most half positive
# (`tinyrcnn/faster_rcnn/anchor_targets.py`):

# %%
print(inspect.getsource(anchor_targets))

# %% [markdown]
# Here on a synthetic image, with anchors sized for its small objects (32, 64 and 128 px). We
# label all anchors once without sampling (`batch_size` larger than their number), check every
# rule against IoUs computed here, then sample the mini-batch of 256.

# %%
image, objects, _ = render_shapes_image(np.random.default_rng(4), 192, 256)
gt = np.array([o['box'] for o in objects], np.float32)             # (G, 4) 0-based pixel corners
small = generate_anchors(16, scales=(2, 4, 8))
cells = shift_anchors(small, 192 // 16, 256 // 16, 16)              # (12 * 16 * 9, 4)


def check_rules(anchors, gt, im_size, rng_seed=0):
    """Label with and without sampling, and assert the paper's rules on both; returns the labels."""
    H, W = im_size
    full, targets = anchor_targets(anchors, gt, im_size, np.random.default_rng(rng_seed), batch_size=10**9)
    inside = (anchors[:, 0] >= 0) & (anchors[:, 1] >= 0) & (anchors[:, 2] < W) & (anchors[:, 3] < H)
    iou = np.where(inside[:, None], box_iou(anchors, gt), -1)      # (N, G), outside anchors never count
    max_iou = iou.max(axis=1)
    best = (iou == iou.max(axis=0)[None]).any(axis=1) & inside      # some ground truth's best anchor
    assert (full[~inside] == -1).all()                              # border-crossing: ignored
    assert (full[inside & (max_iou >= 0.7)] == 1).all()             # IoU >= 0.7: positive
    assert (full[best] == 1).all()                                  # best for a gt: positive
    assert ((max_iou >= 0.7) | best)[full == 1].all()               # and nothing else is
    assert (full[inside & (max_iou < 0.3) & ~best] == 0).all()      # below 0.3 everywhere: negative
    assert ((max_iou < 0.3) & ~best)[full == 0].all()
    ignored = inside & (full == -1)
    assert ((max_iou >= 0.3) & (max_iou < 0.7))[ignored].all()      # in between: ignored
    pos = full == 1
    assert np.allclose(targets[pos], encode(anchors[pos], gt[iou[pos].argmax(axis=1)]), atol=1e-5)

    sampled, _ = anchor_targets(anchors, gt, im_size, np.random.default_rng(rng_seed))   # 256
    n_pos, n_neg = int((sampled == 1).sum()), int((sampled == 0).sum())
    assert n_pos == min(int(pos.sum()), 128)                        # at most half positive
    assert n_pos + n_neg == min(256, n_pos + int((full == 0).sum()))    # negatives fill the 256
    assert (full[sampled >= 0] == sampled[sampled >= 0]).all()      # sampling only drops labels
    print(f'{len(anchors)} anchors, {inside.sum()} inside the image: {pos.sum()} positive '
          f'({(inside & (max_iou >= 0.7)).sum()} at IoU >= 0.7, {(best & (max_iou < 0.7)).sum()} only as a '
          f"ground truth's best), {(full == 0).sum()} negative, {ignored.sum()} ignored between 0.3 and 0.7")
    print(f'  mini-batch: {n_pos} positive + {n_neg} negative = {n_pos + n_neg}')
    return full, sampled


full, lab = check_rules(cells, gt, (192, 256))

# %%
fig, ax = plt.subplots(figsize=(6, 4.5))
ax.imshow(image)
for b in cells[lab == 1]:
    ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color='lime', lw=1))
for b in gt:
    ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color='white', lw=2, ls='--'))
ax.set_title('positive anchors (green) and ground truth (dashed)')
ax.axis('off')
plt.show()

# %% [markdown]
# The "best anchor" rule matters for objects whose shape no anchor matches to 0.7: they would
# otherwise get no positive at all. The cap of 128 positives binds only on crowded images; on a
# $600 \times 1000$ input with VGG16's anchors and 40 objects:

# %%
rng = np.random.default_rng(0)
xy = rng.uniform(0, [800, 450], (40, 2))
wh = rng.uniform(60, 200, (40, 2))
crowd = np.hstack([xy, np.minimum(xy + wh, [999, 599])]).astype(np.float32)
vgg_anchors = shift_anchors(anchors, 600 // 16, 1000 // 16, 16)      # tinyrcnn's conv5_3 map (chapter 8)
full, sampled = check_rules(vgg_anchors, crowd, (600, 1000))
assert (sampled == 1).sum() == 128 and (full == 1).sum() > 128

# %% [markdown]
# ## Anchors crossing the border (Sec. 3.3)
#
# For a $1000 \times 600$ image the paper counts "roughly 20000 ($\approx 60 \times 40 \times 9$)"
# anchors, and about 6000 once those crossing the image border are ignored in training. Why
# ignore them: an anchor reaching beyond the image would have to be regressed towards a box
# inside it, which gives large, hard-to-correct error terms in the loss, and the paper reports
# that training then does not converge. At test time the RPN still runs on the whole image and
# its cross-boundary proposals are clipped. Counted with the package's anchors (the map is
# 37 x 62 with tinyrcnn's floor-mode pooling, 38 x 63 in the released Caffe code; chapter 8):

# %%
no_objects = np.zeros((0, 4), np.float32)


def inside_count(fh, fw, im_size):
    """Anchors of an fh x fw map inside an im_size image, by anchor_targets' own border rule."""
    a = shift_anchors(anchors, fh, fw, 16)
    labels, _ = anchor_targets(a, no_objects, im_size, np.random.default_rng(0), batch_size=10**9)
    return labels == 0                                 # no objects: every anchor inside is negative


floor_map = lambda H, W: (H // 16, W // 16)             # noqa: E731  four 2x2 pools, floor mode
ceil_map = lambda H, W: (-(-H // 16), -(-W // 16))       # noqa: E731  ceil mode (Caffe)
for (fh, fw), im_size, note in [(floor_map(600, 1000), (600, 1000), 'tinyrcnn'),
                                (ceil_map(600, 1000), (600, 1000), 'Caffe'),
                                (floor_map(600, 800), (600, 800), 'tinyrcnn; a 500 x 375 VOC image at scale 600')]:
    kept = inside_count(fh, fw, im_size)
    print(f'{im_size[1]} x {im_size[0]} image, {fh} x {fw} map ({note}): {len(kept):,} anchors, '
          f'{kept.sum():,} inside ({kept.mean():.0%})')
fh, fw = floor_map(600, 1000)
per_anchor = inside_count(fh, fw, (600, 1000)).reshape(fh, fw, 9)
print('inside, per anchor shape (w x h):')
for (x1, y1, x2, y2), n in zip(anchors, per_anchor.sum(axis=(0, 1))):
    print(f'  {x2 - x1 + 1:4.0f} x {y2 - y1 + 1:4.0f}: {n:5d} of {fh * fw}')
assert per_anchor[..., 8].sum() == 0                   # a 368 x 736 anchor never fits 600 rows

fig, ax = plt.subplots(figsize=(6, 3.6))
im = ax.imshow(per_anchor.sum(axis=2), cmap='viridis', vmin=0, vmax=9, extent=(0, fw * 16, fh * 16, 0))
ax.set_title('anchors of each cell that lie inside a 1000 x 600 image (of 9)')
fig.colorbar(im, ax=ax, shrink=0.8)
plt.show()

# %% [markdown]
# The total matches the paper's "roughly 20000"; the anchors left inside a 1000 x 600 image are
# more than its "about 6000", which is what a $800 \times 600$ input keeps (the most common VOC
# image, 500 x 375, at scale 600). The border rule is the released code's: keep the anchors with
# $x_1, y_1 \ge 0$, $x_2 < W$, $y_2 < H$ (`allowed_border = 0`). Either way most of the large
# anchors go: only cells near the centre keep their 512-px boxes, and the tallest anchor
# never fits. Training sees the big references only in the middle of the image; the smaller
# ones carry the rest.
#
# ## Summary
# - The RPN is a 3x3 conv (512-d for VGG16, 256-d for ZF) and two 1x1 convs with $2k$ and $4k$
#   outputs; one 3x3 window on conv5_3 sees 228 pixels (171 for ZF).
# - Translation invariant by construction: moving the image by 16 pixels moves every proposal
#   away from the border by 16 pixels, with the same score (asserted above).
# - Its output layers hold $512 \times 6 \times 9$ parameters, two orders of magnitude fewer than
#   MultiBox's.
# - Anchors are a pyramid of references: one image scale, one filter, 3 scales x 3 ratios.
# - Labels: IoU >= 0.7 or best for a ground truth is positive, < 0.3 negative, 256 sampled with
#   at most 128 positive, border-crossing anchors ignored in training (counted above).

# %% [markdown]
# ## Exercises
#
# Each exercise has a code cell: put your answer in `answer` (it starts as `None`) and run the
# cell; it prints "correct", or "not yet" and a hint, by comparing with what tinyrcnn computes.
#
# 1. **Counting anchors (Sec. 3.1.1).** The RPN of this chapter (vgg-tiny, stride 16, $k = 9$)
#    gets a 500 x 700 input, which is not a multiple of 16. How many anchors does it score?
# 2. **Labelling one object (Sec. 3.1.2, 3.1.3).** A 480 x 640 input holds one object, exactly
#    the 128 x 128 anchor of cell (10, 10): the box $[104, 104, 231, 231]$. With the paper's 9
#    anchors (`generate_anchors()`), how many anchors are labelled positive? How many positives
#    and how many negatives does the 256-anchor mini-batch then hold? (Work out the IoU of two
#    128 x 128 boxes one cell apart, sideways and diagonally, and of the other anchor shapes
#    centred on the object.)
# 3. **More anchors, still small (Sec. 3.1.1).** With 5 scales x 3 ratios ($k = 15$) per position,
#    how many parameters (weights and biases) would VGG16's RPN output layers, `cls_score` and
#    `bbox_pred`, hold? How does that compare with MultiBox's output layer?

# %%
from tinyrcnn.utils import check_answer as check   # 'correct', or 'not yet' and a hint


# %%
# Exercise 1: answer = the number of anchors
answer = None
with tr.no_grad():
    map_h, map_w = model.features(tr.Tensor(np.zeros((1, 3, 500, 700), np.float32))).shape[2:]
check(answer, len(model.anchors(map_h, map_w)),
      'one anchor set per cell of the map; four 2x2 pools in floor mode give the map size')

# %%
# Exercise 2: answer = (anchors labelled positive, positives in the mini-batch, negatives in it)
answer = None
one_object = np.array([[104, 104, 231, 231]], np.float32)
grid = shift_anchors(generate_anchors(), 480 // 16, 640 // 16, 16)
all_labels, _ = anchor_targets(grid, one_object, (480, 640), np.random.default_rng(0), batch_size=10**9)
batch_labels, _ = anchor_targets(grid, one_object, (480, 640), np.random.default_rng(0))
check(answer, [(all_labels == 1).sum(), (batch_labels == 1).sum(), (batch_labels == 0).sum()],
      'two 128 x 128 boxes 16 px apart overlap in 112 x 128 px; positive means IoU >= 0.7; '
      'negatives fill the 256 that the positives leave')

# %%
# Exercise 3: answer = the number of parameters of the two output layers with k = 15
answer = None
head = RPNHead(512, 512, num_anchors=15)
check(answer, count(head.cls_score, head.bbox_pred),
      'each of the 2k + 4k output filters is 1 x 1 over 512 channels, plus one bias')
