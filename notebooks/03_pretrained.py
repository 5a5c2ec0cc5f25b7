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
# # 3. Initialising from pre-trained networks (Fast R-CNN, Sec. 2.2)
#
# Fast R-CNN does not learn its features from scratch: it starts from a network pre-trained
# on ImageNet classification and changes it in three ways (Sec. 2.2):
#
# 1. the last max pooling layer is replaced by a RoI pooling layer whose output fits the first
#    fully connected layer ($H = W = 7$ for VGG16);
# 2. the last fully connected layer and softmax (1000 ImageNet classes) are replaced by two
#    sibling layers: a softmax over $K + 1$ classes and per-class bounding-box regressors
#    (four numbers for each of the $K$ object classes);
# 3. the network takes two inputs: a list of images and a list of RoIs in those images.
#
# This chapter builds VGG16, reads PyTorch weights without PyTorch, performs the surgery, and
# looks at the input preprocessing the weights expect.

# %%
import dataclasses
import inspect
import os
import pathlib

import matplotlib.pyplot as plt
import numpy as np

import tinyrcnn as tr
from tinyrcnn.data import PREPROCESS, deprocess, preprocess
from tinyrcnn.data.shapes import render_shapes_image
from tinyrcnn.weights import load_weights

ROOT = pathlib.Path(tr.__file__).resolve().parents[1]   # the repository (for tests/fixtures)
tr.manual_seed(0)

# %% [markdown]
# ## VGG16's layout
#
# `tr.models.vgg16()` follows torchvision's layout and parameter names (`features.0.weight`,
# ..., `classifier.6.bias`), so torchvision's weight files load as they are. Thirteen 3 x 3
# convolutions in five stages, each stage closed by a 2 x 2 max pool; then fc6, fc7 (4096
# units, with dropout) and fc8 (1000 classes). Building it allocates its 138 M parameters (a
# few seconds, about 0.5 GB).

# %%
vgg = tr.models.vgg16()
names, counts = [], []
stage, conv = 1, 0
for module in vgg.features:
    if isinstance(module, tr.nn.MaxPool2d):
        stage, conv = stage + 1, 0
    elif isinstance(module, tr.nn.Conv2d):
        conv += 1
        names.append(f'conv{stage}_{conv}')
        counts.append(module.num_parameters())
for name, index in (('fc6', 0), ('fc7', 3), ('fc8', 6)):
    names.append(name)
    counts.append(vgg.classifier[index].num_parameters())
total = vgg.num_parameters()
for name, n in zip(names, counts):
    print(f'{name:8s} {n:>12,d}  {100 * n / total:5.1f}%')
print(f'{"total":8s} {total:>12,d}')
assert total == 138_357_544      # torchvision's count for VGG16
fc6_share = counts[names.index('fc6')] / total

fig, ax = plt.subplots(figsize=(9, 3))
ax.bar(names, np.array(counts) / 1e6, color=['C0'] * 13 + ['C1'] * 3)
ax.set(ylabel='parameters (millions)', title=f'VGG16: fc6 alone holds {fc6_share:.0%} of the weights')
ax.tick_params(axis='x', rotation=60)
plt.show()

# %% [markdown]
# Parameters are not time. In a detector the conv layers run once per image, but fc6 and fc7
# run once per RoI: with 2000 RoIs they take about 45 % of VGG16's detection time (Fast R-CNN,
# Sec. 3.1 and Fig. 2), which is why truncated SVD of the fc layers pays off at test time
# (chapter 6). Counting multiply-adds for a 600 x 1000 image with 2000 RoIs tells the same
# story, roughly: the share below is work, not time (a layer's speed per multiply-add varies),
# so it lands near the measured 45 % without matching it:

# %%
H, W, macs_conv, channels = 600, 1000, 0, 3
for module in vgg.features[:-1]:                       # Fast R-CNN drops the last max pool
    if isinstance(module, tr.nn.MaxPool2d):
        H, W = H // 2, W // 2
    elif isinstance(module, tr.nn.Conv2d):
        out_channels, in_channels, kh, kw = module.weight.shape
        macs_conv += out_channels * in_channels * kh * kw * H * W
macs_fc = 2000 * (vgg.classifier[0].weight.size + vgg.classifier[3].weight.size)   # fc6 + fc7, per RoI
print(f'conv layers, once per image: {macs_conv / 1e9:.0f} G multiply-adds; fc6 + fc7 for 2000 RoIs: '
      f'{macs_fc / 1e9:.0f} G ({macs_fc / (macs_conv + macs_fc):.0%} of the two)')

# %% [markdown]
# A check of the wiring: the adaptive average pool makes any input size give 7 x 7 before fc6,
# so even a 32 x 32 image yields 1000 logits.

# %%
with tr.no_grad():
    logits = vgg.eval()(tr.Tensor(np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)))
print('logits', logits.shape)
assert logits.shape == (1, 1000)

# %% [markdown]
# ## Loading weights without PyTorch
#
# `tinyrcnn.weights.load_weights` reads a `torch.save` file (the zip format, or the legacy one)
# or a tinyrcnn `.npz`, and returns a dict of NumPy arrays. It unpickles with a whitelist, so a
# weights file cannot run code. The repository ships a small file written by PyTorch in
# torchvision's VGG layout (4, 4 and 8 channels), made by `tests/fixtures/make_fixtures.py`:

# %%
state = load_weights(ROOT / 'tests' / 'fixtures' / 'vgg_tiny_zip.pth')
for k, v in state.items():
    print(f'{k:22s} {str(v.shape):16s} {v.dtype}')
expected = np.load(ROOT / 'tests' / 'fixtures' / 'vgg_tiny.npz')    # the same tensors, via torch's .numpy()
assert all(np.array_equal(state[k], expected[k]) for k in expected.files)
print('identical to the arrays PyTorch wrote: ok')

# %% [markdown]
# `load_state_dict` checks names and shapes before copying anything, and reports every
# problem at once. This file's classifier expects a 2 x 2 pooled map (32 inputs), ours a
# 7 x 7 one:

# %%
small = tr.models.VGG((4, 4, 'M', 8, 'M'), num_classes=5, hidden=16)
try:
    small.load_state_dict(state)
except ValueError as e:
    print(e)

# %% [markdown]
# So we take what fits, the convolutions, the part Fast R-CNN needs most:

# %%
conv_state = {k: v for k, v in state.items() if k.startswith('features.')}
small.load_state_dict(conv_state, strict=False)
assert np.array_equal(small.features[5].weight.numpy(), state['features.5.weight'])
print('loaded', len(conv_state), 'conv arrays')

# %% [markdown]
# ## The surgery: VGG16 becomes Fast R-CNN
#
# `tr.models.FastRCNN(trunk, num_classes)` performs the three changes. It reuses the trunk's
# layers (so pre-trained conv, fc6 and fc7 weights carry over), drops the last max pool (the
# feature map keeps stride 16, hence `spatial_scale = 1/16`), and adds `cls_score` and
# `bbox_pred`, initialised from zero-mean Gaussians with standard deviations 0.01 and 0.001
# (Sec. 2.3). By default conv1 and conv2 stay frozen (`freeze_stages=2`), as in the paper's
# VGG16 runs, which fine-tune conv3_1 and up. Sec. 4.5 explains the choice. For the small
# networks S and M, conv1 is generic and learning it or not makes no meaningful difference. For
# VGG16 the choice is practical: learning from conv2_1 up trains 1.3x slower for +0.3 mAP, and
# from conv1_1 up it did not fit in GPU memory. What does matter is fine-tuning the deeper conv
# layers at all: with every conv layer frozen and only the fc layers learned, as SPPnet did,
# VGG16's mAP on VOC07 falls from 66.9 to 61.4 (Table 5).
# The surgery, in `tinyrcnn/fast_rcnn/network.py`:

# %%
print(inspect.getsource(tr.models.FastRCNN.__init__))

# %%
fast = tr.models.FastRCNN(vgg, num_classes=20)
print(fast.roi_pool, '\n', fast.cls_score, '\n', fast.bbox_pred)
print('features:', len(vgg.features), '->', len(fast.features), 'layers; last:', fast.features[-1])
assert fast.classifier[0] is vgg.classifier[0] and fast.classifier[3] is vgg.classifier[3]  # fc6, fc7 reused
frozen = [n for n, p in fast.named_parameters() if not p.requires_grad]
print('frozen:', frozen)
assert len(frozen) == 8                        # conv1_1 .. conv2_2, weights and biases
print(f'std of cls_score.weight {fast.cls_score.weight.numpy().std():.4f}, '
      f'bbox_pred.weight {fast.bbox_pred.weight.numpy().std():.5f}')
assert abs(fast.cls_score.weight.numpy().std() - 0.01) < 1e-3
assert abs(fast.bbox_pred.weight.numpy().std() - 0.001) < 1e-4

# %% [markdown]
# Two inputs, two outputs: images `(N, 3, H, W)` and RoIs `(R, 5)` rows
# `[batch_index, x1, y1, x2, y2]`, giving class scores `(R, K + 1)` and box offsets
# `(R, 4(K + 1))`. The paper's regressor has $4K$ outputs, one box per object class (Sec. 2);
# tinyrcnn follows the released code, which also gives the background class 0 a box (never
# trained, never used), so that class $k$'s offsets sit in columns $4k$ to $4k + 3$:

# %%
images = tr.Tensor(np.random.default_rng(1).standard_normal((2, 3, 64, 96)).astype(np.float32))
rois = np.array([[0, 0, 0, 63, 63], [1, 10, 5, 90, 60], [1, 30, 20, 50, 40]], np.float32)
with tr.no_grad():
    cls_score, bbox_pred = fast.eval()(images, rois)
print('cls_score', cls_score.shape, ' bbox_pred', bbox_pred.shape)
assert cls_score.shape == (3, 21) and bbox_pred.shape == (3, 84)
del vgg, fast, cls_score, bbox_pred                      # free the 0.5 GB

# %% [markdown]
# On a CPU the demo uses **vgg-tiny**: the same five stages and stride with far fewer channels
# (16 to 128) and 256-unit fc layers. There are no ImageNet weights for it; its stand-in ships
# with the package, `tinyrcnn/assets/vgg_tiny_shapes.npz`: vgg-tiny with fc6 and fc7 trained to
# classify crops of objects and background from 2000 rendered shapes images that are none of
# the demo's (`python -m tinyrcnn pretrain`, `tinyrcnn/train/pretrain.py`: each crop is one
# image whose RoI is the whole crop, log loss only). The demo loads it as the paper loads
# ImageNet VGG16 and fine-tunes it for detection. That fine-tuning departs from Sec. 2.3's
# settings; the list below is computed from the demo's settings (`tinyrcnn/demo.py`) against
# the paper's defaults (`tinyrcnn/train/config.py`):

# %%
from tinyrcnn.demo import demo_settings
from tinyrcnn.train import TrainConfig

paper, demo = dataclasses.asdict(TrainConfig()), demo_settings('cpu')
bookkeeping = {'checkpoint_every', 'threads', 'source'}       # not training settings
for key in paper:
    if paper[key] != demo[key] and key not in bookkeeping:
        before, after = paper[key], demo[key]
        if key == 'weights':       # the paper's is ImageNet VGG16 (--weights); the file's name, not its path
            before, after = 'ImageNet', os.path.basename(after)
        print(f'{key:20s} paper {before!s:12s} demo {after}')
assert demo['optimizer'] == 'adam' and demo['freeze_stages'] == 0 and demo['weight_decay'] == 0

tiny = tr.models.FastRCNN('vgg-tiny', num_classes=6, freeze_stages=0)
print(f'vgg-tiny Fast R-CNN: {tiny.num_parameters():,d} parameters')

# %% [markdown]
# Read as departures from the paper: Adam in place of SGD with momentum 0.9 (same base rate,
# 0.001), no weight decay (the paper's is 0.0005), no dropout in fc6 and fc7 (`dropout None`
# keeps VGG's 0.5), every conv stage trained (the paper freezes conv1 and conv2), images at
# shorter side 288 instead of 600, and a short schedule. These suit a short run of a small
# network whose ImageNet is a few thousand crops of shapes (`weights`).

# %% [markdown]
# ## Preprocessing must match the weights
#
# Pre-trained weights only work on inputs prepared the way they were trained:
# torchvision's models take RGB in [0, 1] normalised by the ImageNet mean and standard
# deviation; the original Caffe models take BGR in 0..255 minus a mean pixel. tinyrcnn looks
# the settings up by the weights' origin, never hard-coding them:

# %%
for source, p in PREPROCESS.items():
    print(f'{source:12s} {p}')
image, _, _ = render_shapes_image(np.random.default_rng(2), 160, 224)
fig, axes = plt.subplots(1, 3, figsize=(12, 3))
axes[0].imshow(image)
axes[0].set_title('image (RGB, uint8)')
axes[0].axis('off')
for ax, source in zip(axes[1:], ('torchvision', 'caffe')):
    x = preprocess(image, source)                                  # (3, H, W) float32
    assert np.array_equal(deprocess(x, source), image)             # the round trip is exact
    for channel, name in zip(x, PREPROCESS[source]['order']):     # input channel 0 is R or B
        ax.hist(channel.ravel(), bins=60, histtype='step', label=name,
                color={'R': 'tab:red', 'G': 'tab:green', 'B': 'tab:blue'}[name])
    ax.legend()
    ax.set_title(f"'{source}' input: channels {PREPROCESS[source]['order']}")
    ax.set_xlabel('network input value')
plt.show()

# %% [markdown]
# ## Summary
#
# * VGG16 has 138.4 M parameters, most of them in fc6 (the share is printed above). What makes
#   truncated SVD of the fc layers pay off at test time (chapter 6) is time, not size: fc6 and
#   fc7 run once per RoI, about 45 % of VGG16's detection time with 2000 RoIs (Sec. 3.1).
# * `load_weights` reads PyTorch files without PyTorch; `load_state_dict` lists every missing,
#   unexpected or mis-shaped array at once.
# * `FastRCNN(trunk, K)` replaces the last max pool by 7 x 7 RoI pooling at stride 16, replaces
#   fc8 by `cls_score` ($K+1$) and `bbox_pred` ($4(K+1)$ as in the released code; $4K$ in the
#   paper), takes images and RoIs, and by default freezes conv1-conv2 (a practical choice for
#   VGG16, Sec. 4.5; freezing all conv layers costs 5.5 mAP, Table 5).
# * The CPU demo's vgg-tiny starts from shipped crop-pretrained weights, then is fine-tuned with Adam, no dropout, no weight
#   decay, all stages trainable, at shorter side 288.
# * The input must be preprocessed as the weights expect (`PREPROCESS[source]`).

# %% [markdown]
# ## Exercises
#
# Work each answer out first, then type it into the cell below the question and run the cell:
# it checks your answer against what tinyrcnn computes and prints `correct` or a hint (an
# unanswered cell, `answer = None`, prints what to do).
#
# 1. **The grid fixes fc6.** Had Fast R-CNN pooled each RoI to $6 \times 6$ (SPPnet's finest
#    level) instead of $7 \times 7$, fc6 could not have been taken from the pre-trained VGG16:
#    it would need a different shape. How many parameters (weights and biases) would such an
#    fc6 with 4096 outputs hold? Compare with the real fc6 in the table above.
# 2. **Freezing stages.** `FastRCNN(trunk, K, freeze_stages=s)` keeps the first $s$ stages of
#    conv layers fixed (stages end at a max pool). With VGG16 and `freeze_stages=3`, how many
#    parameter arrays (a weight or a bias each) are frozen? VGG16's configuration, a number per
#    conv layer and `'M'` per max pool, is `tr.vgg.VGG16_CFG`, printed below.
# 3. **What the weights expect.** A white pixel, RGB $(255, 255, 255)$: what is the first input
#    channel (channel 0) of `preprocess` under `'torchvision'`, and under `'caffe'`? Use the
#    settings printed in the last section (mind the channel order).

# %%
print(tr.vgg.VGG16_CFG)

# %%
# 1. the parameters of fc6 if RoI pooling gave 6 x 6 (VGG16 conv5: 512 channels; 4096 outputs)
answer = None

vgg16_6x6 = tr.models.VGG(tr.vgg.VGG16_CFG, hidden=16, pool_size=6)    # a small fc6: only its input counts here
fc6_in = vgg16_6x6.classifier[0].in_features
fc6_params = fc6_in * 4096 + 4096
if answer is None:
    print('not answered yet: set answer to a number. Hint: fc6 sees the flattened C x 6 x 6 grid.')
elif answer == fc6_params:
    print(f'correct: {fc6_params / counts[names.index("fc6")]:.0%} of the real fc6, but no pre-trained '
          'weights would fit it')
else:
    print(f'not yet: {answer}. A Linear layer of n inputs and m outputs holds n * m weights and m biases.')

# %%
# 2. how many parameter arrays freeze_stages=3 freezes in VGG16
answer = None

vgg16_small_fc = tr.models.VGG(tr.vgg.VGG16_CFG, hidden=16)            # VGG16's conv layers, a small fc6/fc7
frozen3 = tr.models.FastRCNN(vgg16_small_fc, num_classes=20, freeze_stages=3)
n_frozen = sum(not p.requires_grad for p in frozen3.parameters())
if answer is None:
    print('not answered yet: set answer to a number. Hint: count the conv layers before the third "M".')
elif answer == n_frozen:
    print('correct: conv1_1 to conv3_3, a weight and a bias each')
else:
    print(f'not yet: {answer}. Every conv layer has two arrays; stages 1 and 2 have two conv layers each.')

# %%
# 3. (channel 0 under 'torchvision', channel 0 under 'caffe') of a white pixel, to 2 decimals
answer = None

white = np.full((1, 1, 3), 255, np.uint8)
first = (preprocess(white, 'torchvision')[0, 0, 0], preprocess(white, 'caffe')[0, 0, 0])
if answer is None:
    print("not answered yet: set answer = (., .). Hint: value * scale, minus mean, divided by std, "
          "channel by channel, in the source's order.")
elif np.shape(answer) == (2,) and np.allclose(answer, first, atol=0.01):
    print('correct: the same pixel is a small number for one network and a large one for the other')
else:
    print(f'not yet: {answer}. Caffe models take BGR: their channel 0 is blue, with its own mean.')
