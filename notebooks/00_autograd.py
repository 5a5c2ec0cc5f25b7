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
# # 0. Autograd and gradient checking
#
# Fast R-CNN fine-tunes its network, from conv3_1 (Girshick, 2015, Sec. 4.5) to the two sibling
# outputs, with one multi-task loss and one backward pass (Sec. 2.3). That needs the gradient of
# every operation in the network, RoI pooling included. tinyrcnn computes them with a small
# autograd engine, in the spirit of micrograd and early tinygrad, and checks every layer against
# finite differences.
#
# This chapter: the `Tensor`, the `Function` contract, the topological backward pass, and
# `tr.gradcheck` on each layer Fast R-CNN uses.
#
# *Run it:* open this file in Jupyter (jupytext turns it into a notebook), or `python notebooks/00_autograd.py`.

# %%
import inspect
import time

import matplotlib.pyplot as plt
import numpy as np

import tinyrcnn as tr
import tinyrcnn.functional as F

rng = np.random.default_rng(0)

# %% [markdown]
# ## A Tensor remembers how it was made
#
# A `tr.Tensor` wraps a NumPy array (a CuPy array on the GPU). When an operation is applied to
# tensors that require a gradient, the result keeps a reference to the operation, and the
# operation keeps its inputs: the computation graph. `backward()` walks that graph from the
# output to the leaves, applying the chain rule
#
# $$\frac{\partial L}{\partial x} = \sum_{y \,\text{uses}\, x} \frac{\partial L}{\partial y}\,\frac{\partial y}{\partial x}.$$

# %%
x = tr.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
y = (x * x + 3 * x).sum()        # y = sum(x^2 + 3x)
y.backward()
print('y =', y.item(), '  dy/dx =', x.grad)
assert np.allclose(x.grad, 2 * x.data + 3)   # d/dx (x^2 + 3x) = 2x + 3

# %% [markdown]
# ## The Function contract
#
# Every differentiable operation is one small class. `forward` receives plain arrays and saves
# on `self` exactly what `backward` needs; `backward(gy)` returns one gradient per input
# (`None` for inputs such as RoIs or labels, which get none). Multiplication saves both
# operands, because $\partial (ab)/\partial a = b$:

# %%
print(inspect.getsource(tr.tensor.Mul))

# %% [markdown]
# `Function.apply` runs `forward`, wraps the result in a Tensor and, if any input needs a
# gradient, links the result to the Function. `Tensor.backward` then sorts the graph
# topologically (every node after all the nodes that use it) and runs one loop: each
# Function turns the gradient of its output into gradients of its inputs, which are summed
# where a tensor is used twice. Once a Function has passed its gradients on, it lets go of its
# inputs and of what it saved (as PyTorch does): the activations of the layers already done are
# freed while backward works on the earlier ones, which lowers a VGG16 training step's peak by
# about 0.9 GB at 600 px. `backward(retain_graph=True)` keeps the graph for a second pass.

# %%
print(inspect.getsource(tr.Tensor.backward))

# %% [markdown]
# ### The graph of a tiny network
#
# A linear layer, a ReLU and a sum. The figure draws the graph that `backward` walks: leaves
# (inputs and parameters) on the left, the loss on the right; backward visits the operations
# from right to left.

# %%
X = tr.Tensor(rng.standard_normal((4, 3)), requires_grad=True)
W = tr.Tensor(rng.standard_normal((2, 3)), requires_grad=True)
b = tr.Tensor(rng.standard_normal(2), requires_grad=True)
loss = F.relu(F.linear(X, W, b)).sum()


def graph_layers(out, names):
    """(column, label) of every tensor in the graph: column = longest path from a leaf."""
    column, label = {}, {}

    def visit(t):
        if id(t) in column:
            return column[id(t)]
        parents = [p for p in (t._ctx.inputs if t._ctx else ()) if isinstance(p, tr.Tensor)]
        column[id(t)] = 1 + max((visit(p) for p in parents), default=-1)
        label[id(t)] = names.get(id(t)) or type(t._ctx).__name__
        edges.extend((id(p), id(t)) for p in parents)
        return column[id(t)]

    edges = []
    visit(out)
    return column, label, edges


column, label, edges = graph_layers(loss, {id(X): 'X (4, 3)', id(W): 'W (2, 3)', id(b): 'b (2,)'})
rows = {}
pos = {}
for node, c in sorted(column.items(), key=lambda kv: kv[1]):
    pos[node] = (c, rows.setdefault(c, 0))
    rows[c] += 1
fig, ax = plt.subplots(figsize=(7, 2.6))
for a, z in edges:
    ax.annotate('', xy=pos[z], xytext=pos[a],
                arrowprops=dict(arrowstyle='->', color='grey', shrinkA=22, shrinkB=22))
for node, (c, r) in pos.items():
    ax.text(c, r, label[node], ha='center', va='center',
            bbox=dict(boxstyle='round', fc='lightyellow' if column[node] == 0 else 'lightblue'))
ax.set(xlim=(-0.6, max(column.values()) + 0.6), ylim=(-0.7, max(rows.values()) - 0.3))
ax.set_title('computation graph of relu(linear(X, W, b)).sum()')
ax.axis('off')
plt.show()

loss.backward()
print('grads:', X.grad.shape, W.grad.shape, b.grad.shape)

# %% [markdown]
# ## Gradient checking
#
# A backward pass can be wrong in silent ways: a transposed matrix, a gradient routed to the
# wrong pixel. `tr.gradcheck(fn, inputs)` compares autograd with central differences,
#
# $$\frac{\partial f}{\partial x_k} \approx \frac{f(x + \varepsilon e_k) - f(x - \varepsilon e_k)}{2\varepsilon},$$
#
# on the scalar $f = \sum_j r_j\, \mathrm{fn}(x)_j$ for a fixed random $r$, so every output
# takes part. Inputs are float64 and take distinct values, so max pooling has no ties.
# It raises with the worst relative error when an element is off. Here it is on every layer of
# Fast R-CNN:

# %%
def t(shape, scale=1.0):
    """A float64 Tensor with distinct values (a shuffled ramp), requiring grad."""
    n = int(np.prod(shape))
    values = (rng.permutation(n) + rng.uniform(0.1, 0.9, n)) / n - 0.5
    return tr.Tensor((scale * values).reshape(shape), requires_grad=True)


labels = np.array([0, 3, 1, 2, 3])
rois = np.array([[0, 0, 0, 9, 9], [1, 2, 3, 14, 12], [0, 4, 4, 15, 15], [1, 6, 0, 8, 3]], np.float64)
mask = (rng.random((4, 8)) < 0.5).astype(np.float64)
checks = {
    'conv2d, stride 2, padding 1': (lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1),
                                    [t((2, 3, 7, 7)), t((4, 3, 3, 3)), t((4,))]),
    'conv2d, stride 1, padding 0': (lambda x, w: F.conv2d(x, w), [t((1, 2, 5, 6)), t((3, 2, 3, 3))]),
    'max_pool2d 2x2': (lambda x: F.max_pool2d(x, 2), [t((2, 2, 6, 6))]),
    'max_pool2d 3x3, stride 2': (lambda x: F.max_pool2d(x, 3, 2), [t((1, 2, 7, 7))]),
    'relu': (F.relu, [t((3, 4))]),
    'linear': (F.linear, [t((4, 5)), t((3, 5)), t((3,))]),
    'cross_entropy': (lambda z: F.cross_entropy(z, labels), [t((5, 4), 4.0)]),
    'smooth_l1_loss': (lambda a, b: F.smooth_l1_loss(a, b, mask), [t((4, 8), 6.0), t((4, 8))]),
    'roi_pool 3x3, scale 1/2': (lambda x: F.roi_pool(x, rois, (3, 3), 0.5), [t((2, 3, 8, 8))]),
}
# The opt-in CPU speed paths (tinyrcnn/speed/) compute big 3x3 layers by other algorithms,
# Winograd's F(2x2, 3x3) and, for wide layers on large maps, F(4x4, 3x3); `conv3x3` and
# `conv3x3_4x4` take them at any size, so they are checked here too.
from tinyrcnn.speed.winograd import conv3x3
from tinyrcnn.speed.winograd4 import conv3x3_4x4

checks['conv2d, Winograd F(2x2, 3x3)'] = (lambda x, w, b: conv3x3(x, w, b, padding=1),
                                          [t((2, 3, 5, 6)), t((4, 3, 3, 3)), t((4,))])
checks['conv2d, Winograd F(4x4, 3x3)'] = (lambda x, w, b: conv3x3_4x4(x, w, b, padding=1),
                                          [t((2, 3, 5, 6)), t((4, 3, 3, 3)), t((4,))])
for name, (fn, inputs) in checks.items():
    start = time.perf_counter()
    ok = tr.gradcheck(fn, inputs)
    n = sum(i.size for i in inputs)
    print(f'{name:30s} {n:4d} inputs  gradcheck: {ok}  ({time.perf_counter() - start:.2f} s)')
    assert ok, name

# %% [markdown]
# ### It catches a wrong backward
#
# The contract makes a new op a dozen lines. Here is a cube, $y = x^3$, whose backward forgets
# the factor 3. `gradcheck` reports it:

# %%
class WrongCube(tr.Function):
    def forward(self, x):
        self.x = x
        return x ** 3

    def backward(self, gy):
        return (gy * self.x ** 2,)   # should be 3 * x**2


try:
    tr.gradcheck(WrongCube.apply, [t((2, 3))])
except AssertionError as e:
    print('caught:', e)
else:
    raise RuntimeError('gradcheck should have failed')

# %% [markdown]
# ### Why float64 and $\varepsilon = 10^{-6}$
#
# The central difference has a truncation error $O(\varepsilon^2)$ and a rounding error
# $O(u/\varepsilon)$, where $u$ is the unit roundoff ($1.1 \cdot 10^{-16}$ in float64,
# $6 \cdot 10^{-8}$ in float32): too large an $\varepsilon$ measures the curvature, too small
# a one measures rounding noise. Measured on one weight of a small softmax classifier:

# %%
x0, w0 = rng.standard_normal((8, 5)), rng.standard_normal((4, 5))
y0 = rng.integers(0, 4, 8)
w_t = tr.Tensor(w0, requires_grad=True)
F.cross_entropy(F.linear(tr.Tensor(x0), w_t), y0).backward()
k = (1, 2)                                    # the weight we perturb
exact = w_t.grad[k]

epsilons = np.logspace(-12, -1, 23)
errors = {}
for dtype in (np.float64, np.float32):
    errs = []
    for eps in epsilons:
        f = []
        for sign in (1, -1):
            w = w0.astype(dtype).copy()
            w[k] += dtype(sign * eps)
            f.append(float(F.cross_entropy(F.linear(tr.Tensor(x0.astype(dtype)), tr.Tensor(w)), y0).data))
        errs.append(abs((f[0] - f[1]) / (2 * eps) - exact) / abs(exact))
    errors[np.dtype(dtype).name] = np.array(errs)

fig, ax = plt.subplots(figsize=(6, 3.5))
for name, errs in errors.items():
    ax.loglog(epsilons, errs, 'o-', label=name)
ax.axvline(1e-6, color='grey', ls='--', label='gradcheck eps')
ax.set(xlabel='eps', ylabel='relative error of the central difference',
       title='finite differences need float64')
ax.legend()
plt.show()
at_1e6 = errors['float64'][np.isclose(epsilons, 1e-6)][0]
rtol = inspect.signature(tr.gradcheck).parameters['rtol'].default
print(f'float64: relative error {at_1e6:.1e} at eps=1e-6; float32: {errors["float32"].min():.1e} at best; '
      f'gradcheck tolerates rtol={rtol:.0e}')
assert at_1e6 < 1e-7 < errors['float32'].min()

# %% [markdown]
# ## Summary
#
# * A `Tensor` records the `Function` that made it; `backward()` sorts the graph
#   topologically and runs one loop of local backward steps, summing gradients of shared inputs.
# * A `Function` saves in `forward` exactly what `backward` needs, and returns one gradient
#   per input (`None` for RoIs and labels).
# * `tr.gradcheck` (float64, central differences, distinct inputs) passes for conv2d (im2col,
#   and the speed package's two Winograd algorithms), max pooling, ReLU, linear, both losses and
#   RoI pooling; the tests use the same helper.
# * In float32 a finite difference is at best within a small factor of the tolerance we want to
#   check (and only at a lucky $\varepsilon$); in float64 it is orders of magnitude below it at
#   $\varepsilon = 10^{-6}$ (the measured errors are printed above).

# %% [markdown]
# ## Exercises
#
# Work each answer out on paper first, then type it into the cell below the question and run
# the cell: it checks your answer against what tinyrcnn computes and prints `correct` or a hint
# (an unanswered cell, `answer = None`, prints what to do).
#
# 1. **A tensor used twice.** For $x = (1, -2, 3)$ and $L = \sum_i \mathrm{relu}(x_i)\, x_i$,
#    what is $\partial L / \partial x$? Here $x$ reaches $L$ along two paths, through `relu`
#    and directly; `backward` sums the two contributions.
# 2. **The gradient of the log loss.** One RoI with class scores (logits) $z = (0, \ln 3)$ and
#    true class $u = 0$: what is the gradient of `F.cross_entropy(z, [0])` with respect to $z$?
#    (Write the softmax $p$ first. Fast R-CNN's $L_\mathrm{cls} = -\log p_u$ back-propagates
#    exactly this into `cls_score`.)
# 3. **Write a Function.** Implement $y = e^x$ as a `tr.Function`: `forward` saves what
#    `backward` needs (which is cheaper to save here, $x$ or $y$?) and `backward(gy)` returns a
#    one-element tuple. The check runs `tr.gradcheck` on it.

# %%
# 1. dL/dx for L = sum(relu(x) * x) at x = (1, -2, 3), as a list of three numbers
answer = None

x = tr.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
(F.relu(x) * x).sum().backward()
if answer is None:
    print('not answered yet: set answer = [., ., .]. Hint: where x > 0 the function is x^2; '
          'where x < 0, relu kills both the value and the gradient of that path.')
elif np.shape(answer) == x.grad.shape and np.allclose(answer, x.grad):
    print('correct')
else:
    print(f'not yet: {answer} is not dL/dx. Differentiate relu(x) * x by the product rule: '
          "relu'(x) * x + relu(x) * 1.")

# %%
# 2. d cross_entropy / dz for z = (0, ln 3) and true class 0, as a list of two numbers
answer = None

z = tr.Tensor(np.array([[0.0, np.log(3.0)]]), requires_grad=True)
F.cross_entropy(z, np.array([0])).backward()
if answer is None:
    print('not answered yet: set answer = [., .]. Hint: compute p = softmax(z) first, then differentiate '
          '-log p_u = -z_u + log(sum_k exp(z_k)) with respect to each z_k (the loss is a mean over rows; '
          'here there is one).')
elif np.shape(answer) == (2,) and np.allclose(answer, z.grad[0]):
    print('correct: the gradient pushes the true class up and the others down, in proportion to p')
else:
    print(f'not yet: {answer}. Check the sign: increasing z_u lowers the loss, so dL/dz_u < 0.')

# %%
# 3. replace the next line by your class: class Exp(tr.Function): ...
Exp = None

x = tr.Tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)    # float64 for gradcheck
if Exp is None:
    print('not answered yet: replace "Exp = None" by "class Exp(tr.Function):" with forward(self, x) and '
          'backward(self, gy), as WrongCube above. Hint: d/dx exp(x) = exp(x) = y.')
elif not np.allclose(Exp.apply(x).data, np.exp(x.data)):
    print('not yet: the forward pass does not compute exp(x)')
else:
    try:
        tr.gradcheck(Exp.apply, [x])
        print('correct: forward and backward agree with finite differences '
              '(saving y in forward spares backward a second exp)')
    except AssertionError as e:
        print('not yet: the backward pass is wrong.', e)
