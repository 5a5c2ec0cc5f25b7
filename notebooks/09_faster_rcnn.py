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
# # 9. Faster R-CNN: proposals from the shared trunk (Ren et al., 2015)
#
# After Fast R-CNN, the slowest part of detection is no longer the network: it is selective
# search, about 2 s per image on a CPU. Faster R-CNN predicts the proposals with a small
# **Region Proposal Network** (RPN) that slides over the same conv5 feature map the detector
# uses, so proposals cost almost nothing.
#
# At each of the $h \times w$ map positions the RPN looks at $k$ **anchors**: boxes of 3 scales
# and 3 aspect ratios centred on that cell. A $3 \times 3$ conv and two sibling $1 \times 1$ convs
# give, per anchor, 2 objectness scores and 4 box offsets $(t_x, t_y, t_w, t_h)$, the same
# parametrisation as Fast R-CNN's box regression. Its loss (Sec. 3.1.2) is
#
# $$L(\{p_i\}, \{t_i\}) = \frac{1}{N_{cls}} \sum_i L_{cls}(p_i, p_i^*) + \lambda \frac{1}{N_{reg}} \sum_i p_i^* L_{reg}(t_i, t_i^*).$$

# %%
import inspect
import time

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

import tinyrcnn as tr
from tinyrcnn.data.shapes import render_shapes_image
from tinyrcnn.faster_rcnn.anchor_targets import anchor_targets
from tinyrcnn.faster_rcnn.anchors import generate_anchors, shift_anchors
from tinyrcnn.faster_rcnn.loss import faster_rcnn_losses
from tinyrcnn.faster_rcnn.network import FasterRCNN
from tinyrcnn.faster_rcnn.proposal_layer import proposal_layer

# %% [markdown]
# ## Anchors
#
# `generate_anchors()` gives the 9 reference boxes on the first $16 \times 16$ cell; they are
# the original code's numbers exactly (the first is $[-84, -40, 99, 55]$, a 2:1 box of area
# about $128^2$). From `tinyrcnn/faster_rcnn/anchors.py`:

# %%
print(inspect.getsource(generate_anchors))

# %%
anchors = generate_anchors()
print(anchors)
assert anchors.shape == (9, 4) and list(anchors[0]) == [-84, -40, 99, 55]
w = anchors[:, 2] - anchors[:, 0] + 1
h = anchors[:, 3] - anchors[:, 1] + 1
print('areas (sqrt):', np.sqrt(w * h).round(), ' ratios h/w:', (h / w).round(2))

# %%
fig, ax = plt.subplots(figsize=(5, 5))
for (x1, y1, x2, y2), c in zip(anchors, plt.cm.viridis(np.linspace(0, 1, 9))):
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=c, lw=2))
ax.add_patch(Rectangle((0, 0), 16, 16, color='red'))
ax.set_xlim(-380, 400); ax.set_ylim(400, -380); ax.set_aspect('equal')
ax.set_title('the 9 anchors of one cell (red: the 16x16 cell)')
plt.show()

# %% [markdown]
# Shifted over a feature map of $h \times w$ cells with stride 16 they tile the image:
# $h \cdot w \cdot 9$ candidate boxes, about 20,000 for a $600 \times 1000$ image.

# %%
all_anchors = shift_anchors(anchors, 38, 63, stride=16)
print(all_anchors.shape, '= 38 x 63 x 9 anchors for a 600x1000 image')

# %% [markdown]
# ## Which anchors are objects? (Sec. 3.1.2)
#
# An anchor is positive when its IoU with a ground-truth box is at least 0.7, or when it is
# the best anchor of some ground truth (so that every object gets one); negative below 0.3;
# anchors crossing the image border are ignored while training; 256 are sampled per image, at
# most half positive (`tinyrcnn/faster_rcnn/anchor_targets.py`):

# %%
print(inspect.getsource(anchor_targets))

# %% [markdown]
# Here on a synthetic image, with anchors sized for its small objects:

# %%
rng = np.random.default_rng(4)
image, objects, _ = render_shapes_image(rng, 192, 256)
boxes = np.array([o['box'] for o in objects], np.float32)           # 0-based pixel corners
small = generate_anchors(16, scales=(2, 4, 8))
cells = shift_anchors(small, 192 // 16, 256 // 16, 16)
targets = anchor_targets(cells, boxes, (192, 256), np.random.default_rng(0))
lab = targets[0]
print('positive:', int((lab == 1).sum()), 'negative:', int((lab == 0).sum()),
      'ignored:', int((lab == -1).sum()), 'of', len(lab))

# %%
fig, ax = plt.subplots(figsize=(6, 4.5))
ax.imshow(image)
for b in cells[lab == 1]:
    ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color='lime', lw=1))
for b in boxes:
    ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color='white', lw=2, ls='--'))
ax.set_title('positive anchors (green) and ground truth (dashed)')
ax.axis('off')
plt.show()

# %% [markdown]
# ## One network, proposals and detections
#
# `FasterRCNN` is a `FastRCNN` with an `rpn` on its trunk. At test time one pass gives the
# feature map, the RPN's proposals (decoded, clipped, NMS at 0.7, best 300) and the head's
# scores for them. The RPN's outputs become proposals in `tinyrcnn/faster_rcnn/proposal_layer.py`:

# %%
print(inspect.getsource(proposal_layer))

# %% [markdown]
# Untrained, its proposals are arbitrary, but the cost is what matters here: compare with
# selective search on the same image.

# %%
tr.manual_seed(0)
model = FasterRCNN('vgg-tiny', num_classes=6, freeze_stages=0, anchor_scales=(2, 4, 8)).eval()
x = tr.data.preprocess(image, 'tiny')[None]
start = time.perf_counter()
with tr.no_grad():
    proposals, scores, deltas = model(tr.Tensor(x), (192, 256, 1.0))
t_rpn = time.perf_counter() - start
start = time.perf_counter()
ss = tr.proposals.selective_search(image)
t_ss = time.perf_counter() - start
print(f'RPN: {len(proposals)} proposals and their scores in {t_rpn * 1000:.0f} ms (whole network)')
print(f'selective search: {len(ss)} proposals in {t_ss * 1000:.0f} ms (proposals only)')
assert proposals.shape[1] == 4 and scores.shape == (len(proposals), 7)

# %%
fig, ax = plt.subplots(figsize=(5, 3))
ax.bar(['selective search\n(proposals only)', 'Faster R-CNN\n(whole network)'], [t_ss * 1000, t_rpn * 1000],
       color=['gray', 'tab:blue'])
ax.set_ylabel('ms per image (CPU)')
ax.set_title('proposals become nearly free')
plt.show()

# %% [markdown]
# ## Training (Sec. 3.2)
#
# The paper trains the shared network in four alternating steps (RPN; Fast R-CNN on its
# proposals; RPN again with the shared convs fixed; the head). Its released code also offers
# **approximate joint training**: one network, the RPN and detection losses summed, the
# proposals treated as constants. tinyrcnn has both: one image's loss is
# `tinyrcnn/faster_rcnn/loss.py`, the four steps `tinyrcnn/train/alternating.py`, and
# `python -m tinyrcnn demo --model faster` runs the whole pipeline on the synthetic data.

# %%
print(inspect.getsource(faster_rcnn_losses))

# %% [markdown]
# ## Summary
# - Anchors: 3 scales x 3 ratios per feature-map cell; positive at IoU >= 0.7 (or best for a
#   ground truth), negative below 0.3, 256 sampled per image.
# - The RPN shares the trunk, so proposals cost one small conv head instead of seconds of
#   selective search.
# - Its proposals feed the same RoI pooling and head as Fast R-CNN.
