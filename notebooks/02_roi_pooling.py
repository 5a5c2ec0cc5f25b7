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
# # 2. RoI pooling (Fast R-CNN, Sec. 2.1)
#
# The fully connected layers of VGG16 expect a $7 \times 7 \times 512$ input, but proposals
# come in every size and shape. The RoI pooling layer takes the window of the conv5 feature
# map under a region of interest (RoI), of size $h \times w$ cells, divides it into an
# $H \times W$ grid of sub-windows of about $h/H \times w/W$ cells, and max-pools each
# sub-window, channel by channel. It is SPPnet's pyramid with a single level, $H = W = 7$.
#
# For RoI $r$ and output cell $j$ (Sec. 2.3):
#
# $$y_{rj} = x_{i^*(r,j)}, \qquad i^*(r,j) = \operatorname*{argmax}_{i' \in \mathcal{R}(r,j)} x_{i'},$$
#
# where $\mathcal{R}(r,j)$ is the set of map cells in bin $j$ of RoI $r$.

# %%
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

import tinyrcnn as tr
import tinyrcnn.functional as F
from tinyrcnn.backend import KERNEL_DIR
from tinyrcnn.boxes import random_rois
from tinyrcnn.data import preprocess
from tinyrcnn.data.shapes import render_shapes_image
from tinyrcnn.kernels import cpu
from tinyrcnn.ops import roi_pool
from tinyrcnn.ops.roi_pool import bin_edges

# %% [markdown]
# ## A 4 x 4 map, bin by bin
#
# A RoI is `[batch_index, x1, y1, x2, y2]` in input-image pixels. `spatial_scale` maps pixels
# to map cells (1/16 for VGG16; 0.1 here). The rules, those of the original Caffe layer and of
# `torchvision.ops.roi_pool`:
#
# 1. corners are scaled and rounded: $x_1' = \mathrm{round}(x_1 s)$, ..., and the end is
#    inclusive, so the window is $w = x_2' - x_1' + 1$ cells wide (at least 1);
# 2. bin $p$ covers cells $[\lfloor p\, w/W \rfloor,\ \lceil (p+1)\, w/W \rceil)$ from $x_1'$,
#    clipped to the map (neighbouring bins may share a cell; an empty bin gives 0);
# 3. the maximum of each bin is the output; the first maximum wins ties.

# %%
x = tr.Tensor(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), requires_grad=True)
rois = np.array([[0, 0, 0, 20, 20],
                 [0, 0, 10, 30, 30]], np.float32)
y = F.roi_pool(x, rois, output_size=(2, 2), spatial_scale=0.1)    # (2, 1, 2, 2)
print('x =\n', x.numpy()[0, 0])
hs, he, ws, we = bin_edges(rois, 0.1, (2, 2), 4, 4)
for r in range(len(rois)):
    print(f'\nRoI {r}: {rois[r, 1:].tolist()} pixels')
    for ph in range(2):
        for pw in range(2):
            window = x.numpy()[0, 0, hs[r, ph]:he[r, ph], ws[r, pw]:we[r, pw]]
            print(f'  bin ({ph},{pw}): rows {hs[r, ph]}..{he[r, ph] - 1}, cols {ws[r, pw]}..{we[r, pw] - 1}:'
                  f' {window.ravel().astype(int).tolist()} -> max {window.max():.0f}')
print('\ny =', y.numpy()[:, 0].astype(int).tolist())
assert np.array_equal(y.numpy()[0, 0], [[5, 6], [9, 10]])
assert np.array_equal(y.numpy()[1, 0], [[9, 11], [13, 15]])

# %% [markdown]
# RoI 0 spans cells 0..2 (3 cells, so bins of 1.5 cells: columns 0..1 and 1..2 overlap in
# column 1); RoI 1 spans rows 1..3 and columns 0..3.
#
# ## The code: `tinyrcnn/ops/roi_pool.py`
#
# The rules 1 and 2 are `bin_edges`, for all RoIs at once, in the input's float type (as Caffe
# and torchvision compute them):

# %%
print(inspect.getsource(bin_edges))

# %% [markdown]
# and rule 3 is the NumPy forward pass, the spec of the layer: a loop over RoIs and bins, each
# bin's maximum taken over all channels at once (`argmax` gives the first maximum, as the
# kernel's scan does). It saves the winner of every bin for backward.

# %%
print(inspect.getsource(roi_pool._forward_numpy))

# %% [markdown]
# **Backward** routes each output's gradient to the cell that won its bin, and sums where a
# cell wins several bins (Sec. 2.3): one scatter-add of the outputs' gradients into the saved
# winners, RoI by RoI, in output order (the kernel's order when it runs on one thread).

# %%
print(inspect.getsource(roi_pool._backward_numpy))

# %% [markdown]
# With a gradient of 1 on every output, cell 9, which won a bin of each RoI, receives 2; the
# other six winners receive 1; cells that won nothing, 0:

# %%
y.backward(np.ones(y.shape, np.float32))
print(x.grad[0, 0])
assert x.grad[0, 0, 2, 1] == 2 and x.grad[0, 0, 1, 1] == 1 and x.grad.sum() == y.size

# %% [markdown]
# ## On a real feature map
#
# vgg-tiny's conv layers (stride 16, like VGG16's conv5_3) on a synthetic image; a proposal
# around an object is pooled to $7 \times 7$. Left: the RoI in pixels. Middle: one channel of the
# feature map with the RoI's 7 x 7 bins. Right: the pooled output of that channel.

# %%
tr.manual_seed(0)
image, objects, _ = render_shapes_image(np.random.default_rng(5), 256, 320)
box = np.array(max(objects, key=lambda o: (o['box'][2] - o['box'][0]) * (o['box'][3] - o['box'][1]))['box'],
               np.float32)
roi = np.concatenate([[0], box])[None].astype(np.float32)         # (1, 5)
conv = tr.models.vgg_tiny().features[:-1]
with tr.no_grad():
    feats = conv(tr.Tensor(preprocess(image)[None]))               # (1, 128, 16, 20)
    pooled = F.roi_pool(feats, roi, (7, 7), 1 / 16)                # (1, 128, 7, 7)
H, W = feats.shape[2:]
c = int(pooled.numpy()[0].std(axis=(1, 2)).argmax())              # a channel with contrast in the RoI
hs, he, ws, we = (e[0] for e in bin_edges(roi, 1 / 16, (7, 7), H, W))

fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
axes[0].imshow(image)
axes[0].add_patch(Rectangle(box[:2] - 0.5, box[2] - box[0] + 1, box[3] - box[1] + 1, fill=False, ec='red', lw=2))
axes[0].set_title(f'RoI {box.astype(int).tolist()} (pixels)')
vmin, vmax = feats.numpy()[0, c].min(), feats.numpy()[0, c].max()
axes[1].imshow(feats.numpy()[0, c], cmap='viridis', vmin=vmin, vmax=vmax)
for i in range(7):
    for j in range(7):
        axes[1].add_patch(Rectangle((ws[j] - 0.5 + 0.06, hs[i] - 0.5 + 0.06), we[j] - ws[j] - 0.12,
                                    he[i] - hs[i] - 0.12, fill=False, ec='white', lw=0.8))
axes[1].set_title(f'channel {c}, map {H} x {W}, 7 x 7 bins')
axes[2].imshow(pooled.numpy()[0, c], cmap='viridis', vmin=vmin, vmax=vmax)
axes[2].set_title('RoI-pooled 7 x 7')
for ax in axes:
    ax.axis('off')
plt.show()
print(f'RoI covers cells rows {hs[0]}..{he[-1] - 1}, cols {ws[0]}..{we[-1] - 1}: '
      f'{he[-1] - hs[0]} x {we[-1] - ws[0]} cells for 7 x 7 bins, so some cells serve two bins')

# %% [markdown]
# ## The CUDA kernel
#
# On the GPU, `tinyrcnn/kernels/roi_pool.cu` computes every output element in its own thread.
# The flat index `i` of `y[r, c, ph, pw]` is decomposed fastest index first; the thread then
# scans its bin. Here is the forward kernel:

# %%
source = open(os.path.join(KERNEL_DIR, 'roi_pool.cu')).read()
start = source.index('extern "C" __global__ void roi_pool_forward')
end = source.index('extern "C" __global__ void roi_pool_backward')
print(source[start:end])

# %% [markdown]
# The backward kernel is one thread per output element too: it adds `gy[i]` to the input cell
# `argmax[i]` with `atomicAdd`, because bins of overlapping RoIs can share a winner.
#
# ### The same source on the CPU
#
# A small compatibility header turns the kernel launch into a loop, so the very file CuPy
# compiles can be built with g++ and called through ctypes (`tinyrcnn.kernels.cpu`). It must
# agree with the NumPy path bit for bit, forward (values and argmax) and backward:

# %%
rng = np.random.default_rng(0)
N, C, Hm, Wm, R = 2, 8, 24, 30, 300
xm = rng.standard_normal((N, C, Hm, Wm))                                    # float64, no ties
boxes = random_rois(R, N, Hm * 16, Wm * 16, seed=1).astype(np.float64)  # (R, 5)
boxes[:5, 1:] = [[-40, -40, 20, 20], [470, 370, 600, 500], [100, 100, 90, 90], [0, 0, 0, 0],
                 [30.5 * 16, 8, 31.5 * 16, 40]]                            # outside, degenerate, halves
x_t = tr.Tensor(xm, requires_grad=True)
y_numpy = F.roi_pool(x_t, boxes, (7, 7), 1 / 16)
argmax_numpy = y_numpy._ctx.argmax          # read before backward, which releases what forward saved
gy = rng.standard_normal(y_numpy.shape)
y_numpy.backward(gy)

if cpu.compiler():
    lib = cpu.build('roi_pool.cu', np.float64)
    y_kernel = np.empty((R, C, 7, 7))
    argmax = np.empty((R, C, 7, 7), np.int64)
    cpu.call(lib, 'roi_pool_forward', xm, boxes, y_kernel, argmax, R, C, Hm, Wm, 7, 7, 1 / 16)
    gx_kernel = np.zeros_like(xm)
    cpu.call(lib, 'roi_pool_backward', gy, argmax, boxes, gx_kernel, R, C, Hm, Wm, 7, 7)
    assert np.array_equal(y_kernel, y_numpy.numpy())
    assert np.array_equal(argmax, argmax_numpy)
    assert np.allclose(gx_kernel, x_t.grad, rtol=1e-12, atol=1e-12)  # the sums' order may differ
    print(f'{R} RoIs: kernel == NumPy (values and argmax bit for bit); backward max |diff| '
          f'{np.abs(gx_kernel - x_t.grad).max():.1e}; empty bins: {(argmax < 0).sum()}')
else:
    print('no C++ compiler: the CPU build of the kernel is skipped')

# %% [markdown]
# ## On a GPU
#
# With CuPy, `F.roi_pool` on a CuPy tensor dispatches to the kernel. The NumPy path is the spec.

# %%
if tr.cuda_available():
    xg = tr.Tensor(xm, requires_grad=True).to('cuda')
    yg = F.roi_pool(xg, tr.Tensor(boxes).to('cuda'), (7, 7), 1 / 16)
    yg.backward(tr.Tensor(gy).to('cuda').data)
    assert np.array_equal(yg.numpy(), y_numpy.numpy())
    print('GPU == CPU forward; backward max |diff|', float(np.abs(xg.grad.get() - x_t.grad).max()))
else:
    print('no GPU: skipped')

# %% [markdown]
# ## Summary
#
# * RoI pooling projects a RoI onto the feature map (`round(x * spatial_scale)`, inclusive end),
#   splits it into $H \times W$ bins of $\lfloor p\,w/W \rfloor .. \lceil (p+1)\,w/W \rceil$
#   cells and max-pools each: a fixed $C \times H \times W$ output for any RoI.
# * The toy map gives `[[5, 6], [9, 10]]` and `[[9, 11], [13, 15]]`; backward sends each
#   output's gradient to its bin's winner, summing over bins and RoIs.
# * The CUDA kernel (one thread per output) builds on the CPU too and matches the NumPy spec
#   bit for bit.

# %% [markdown]
# ## Exercises
#
# Work each answer out first, then type it into the cell below the question and run the cell:
# it checks your answer against what tinyrcnn computes and prints `correct` or a hint (an
# unanswered cell, `answer = None`, prints what to do).
#
# 1. **Bin by bin.** On the $4 \times 4$ map `x` of the first section (values $0..15$, row by
#    row), with `spatial_scale = 0.1` and a $2 \times 2$ output, what does the RoI
#    $[0, 10, 0, 30, 20]$ (batch 0, $x_1 = 10, y_1 = 0, x_2 = 30, y_2 = 20$) pool to? Apply rules
#    1-3 by hand: the window, the bins, the maxima.
# 2. **A small RoI is stretched.** A RoI whose window covers $2 \times 3$ cells (rows x columns)
#    is pooled to $7 \times 7$. At most how many *distinct* values can the 49 outputs of one
#    channel take? (This is the upsampling that chapter 8 looks at: 49 bins over few cells.)
# 3. **Overlapping bins share a gradient.** A $4 \times 4$ map has its largest value at row 1,
#    column 1. The RoI $[0, 0, 0, 20, 20]$ at `spatial_scale = 0.1` is pooled to $2 \times 2$,
#    and every output receives the gradient 1. What gradient does the cell at row 1, column 1
#    receive?

# %%
# 1. the 2 x 2 output of RoI [0, 10, 0, 30, 20], as a nested list [[., .], [., .]]
answer = None

x4 = tr.Tensor(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))
pooled = F.roi_pool(x4, np.array([[0, 10, 0, 30, 20]], np.float32), (2, 2), 0.1).numpy()[0, 0]
if answer is None:
    print('not answered yet: set answer = [[., .], [., .]]. Hint: the window starts at column '
          'round(10 * 0.1) = 1; how many columns and rows does it span, and how wide is a bin?')
elif np.shape(answer) == (2, 2) and np.array_equal(answer, pooled):
    print('correct')
else:
    print(f'not yet: {answer}. Check the window (inclusive end), then bin p covers '
          'floor(p w / 2) .. ceil((p + 1) w / 2) - 1 cells from its start.')

# %%
# 2. the largest number of distinct values among the 7 x 7 outputs of a 2 x 3-cell RoI
answer = None

x_small = tr.Tensor(np.random.default_rng(1).permutation(24).reshape(1, 1, 4, 6).astype(np.float64))
small = F.roi_pool(x_small, np.array([[0, 0, 0, 2, 1]], np.float64), (7, 7), 1.0).numpy()  # 3 x 2 pixels = cells
if answer is None:
    print('not answered yet: set answer to a number. Hint: every output is one of the cells in the window.')
elif answer == len(np.unique(small)):
    print('correct: 49 bins, one value per cell of the window; a bin never mixes in anything new')
else:
    print(f'not yet: {answer}. Each output is the maximum of some cells of the window; no bin is empty.')

# %%
# 3. the gradient received by cell (1, 1), the largest of the map
answer = None

peak = np.random.default_rng(2).permutation(16).reshape(1, 1, 4, 4).astype(np.float64)
peak[0, 0, 1, 1] = 100.0
x_peak = tr.Tensor(peak, requires_grad=True)
F.roi_pool(x_peak, np.array([[0, 0, 0, 20, 20]], np.float64), (2, 2), 0.1).sum().backward()
if answer is None:
    print('not answered yet: set answer to a number. Hint: find the window (rule 1), then the cells of '
          'each of the 4 bins (rule 2): which bins contain cell (1, 1)?')
elif answer == x_peak.grad[0, 0, 1, 1]:
    print('correct: the bins overlap, and backward sums the gradient of every bin the cell won')
else:
    print(f'not yet: {answer}. The window is 3 x 3 cells, so 2 x 2 bins of 1.5 cells each overlap.')
