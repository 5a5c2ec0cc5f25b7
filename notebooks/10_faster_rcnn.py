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
# # 10. Faster R-CNN: the detector around the RPN (Ren et al., 2015, Sec. 3.1.2, 3.2, 3.3)
#
# Chapter 9 took the Region Proposal Network apart. Faster R-CNN is that RPN and a Fast R-CNN
# detector on **one** conv trunk: the image goes through the shared conv layers once, the RPN
# proposes boxes from the conv5_3 map, and the detection head pools those boxes from the same
# map. This chapter follows one image through the whole network, writes out the losses (the
# paper's Eq. 1 and the released code's version of it), the three ways Sec. 3.2 trains the
# shared network, and what the proposals cost next to selective search.

# %%
import inspect
import time

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

import tinyrcnn as tr
from tinyrcnn import boxes as bx
from tinyrcnn.data.shapes import render_shapes_image
from tinyrcnn.faster_rcnn.anchor_targets import anchor_targets
from tinyrcnn.faster_rcnn.loss import faster_rcnn_losses
from tinyrcnn.faster_rcnn.network import FasterRCNN, proposal_rois
from tinyrcnn.faster_rcnn.proposal_layer import proposal_layer
from tinyrcnn.faster_rcnn.proposal_targets import proposal_targets
from tinyrcnn.faster_rcnn.rpn import rpn_loss

tr.manual_seed(0)

# %% [markdown]
# ## One trunk, two modules (Sec. 3)
#
# `FasterRCNN` is a `FastRCNN` (trunk up to conv5_3, RoI pooling, fc6/fc7, the two sibling
# layers) with an `rpn` on its trunk. Its forward pass, from `tinyrcnn/faster_rcnn/network.py`:

# %%
print(inspect.getsource(FasterRCNN.forward))

# %% [markdown]
# The shared map of a $1000 \times 600$ image, measured on vgg-tiny (the same four 2x2 pools as
# VGG16 before conv5_3, so the same size):

# %%
model = FasterRCNN('vgg-tiny', num_classes=6, freeze_stages=0)      # the paper's anchors: 128, 256, 512 px
big, big_objects, _ = render_shapes_image(np.random.default_rng(2), 600, 1000, max_objects=6)
x_big = tr.Tensor(tr.data.preprocess(big, 'tiny')[None])            # (1, 3, 600, 1000)
start = time.perf_counter()
with tr.no_grad():
    feats = model.features(x_big)
t_trunk = time.perf_counter() - start
fh, fw = feats.shape[2:]
print(f'600 x 1000 input -> shared map {tuple(feats.shape)} in {t_trunk * 1000:.0f} ms (vgg-tiny trunk)')
ceil_h, ceil_w = -(-600 // 16), -(-1000 // 16)                      # four ceil-mode pools (Caffe)
print(f'{fh} x {fw} here (floor-mode pooling); the released Caffe code, with ceil-mode pooling: '
      f'{ceil_h} x {ceil_w}')
print(f'anchor locations: {fh * fw} here, {ceil_h * ceil_w} in Caffe (the paper: "~2400", 60 x 40); '
      f'anchors: {fh * fw * 9} and {ceil_h * ceil_w * 9}')
assert (fh, fw) == (37, 62)

# %% [markdown]
# Chapter 8 derives the difference: Caffe's pooling rounds its output size up and pools a last,
# partial window; tinyrcnn's, like PyTorch's by default, drops the leftover row. Nothing else
# changes: an anchor's position is still $16 \times$ its cell.
#
# ## From the RPN's outputs to proposals (Sec. 3.3)
#
# At test time every anchor is moved by its predicted offsets, clipped to the image, boxes under
# 16 (original) pixels are dropped, the 6000 best by objectness go through NMS at IoU 0.7, and
# the 300 best survivors are the proposals (training: 12000 and 2000).
# `tinyrcnn/faster_rcnn/proposal_layer.py`:

# %%
print(inspect.getsource(proposal_layer))

# %% [markdown]
# ## The RPN's loss: Eq. 1, and the released code's version
#
# For one image, over the anchors of its mini-batch (Sec. 3.1.2):
#
# $$L(\{p_i\}, \{t_i\}) = \frac{1}{N_{cls}} \sum_i L_{cls}(p_i, p_i^*) + \lambda \frac{1}{N_{reg}} \sum_i p_i^* L_{reg}(t_i, t_i^*),$$
#
# * $i$ indexes the anchors; $p_i$ is the predicted probability that anchor $i$ is an object;
# * $p_i^*$ is its label: 1 for a positive anchor, 0 for a negative one (chapter 9's rules);
# * $t_i$ are the 4 predicted offsets $(t_x, t_y, t_w, t_h)$ of the anchor's box, $t_i^*$ those of
#   the ground-truth box it is matched to, both in the R-CNN parametrisation relative to the
#   anchor; $L_{reg}$ is the smooth L1 loss, counted only for positives ($p_i^* L_{reg}$);
# * $L_{cls}$ is the log loss over object / not object;
# * $N_{cls} = 256$, the mini-batch; $N_{reg} \approx 2400$, the number of **anchor locations**
#   (the map's $h \times w$, not the anchors); $\lambda = 10$, so that the two terms weigh about
#   the same. Table 9 varies $\lambda$ from 0.1 to 100: from 1 to 100 the mAP stays within about
#   one point, results are insensitive to $\lambda$ over a wide range.
#
# The released code, and tinyrcnn's `rpn_loss`, normalise differently: $\lambda = 1$ and both
# terms divided by the mini-batch size (256), with a smooth L1 of $\sigma = 3$ (quadratic only
# for $|x| < 1/\sigma^2 = 1/9$). The regression sum is then weighted $1/256$ instead of
# $\lambda / N_{reg} = 10/2400 \approx 1/240$: nearly the same number, which is why the two
# agree. From `tinyrcnn/faster_rcnn/rpn.py`:

# %%
print(inspect.getsource(rpn_loss))

# %% [markdown]
# Both, on the 600 x 1000 image and its objects, with the untrained RPN: `rpn_loss` with
# $\sigma = 1$ gives the paper's $\sum_i p_i^* L_{reg} / S$ ($S$ sampled anchors), which the
# paper's weight $\lambda / N_{reg}$ turns into its regression term.

# %%
gt_big = np.array([o['box'] for o in big_objects], np.float32)
with tr.no_grad():
    logits, deltas = model.rpn(feats)                               # (1, 18, 37, 62), (1, 36, 37, 62)
labels, targets = anchor_targets(model.anchors(fh, fw), gt_big, (600, 1000), np.random.default_rng(0))
S = int((labels >= 0).sum())
cls_code, reg_code = rpn_loss(logits, deltas, labels, targets, sigma=3.0)     # the released code's
_, reg_sigma1 = rpn_loss(logits, deltas, labels, targets, sigma=1.0)
lam, n_reg = 10, fh * fw
reg_paper = float(reg_sigma1.data) * S * lam / n_reg                 # lambda / N_reg * sum p* L_reg
print(f'{S} sampled anchors ({int((labels == 1).sum())} positive), N_reg = {fh} x {fw} = {n_reg} locations')
print(f'weight of sum p* L_reg:  code 1/{S} = {1 / S:.5f}   paper {lam}/{n_reg} = {lam / n_reg:.5f} '
      f'(= 1/{n_reg / lam:.0f}), ratio {lam / n_reg * S:.2f}')
print(f'L_cls (both): {float(cls_code.data):.4f}')
print('regression term:')
print(f'  code:  1/{S} x sum, sigma 3             {float(reg_code.data):.4f}')
print(f'  paper weight {lam}/{n_reg}, same sigma 3     {float(reg_code.data) * S * lam / n_reg:.4f}')
print(f'  paper: {lam}/{n_reg} x sum, sigma 1 (Eq. 1) {reg_paper:.4f}')

# %% [markdown]
# With the same smooth L1 the two normalisations differ only by the printed ratio. The larger
# difference is $\sigma$: smooth L1 is $0.5\,\sigma^2 x^2$ for $|x| < 1/\sigma^2$ and
# $|x| - 0.5/\sigma^2$ beyond, so for the same error $\sigma = 3$ gives up to 9 times the loss of
# $\sigma = 1$ near zero and $4/9$ more per coordinate for $|x| \ge 1$; in gradient terms, it
# pushes every offset error above $1/9$ with full strength, where $\sigma = 1$ fades out below 1.
# The offsets of an untrained RPN's positive anchors are mostly below 1, where the two differ
# most. Table 9 suggests such a factor in the weighting matters little.
#
# ## The detection head's targets
#
# The head is trained as in Fast R-CNN (chapter 4) on RoIs sampled from the RPN's own proposals
# (plus the ground-truth boxes): 128 per image, up to 25 % foreground. One difference: Fast
# R-CNN normalises the regression targets with means and standard deviations measured on the
# training set (`fast_rcnn.minibatch.target_stats`); Faster R-CNN's released code uses **fixed**
# ones, means 0 and stds (0.1, 0.1, 0.2, 0.2) (`BBOX_NORMALIZE_STDS`), since its proposals, and
# so the targets' spread, change while the RPN trains. `tinyrcnn/faster_rcnn/proposal_targets.py`:

# %%
print(inspect.getsource(proposal_targets))
print('means', bx.BBOX_NORMALIZE_MEANS, ' stds', bx.BBOX_NORMALIZE_STDS)
assert bx.BBOX_NORMALIZE_STDS == (0.1, 0.1, 0.2, 0.2)

# %% [markdown]
# ## Training the shared network (Sec. 3.2)
#
# The RPN and the detector could be trained separately, but then they would not share their
# conv layers. Sec. 3.2 describes three ways to make them share:
#
# 1. **4-step alternating training**, used for the paper's main results: (1) train the RPN from
#    the ImageNet model; (2) train a separate Fast R-CNN detector on the step-1 proposals, also
#    from the ImageNet model; (3) initialise the RPN from the detector, fix the shared conv layers
#    and fine-tune only the RPN's own layers; (4) with the shared layers still fixed, fine-tune
#    the detector's own layers. (`tinyrcnn/train/alternating.py`, `schedule='alternating'`.)
# 2. **Approximate joint training**: one network, the RPN's and the detector's losses added in
#    every SGD step, and the proposals treated as fixed boxes, so the gradient with respect to
#    their coordinates is ignored. The paper reports close results, 70.0 % against the 69.9 % of
#    alternating training (VOC 2007, VGG16), with 25-50 % less training time, and its released
#    Python code includes this solver. (`tinyrcnn/faster_rcnn/loss.py`, `schedule='joint'`,
#    tinyrcnn's default.)
# 3. **Non-approximate joint training** would also back-propagate into the box coordinates;
#    that needs an RoI pooling that is differentiable with respect to them (an "RoI warping"
#    layer), which the paper leaves out of its scope. tinyrcnn's RoI pooling (chapter 2) returns
#    no gradient for the rois, so it is not implemented here.
#
# One image's loss, in either schedule (`stage` picks the RPN's or the head's terms for the
# alternating steps):

# %%
print(inspect.getsource(faster_rcnn_losses))

# %%
cfg = tr.train.FasterTrainConfig(anchor_scales=(2, 4, 8))
small_model = FasterRCNN('vgg-tiny', num_classes=6, freeze_stages=0, anchor_scales=(2, 4, 8)).train()
image, objects, _ = render_shapes_image(np.random.default_rng(4), 192, 256)
gt = np.array([o['box'] for o in objects], np.float32)
names = sorted({o['name'] for o in objects})
gt_labels = np.array([1 + names.index(o['name']) for o in objects])     # any class ids in 1..6 will do
x = tr.Tensor(tr.data.preprocess(image, 'tiny')[None])
losses = faster_rcnn_losses(small_model, x, (192, 256, 1.0), gt, gt_labels, cfg, np.random.default_rng(0))
print({k: round(float(v.data), 4) for k, v in losses.items()})
losses['loss'].backward()
rpn_grad = np.abs(small_model.rpn.conv.weight.grad).max()
head_grad = np.abs(small_model.cls_score.weight.grad).max()
print(f'one backward pass reaches both modules: max |grad| RPN conv {rpn_grad:.2e}, cls_score {head_grad:.2e}')
assert rpn_grad > 0 and head_grad > 0

# %% [markdown]
# ## Proposals and detections in one pass, and their cost
#
# At test time one pass gives the feature map, the RPN's proposals (decoded, clipped, NMS at
# 0.7, best 300) and the head's scores for them. Untrained, its proposals are arbitrary, but the
# cost is what matters here. We time the parts of `forward` one by one (the conv trunk, the RPN
# with the proposal layer, the detection head on the 300 proposals) and selective search on the
# same image.

# %%
small_model.eval()
with tr.no_grad():
    t0 = time.perf_counter()
    feats = small_model.features(x)                                  # (1, 128, 12, 16)
    t1 = time.perf_counter()
    logits, deltas = small_model.rpn(feats)
    proposals, _ = small_model.propose(logits.data, deltas.data, (192, 256, 1.0))   # (300, 4)
    t2 = time.perf_counter()
    scores, _ = small_model.head(feats, proposal_rois(proposals, feats))             # (300, 7)
    t3 = time.perf_counter()
    same, same_scores, _ = small_model(x, (192, 256, 1.0))           # the one-call forward
assert np.array_equal(same, proposals) and np.allclose(same_scores.data, scores.data)
start = time.perf_counter()
ss = tr.proposals.selective_search(image)
t_ss = time.perf_counter() - start
parts = {'conv trunk': t1 - t0, 'RPN + proposal layer': t2 - t1, 'detection head (300 RoIs)': t3 - t2}
for name, t in parts.items():
    print(f'{name:26s} {t * 1000:6.0f} ms')
print(f'{"selective search":26s} {t_ss * 1000:6.0f} ms for {len(ss)} proposals')
print(f'proposals: RPN {(t2 - t1) * 1000:.0f} ms against selective search {t_ss * 1000:.0f} ms '
      f'({t_ss / (t2 - t1):.0f}x)')
assert proposals.shape[1] == 4 and scores.shape == (len(proposals), 7)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw=dict(width_ratios=[1, 1.2]))
ax = axes[0]
ax.imshow(image)
for b in proposals[:10]:
    ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color='yellow', lw=1))
ax.set_title("the 10 best of the untrained RPN's proposals")
ax.axis('off')
ax = axes[1]
left = 0.0
for (name, t), c in zip(parts.items(), ['tab:blue', 'tab:orange', 'tab:green']):
    ax.barh(1, t * 1000, left=left, color=c, label=name)
    left += t * 1000
ax.barh(0, t_ss * 1000, color='gray', label='selective search (proposals only)')
ax.set_yticks([0, 1], ['selective search', 'Faster R-CNN'])
ax.set_xlabel('ms per image (CPU)')
ax.set_title('where the time goes')
ax.legend(fontsize=7, loc='upper center', bbox_to_anchor=(0.5, -0.22), ncol=2)
plt.show()

# %% [markdown]
# The RPN and its proposal layer are a small part of the pass (the paper: 10 ms of a 198 ms
# VGG16 pass on a GPU, against 1.5 s for selective search on a CPU, Table 5). Here the
# detection head is the largest part: RoI pooling of 300 RoIs loops in NumPy (chapter 2),
# which a GPU does in a few milliseconds.

# %% [markdown]
# ## Summary
# - One trunk, two modules: the RPN proposes from the conv5_3 map (37 x 62 for 600 x 1000 with
#   floor-mode pooling, 38 x 63 in Caffe), the Fast R-CNN head pools the proposals from it.
# - Eq. 1: $N_{cls} = 256$, $N_{reg} \approx 2400$ locations, $\lambda = 10$; the released code
#   and tinyrcnn use $\lambda = 1$, both terms over 256 and $\sigma = 3$, and the two weightings
#   nearly coincide (printed above); Table 9 finds $\lambda$ matters little.
# - The head's targets use fixed stds (0.1, 0.1, 0.2, 0.2), not data statistics.
# - Three training schemes (Sec. 3.2): 4-step alternating, approximate joint (70.0 vs 69.9 % mAP,
#   25-50 % faster), non-approximate joint (not done); tinyrcnn has the first two.
# - The RPN shares the trunk, so proposals cost one small conv head instead of seconds of
#   selective search.

# %% [markdown]
# ## Exercises
#
# Each exercise has a code cell: put your answer in `answer` (it starts as `None`) and run the
# cell; it prints "correct", or "not yet" and a hint, by comparing with what tinyrcnn computes.
#
# 1. **The proposal layer by hand (Sec. 3.3).** Six anchors of a 200 x 300 input (H x W) get zero
#    offsets, so each box is its anchor, and these objectness scores:
#
#    | | box | score |
#    | --- | --- | --- |
#    | a | [10, 10, 109, 109] | 0.9 |
#    | b | [15, 10, 114, 109] | 0.8 |
#    | c | [40, 10, 139, 109] | 0.7 |
#    | d | [250, 150, 349, 249] | 0.6 |
#    | e | [5, 150, 14, 159] | 0.95 |
#    | f | [245, 145, 319, 219] | 0.5 |
#
#    `proposal_layer` clips to the image, drops boxes under 16 pixels, suppresses at IoU 0.7 and
#    keeps the best 300. Which boxes come out, best first? Which one would survive if the layer
#    ran NMS before clipping?
# 2. **Smooth L1 with $\sigma = 3$ (Eq. 1 and the released code).** What loss does one
#    coordinate with an offset error of 0.1 get with $\sigma = 3$ (the code's RPN) and with
#    $\sigma = 1$ (the paper's), and one with an error of 2?
# 3. **The head's mini-batch (Sec. 3.2).** In training (`FasterTrainConfig`: one image, 128 RoIs,
#    at most 25 % foreground at IoU $\ge 0.5$, background at IoU in $[0, 0.5)$), an image with 3
#    objects gets 300 proposals from the RPN; 20 of them overlap an object at IoU $\ge 0.5$, the
#    others overlap none. How many foreground and how many background RoIs does
#    `proposal_targets` sample?

# %%
from tinyrcnn.utils import check_answer as check   # 'correct', or 'not yet' and a hint


# %%
# Exercise 1: answer = the letters of the proposals, best first, as a string such as 'fed'
answer = None
six = np.array([[10, 10, 109, 109], [15, 10, 114, 109], [40, 10, 139, 109], [250, 150, 349, 249],
                [5, 150, 14, 159], [245, 145, 319, 219]], np.float32)
six_scores = np.array([0.9, 0.8, 0.7, 0.6, 0.95, 0.5], np.float32)
_, kept_scores = proposal_layer(six_scores, np.zeros((6, 4), np.float32), six, (200, 300))
check(answer, ''.join('abcdef'[int(np.flatnonzero(six_scores == s)[0])] for s in kept_scores),
      'widths are x2 - x1 + 1; clip x to [0, 299] and y to [0, 199] before the IoUs; a box is '
      'suppressed when its IoU with a better kept box is above 0.7')

# %%
# Exercise 2: answer = (sigma 3 at 0.1, sigma 1 at 0.1, sigma 3 at 2, sigma 1 at 2)
answer = None
from tinyrcnn.ops.loss import smooth_l1_loss

check(answer, [float(smooth_l1_loss(tr.Tensor(np.array([[err]])), np.zeros((1, 1)), sigma=sigma).data)
               for err in (0.1, 2.0) for sigma in (3.0, 1.0)],
      'smooth L1 is 0.5 (sigma x)^2 for |x| < 1 / sigma^2, else |x| - 0.5 / sigma^2')

# %%
# Exercise 3: answer = (foreground RoIs, background RoIs)
answer = None
objects3 = np.array([[20, 30, 119, 149], [150, 40, 269, 119], [60, 200, 229, 299]], np.float32)
rng = np.random.default_rng(0)
near = np.repeat(objects3, [7, 7, 6], axis=0) + rng.integers(-6, 7, (20, 4)).astype(np.float32)
corner = np.stack([rng.uniform(400, 900, 280), rng.uniform(0, 500, 280)], axis=1)   # far right: IoU 0
far = np.hstack([corner, corner + rng.uniform(20, 90, (280, 2))]).astype(np.float32)
assert (bx.box_iou(near, objects3).max(axis=1) >= 0.5).all() and bx.box_iou(far, objects3).max() == 0
_, roi_labels, _, _ = proposal_targets(np.concatenate([near, far]), objects3, [1, 2, 3], 6,
                                       tr.train.FasterTrainConfig(), np.random.default_rng(0))
check(answer, [(roi_labels > 0).sum(), (roi_labels == 0).sum()],
      'before sampling, the ground-truth boxes join the proposals; foreground is capped at '
      '25 % of 128, background fills the rest')
