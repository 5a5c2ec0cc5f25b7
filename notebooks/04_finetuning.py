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
# # 4. Fine-tuning for detection (Fast R-CNN, Sec. 2.3)
#
# SPPnet could not fine-tune the layers below its pyramid. The reason is cost: R-CNN and
# SPPnet build each mini-batch from RoIs of *different* images, and a RoI's receptive field
# usually spans its whole image, so back-propagating one RoI means a forward and backward pass
# over a whole image. Fast R-CNN samples **hierarchically**: first $N$ images, then $R/N$ RoIs
# from each, so the RoIs of an image share its conv computation, forward and backward. With
# $N = 2$ and $R = 128$ this is "roughly 64x faster" than one RoI from each of 128 images.
#
# This chapter measures that, then looks at the multi-task loss, the RoI sampling, and the
# backward pass of RoI pooling.

# %%
import inspect
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

import tinyrcnn as tr
import tinyrcnn.functional as F
from tinyrcnn.data import VOCDetection, make_shapes_voc
from tinyrcnn.boxes import decode, encode, random_rois
from tinyrcnn.fast_rcnn.loss import multitask_loss
from tinyrcnn.fast_rcnn.minibatch import (expand_targets, make_minibatch, prepare_roidb, sample_rois,
                                          target_stats)
from tinyrcnn.train import TrainConfig

tr.manual_seed(0)
rng = np.random.default_rng(0)

# %% [markdown]
# ## Why hierarchical sampling is ~64x cheaper
#
# The cost of an SGD step is dominated by the conv layers, which run once per *image* in the
# mini-batch: $N = 2$ images for Fast R-CNN, 128 for one RoI from each of 128 images. The head
# (RoI pooling and the fc layers) runs once per RoI in both cases. So the ratio is about
# $128 / 2 = 64$. We time a forward and backward pass of vgg-tiny Fast R-CNN on mini-batches of
# 128 RoIs drawn from $N$ = 1, 2, 4 images of 192 x 256 pixels, and extend the line to $N = 128$.

# %%
model = tr.models.FastRCNN('vgg-tiny', num_classes=6, freeze_stages=0).train()
labels = rng.integers(0, 7, 128)


def sgd_step_time(N, repeats=2):
    images = tr.Tensor(rng.standard_normal((N, 3, 192, 256)).astype(np.float32))
    rois = random_rois(128, N, 192, 256, seed=N)                   # (128, 5), spread over the N images
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        cls_score, bbox_pred = model(images, rois)
        F.cross_entropy(cls_score, labels).backward()
        times.append(time.perf_counter() - start)
        model.zero_grad()
    return min(times)


Ns = [1, 2, 4]
step_times = [sgd_step_time(N) for N in Ns]
per_image, fixed = np.polyfit(Ns, step_times, 1)
t_fast, t_one_roi_per_image = fixed + 2 * per_image, fixed + 128 * per_image
for N, s in zip(Ns, step_times):
    print(f'N = {N}: {s:.2f} s per step (128 RoIs)')
print(f'conv cost {per_image:.2f} s per image, head and the rest {fixed:.2f} s')
print(f'N = 2: {t_fast:.2f} s;  N = 128 (one RoI per image): {t_one_roi_per_image:.1f} s;  '
      f'ratio {t_one_roi_per_image / t_fast:.0f}x')

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(Ns, step_times, 'o', label='measured')
n = np.arange(1, 129)
ax.plot(n, fixed + per_image * n, '--', label='linear fit')
ax.plot([2, 128], [t_fast, t_one_roi_per_image], 's', ms=9, label='N = 2 vs N = 128')
ax.set(xscale='log', yscale='log', xlabel='images per mini-batch N (128 RoIs in all)',
       ylabel='seconds per SGD step', title='hierarchical sampling: cost grows with N')
ax.legend()
plt.show()

# %% [markdown]
# With conv cost $c$ per image and head cost $h$ (RoI pooling and the fc layers over 128 RoIs,
# paid by both strategies), the ratio is $(h + 128c) / (h + 2c)$: below 64 by as much as the
# head weighs against the convolutions (the fit above is from three noisy timings on a shared
# CPU, so the printed ratio moves from run to run). With VGG16 the convolutions dominate a
# step even more, and the ratio comes closer to 64.

# %% [markdown]
# ## The multi-task loss
#
# Each RoI has a true class $u$ ($0$ is background) and, if $u \ge 1$, a regression target
# $v = (v_x, v_y, v_w, v_h)$. The network outputs class probabilities $p$ and per-class box
# offsets $t^k$. The loss (Sec. 2.3, eq. 1-3) is
#
# $$L(p, u, t^u, v) = L_\mathrm{cls}(p, u) + \lambda\,[u \ge 1]\, L_\mathrm{loc}(t^u, v),
# \qquad L_\mathrm{cls} = -\log p_u,$$
#
# $$L_\mathrm{loc}(t^u, v) = \sum_{i \in \{x, y, w, h\}} \mathrm{smooth}_{L_1}(t^u_i - v_i),
# \qquad \mathrm{smooth}_{L_1}(x) = \begin{cases} 0.5\,x^2 & |x| < 1 \\ |x| - 0.5 & \text{otherwise.}\end{cases}$$
#
# Smooth L1 is quadratic near zero and linear beyond: its gradient never exceeds 1, so an
# outlier target cannot blow up training the way L2 can (R-CNN and SPPnet used L2 and needed a
# careful learning rate).

# %%
d = np.linspace(-3, 3, 121)
loss, grad = [], []
for value in d:
    x = tr.Tensor(np.array([[value]]), requires_grad=True)
    out = F.smooth_l1_loss(x, np.zeros((1, 1)))
    out.backward()
    loss.append(out.item())
    grad.append(x.grad[0, 0])
loss, grad = np.array(loss), np.array(grad)
assert np.allclose(loss, np.where(np.abs(d) < 1, 0.5 * d ** 2, np.abs(d) - 0.5))

fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
axes[0].plot(d, loss, label='smooth L1')
axes[0].plot(d, 0.5 * d ** 2, '--', label='L2: $0.5x^2$')
axes[0].set(xlabel='$t_i - v_i$', title='loss')
axes[1].plot(d, grad, label='smooth L1')
axes[1].plot(d, d, '--', label='L2')
axes[1].set(xlabel='$t_i - v_i$', title='gradient: bounded by 1 for smooth L1')
for ax in axes:
    ax.legend()
    ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# In code (`tinyrcnn/fast_rcnn/loss.py`), $[u \ge 1]$ and "the four outputs of class $u$" are
# one weight mask over the $4(K+1)$ regression outputs (`expand_targets`):

# %%
print(inspect.getsource(multitask_loss))
print(inspect.getsource(expand_targets))

# %% [markdown]
# A check on four RoIs, two of them background:
# changing the box outputs of background RoIs changes nothing; the loss is the mean log loss
# plus the smooth L1 of the foreground RoIs' true-class outputs, divided by the number of RoIs.

# %%
K = 2
u = np.array([1, 0, 2, 0])                                         # true classes
v = rng.standard_normal((4, 4)).astype(np.float32)                  # regression targets
targets, weights = expand_targets(v, u, K)                           # (4, 12) each
cfg = TrainConfig()                                                  # lambda = 1, sigma = 1
cls_score = tr.Tensor(rng.standard_normal((4, K + 1)))
bbox_pred = rng.standard_normal((4, 4 * (K + 1)))
total, l_cls, l_loc = multitask_loss(cls_score, tr.Tensor(bbox_pred), u, targets, weights, cfg)

changed = bbox_pred.copy()
changed[u == 0] += 10.0                                              # background rows only
assert np.isclose(multitask_loss(cls_score, tr.Tensor(changed), u, targets, weights)[0].item(), total.item())

p = np.exp(cls_score.data) / np.exp(cls_score.data).sum(1, keepdims=True)
t_u = np.stack([bbox_pred[r, 4 * u[r]:4 * u[r] + 4] for r in range(4)])   # (4, 4) t^u
diff = np.abs(t_u - v)[u >= 1]
smooth = np.where(diff < 1, 0.5 * diff ** 2, diff - 0.5)
assert np.isclose(l_cls.item(), -np.log(p[np.arange(4), u]).mean())
assert np.isclose(l_loc.item(), smooth.sum() / 4)
print(f'L = {total.item():.4f} = L_cls {l_cls.item():.4f} + L_loc {l_loc.item():.4f}')

# %% [markdown]
# ## Mini-batch sampling
#
# From each image, 25% of the RoIs are **foreground**: proposals with IoU $\ge 0.5$ with a
# ground-truth box, labelled with its class. The rest are **background**: maximum IoU in
# $[0.1, 0.5)$, label 0. The lower bound 0.1 acts as a heuristic for hard example mining.
# Ground-truth boxes join the proposals. With fewer foreground candidates than 25%, all are
# taken. `sample_rois` (`tinyrcnn/fast_rcnn/minibatch.py`) does this for one image;
# `make_minibatch` for $N$ images.

# %%
print(inspect.getsource(sample_rois))

# %%
root = make_shapes_voc(tempfile.mkdtemp(prefix='tinyrcnn-ch4-'), num_train=2, num_test=0, seed=4)
dataset = VOCDetection(root, 'trainval')
proposals = {dataset.ids[i]: tr.proposals.selective_search(dataset[i]['image']) for i in range(len(dataset))}
cfg = TrainConfig(trunk='vgg-tiny', scales=(192,), max_size=320, source='tiny')  # N=2, R=128, fg 25%
roidb = prepare_roidb(dataset, proposals, cfg)
entry = roidb[0]
keep, roi_labels = sample_rois(entry, cfg.rois_per_batch // cfg.ims_per_batch, cfg, np.random.default_rng(0))
iou = entry['max_iou'][keep]
fg = roi_labels > 0
print(f'image 0: {len(entry["rois"])} candidates ({len(entry["gt_boxes"])} ground truth + proposals)')
print(f'sampled {len(keep)}: {fg.sum()} foreground ({fg.mean():.0%}), IoU {iou[fg].min():.2f}..{iou[fg].max():.2f}; '
      f'{(~fg).sum()} background, IoU {iou[~fg].min():.2f}..{iou[~fg].max():.2f}')
assert fg.mean() <= cfg.fg_fraction and (iou[fg] >= 0.5).all()
assert ((iou[~fg] >= 0.1) & (iou[~fg] < 0.5)).all()

image = dataset[0]['image']
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].hist(entry['max_iou'], bins=40, range=(0, 1), color='grey', label='all candidates')
axes[0].hist(iou[fg], bins=40, range=(0, 1), color='tab:green', label='sampled foreground')
axes[0].hist(iou[~fg], bins=40, range=(0, 1), color='tab:red', alpha=0.7, label='sampled background')
for t in (0.1, 0.5):
    axes[0].axvline(t, color='k', ls='--', lw=1)
axes[0].set(xlabel='max IoU with a ground-truth box', ylabel='RoIs', yscale='log')
axes[0].legend()
axes[1].imshow(image)
for (x1, y1, x2, y2), f in zip(entry['rois'][keep], fg):
    axes[1].add_patch(Rectangle((x1, y1), x2 - x1 + 1, y2 - y1 + 1, fill=False, lw=1.5 if f else 0.8,
                                ec='lime' if f else 'red', alpha=0.9 if f else 0.4))
axes[1].set_title('sampled RoIs: foreground (green), background (red)')
axes[1].axis('off')
plt.show()

# %% [markdown]
# ## Box regression
#
# What does the regressor predict? Not box corners but the R-CNN parametrisation (R-CNN,
# Appendix C; Fast R-CNN, Sec. 2.3): a proposal $P$ and its ground-truth box $G$, each written
# as centre, width and height $(x, y, w, h)$, give the target
#
# $$t_x = \frac{G_x - P_x}{P_w}, \qquad t_y = \frac{G_y - P_y}{P_h}, \qquad
# t_w = \log\frac{G_w}{P_w}, \qquad t_h = \log\frac{G_h}{P_h}.$$
#
# The shift is measured in units of the proposal's own size and the size change in log space,
# so the same $t$ means the same correction for a small box and a large one (scale-invariant),
# and any $t_w$ gives a positive width. Decoding inverts it: $\hat G_x = P_w t_x + P_x$,
# $\hat G_w = P_w \exp(t_w)$, and so on. tinyrcnn's boxes are inclusive pixels
# $[x_1, y_1, x_2, y_2]$, so $w = x_2 - x_1 + 1$ and $x = x_1 + w/2$ (`_centres`), and `decode`
# writes $x_2 = x + w/2 - 1$ to be the exact inverse (`tinyrcnn/boxes.py`):

# %%
print(inspect.getsource(tr.boxes._centres))
print(inspect.getsource(encode))
print(inspect.getsource(decode))

# %% [markdown]
# The check: encode then decode gives back the ground truth, to rounding, on random boxes.

# %%
P = random_rois(1000, 1, 480, 640, seed=1)[:, 1:].astype(np.float64)     # (1000, 4) proposals
G = random_rois(1000, 1, 480, 640, seed=2)[:, 1:].astype(np.float64)     # (1000, 4) ground truth
t = encode(P, G)                                                          # (1000, 4) tx, ty, tw, th
assert np.allclose(decode(P, t), G, atol=1e-6)
pw, gw = P[:, 2] - P[:, 0] + 1, G[:, 2] - G[:, 0] + 1
assert np.allclose(t[:, 2], np.log(gw / pw))                              # t_w = log(G_w / P_w)
print(f'decode(P, encode(P, G)) == G: max error {np.abs(decode(P, t) - G).max():.1e} pixels')

# %% [markdown]
# **Normalisation and $\lambda = 1$.** "We normalize the ground-truth regression targets $v_i$
# to have zero mean and unit variance. All experiments use $\lambda = 1$" (Sec. 2.3).
# Foreground proposals overlap their object by IoU $\ge 0.5$, so their raw targets are small
# (a few tenths): the smooth L1 loss would sit deep in its quadratic part, with a loss and a
# gradient far below the log loss's, and $\lambda$ would have to be tuned to make up for it.
# Divided by the training set's standard deviation, every target is of order one, like the
# log loss, and $\lambda = 1$ balances the two. `target_stats` computes the statistics over
# the foreground candidates of the whole training set (here only two images), once, before
# training; the exported model folds them back into its last layer (`export_model`), so at
# test time its outputs decode directly.

# %%
means, stds = target_stats(roidb, cfg)                                    # (4,), (4,)
print('target means', np.round(means, 3), ' stds', np.round(stds, 3))
v_raw = np.concatenate([encode(e['rois'][m], e['gt_boxes'][e['assignment'][m]])
                        for e in roidb for m in [e['max_iou'] >= cfg.fg_thresh]])   # (F, 4)
v_norm = (v_raw - means) / stds
assert np.allclose(v_norm.mean(0), 0, atol=1e-4) and np.allclose(v_norm.std(0), 1, atol=1e-3)


def loc_loss_at_zero(v):
    """L_loc of a regressor that still outputs 0 (as at initialisation), per foreground RoI."""
    d = np.abs(v)
    return np.where(d < 1, 0.5 * d ** 2, d - 0.5).sum(1).mean()


K_shapes = dataset.num_classes
print(f'{len(v_raw)} foreground targets. Loss of an untrained network: L_cls = log(K+1) = '
      f'{np.log(K_shapes + 1):.2f};  L_loc = {loc_loss_at_zero(v_raw):.3f} on raw targets, '
      f'{loc_loss_at_zero(v_norm):.2f} on normalised ones')

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
for ax, v, title in ((axes[0], v_raw, 'raw targets'), (axes[1], v_norm, 'normalised targets')):
    for i, name in enumerate(('$t_x$', '$t_y$', '$t_w$', '$t_h$')):
        ax.hist(v[:, i], bins=30, histtype='step', lw=1.5, label=name)
    ax.set(title=title, xlabel='target value', ylabel='foreground RoIs')
    ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The whole mini-batch: both images rescaled, flipped with probability 0.5, padded into one
# blob; RoIs carry their image's index, and `bbox_targets` are the normalised targets of each
# RoI's true class.

# %%
blob, rois, batch_labels, bbox_targets, bbox_weights = make_minibatch(
    dataset, roidb, [0, 1], cfg, dataset.num_classes, means, stds, np.random.default_rng(1))
print('images', blob.shape, ' rois', rois.shape, ' labels', batch_labels.shape, ' bbox_targets', bbox_targets.shape)
print('RoIs per image:', np.bincount(rois[:, 0].astype(int)).tolist(), ' foreground:', int((batch_labels > 0).sum()))

# %% [markdown]
# ## Back-propagation through RoI pooling
#
# For one image ($N = 1$), with $i^*(r, j)$ the input cell that won bin $j$ of RoI $r$ in the
# forward pass, the paper's equation (Sec. 2.3) is
#
# $$\frac{\partial L}{\partial x_i} = \sum_r \sum_j \,[i = i^*(r, j)]\, \frac{\partial L}{\partial y_{rj}}:$$
#
# every output hands its gradient to its bin's winner, and a cell that wins several bins (of
# one RoI or of overlapping RoIs) sums them. The forward pass saves the argmax for exactly this.
# Below, overlapping RoIs on a small map: the equation written as a scatter-add over the saved
# argmax equals autograd, and `gradcheck` agrees with finite differences.

# %%
x = tr.Tensor(rng.permutation(2 * 3 * 10 * 12).reshape(2, 3, 10, 12) / 240.0, requires_grad=True)
rois = np.array([[0, 0, 0, 90, 70], [0, 20, 10, 100, 80], [0, 30, 30, 60, 60], [1, 8, 4, 150, 120]], np.float64)
y = F.roi_pool(x, rois, (3, 3), spatial_scale=1 / 8)                 # (4, 3, 3, 3)
argmax = y._ctx.argmax                # (R, C, 3, 3): i*(r, j), saved by forward; read it now,
gy = rng.standard_normal(y.shape)     # as backward releases what forward saved
y.backward(gy)

gx = np.zeros(x.shape)
n = rois[:, 0].astype(int)
for r in range(len(rois)):
    for c in range(x.shape[1]):
        won = argmax[r, c] >= 0                                      # an empty bin (-1) sends nothing
        np.add.at(gx[n[r], c].reshape(-1), argmax[r, c][won], gy[r, c][won])   # sum over j
assert np.allclose(gx, x.grad)
winners = argmax[n == 0, 0]                                          # image 0, channel 0
wins = np.bincount(winners[winners >= 0], minlength=10 * 12)          # bins won by each cell
print(f'equation == autograd; in channel 0 of image 0, {(wins > 1).sum()} cells won more than one bin '
      f'(up to {wins.max()}), their gradients summed')
assert tr.gradcheck(lambda x: F.roi_pool(x, rois, (3, 3), 1 / 8), [tr.Tensor(x.data.copy(), requires_grad=True)])
print('gradcheck: ok')

# %% [markdown]
# ## Summary
#
# * Hierarchical sampling ($N = 2$ images, $R/N = 64$ RoIs each) makes the conv cost of a
#   step that of 2 images instead of 128: about 64x cheaper, which is what lets Fast R-CNN
#   fine-tune the conv layers.
# * The loss is log loss plus $\lambda [u \ge 1]$ smooth L1 on the true class's box offsets;
#   smooth L1's gradient is bounded, so no careful learning-rate tuning is needed.
# * The regressor predicts the R-CNN offsets $t_x, t_y$ (shift in units of the proposal's
#   size) and $t_w, t_h$ (log size ratio); `decode` inverts `encode`. Targets are normalised to
#   zero mean and unit variance over the training set, which is what lets $\lambda = 1$
#   balance the two losses.
# * Each image gives 25% foreground RoIs (IoU $\ge 0.5$) and 75% background (IoU in
#   $[0.1, 0.5)$).
# * RoI pooling's backward sends each output's gradient to the argmax saved in forward, summed
#   over bins and RoIs, and passes `gradcheck`.

# %% [markdown]
# ## Exercises
#
# Work each answer out first, then type it into the cell below the question and run the cell:
# it checks your answer against what tinyrcnn computes and prints `correct` or a hint (an
# unanswered cell, `answer = None`, prints what to do).
#
# 1. **A mini-batch from a hard image.** An image has 5 proposals with IoU $\ge 0.5$, 200 with
#    maximum IoU in $[0.1, 0.5)$ and 50 below 0.1. With Sec. 2.3's settings (`TrainConfig()`:
#    $R = 128$ RoIs from $N = 2$ images, 25 % foreground), how many foreground and how many
#    background RoIs does `sample_rois` take from it?
# 2. **The gradient of the box loss.** Two RoIs, box outputs minus targets
#    $t - v = \begin{pmatrix} 0.4 & -2.5 \\ 3 & -0.2 \end{pmatrix}$ (two of the four coordinates
#    each), and a weight mask $\begin{pmatrix} 1 & 1 \\ 0 & 1 \end{pmatrix}$ (a zero where an output
#    is not the true class's, as `expand_targets` makes). What is the gradient of
#    `F.smooth_l1_loss(t, v, weight)` with respect to $t$? Mind what the sum is divided by.
# 3. **A regression target.** Proposal $P = [0, 0, 99, 49]$, ground truth $G = [10, 0, 109, 99]$
#    (inclusive pixels, so $P$ is 100 wide): what is $(t_x, t_y, t_w, t_h)$ = `encode(P, G)`?

# %%
# 1. (foreground, background) RoIs sampled from the image
answer = None

hard = {'max_iou': np.concatenate([np.full(5, 0.7), np.full(200, 0.3), np.full(50, 0.05)]),
        'gt_labels': np.array([3]), 'assignment': np.zeros(255, np.int64)}        # one object, class 3
paper_cfg = TrainConfig()
_, hard_labels = sample_rois(hard, paper_cfg.rois_per_batch // paper_cfg.ims_per_batch, paper_cfg,
                             np.random.default_rng(0))
sampled = (int((hard_labels > 0).sum()), int((hard_labels == 0).sum()))
if answer is None:
    print('not answered yet: set answer = (foreground, background). Hint: how many RoIs does one image '
          'give, and what if there are fewer foreground candidates than 25 % of them?')
elif np.shape(answer) == (2,) and tuple(answer) == sampled:
    print('correct: every foreground proposal is taken, and background fills the rest of the image\'s share')
else:
    print(f'not yet: {answer}. R / N RoIs per image; foreground is at most 25 % of them; '
          'proposals below IoU 0.1 are never sampled.')

# %%
# 2. d loss / d t, as a 2 x 2 nested list
answer = None

t_minus_v = tr.Tensor(np.array([[0.4, -2.5], [3.0, -0.2]]), requires_grad=True)
F.smooth_l1_loss(t_minus_v, np.zeros((2, 2)), np.array([[1.0, 1.0], [0.0, 1.0]])).backward()
if answer is None:
    print('not answered yet: set answer = [[., .], [., .]]. Hint: smooth L1\'s derivative is x for |x| < 1 '
          'and sign(x) beyond; the loss is a sum over the elements divided by the number of rows.')
elif np.shape(answer) == (2, 2) and np.allclose(answer, t_minus_v.grad):
    print('correct: bounded by 1 (before the division by R), and nothing for a masked output')
else:
    print(f'not yet: {answer}. Multiply by the weight, and divide by the number of RoIs (2).')

# %%
# 3. (t_x, t_y, t_w, t_h) for P = [0, 0, 99, 49] and G = [10, 0, 109, 99], to 3 decimals
answer = None

target = encode(np.array([[0, 0, 99, 49]], np.float64), np.array([[10, 0, 109, 99]], np.float64))[0]
if answer is None:
    print('not answered yet: set answer = (., ., ., .). Hint: write P and G as centre, width and height '
          'first (w = x2 - x1 + 1).')
elif np.shape(answer) == (4,) and np.allclose(answer, target, atol=1e-3):
    print('correct: shifts in units of the proposal\'s size, sizes as log ratios')
else:
    print(f'not yet: {answer}. t_x = (G_x - P_x) / P_w, t_y = (G_y - P_y) / P_h, t_w = log(G_w / P_w), '
          't_h = log(G_h / P_h).')
