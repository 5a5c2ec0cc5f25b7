"""The autograd engine: `Tensor`, the `Function` contract, and the backward graph walk.

A Tensor wraps a NumPy or CuPy array. Every differentiable operation is a small `Function`
class: `forward(self, *arrays)` computes the result from plain arrays and saves on `self` what
backward needs; `backward(self, gy)` returns one gradient per input (None where an input gets
none). `Function.apply` wires the result into the graph; `Tensor.backward` sorts the graph
topologically and runs one loop over it (the idea of micrograd and early tinygrad).
"""
import contextlib

import numpy as np

from . import backend

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Within this block no graph is recorded (inference, optimiser updates)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


class Function:
    """Base class of differentiable operations: subclasses implement `forward(self, *args)` on
    plain arrays (non-array arguments such as stride or labels pass through) and
    `backward(self, gy)` returning one gradient (or None) per positional argument of forward."""

    @classmethod
    def apply(cls, *args, **kwargs):
        fn = cls()
        # Which inputs want a gradient: backward may skip the others (e.g. conv's gx for images).
        fn.needs_input_grad = tuple(_grad_enabled and isinstance(a, Tensor) and a.requires_grad
                                    for a in args)
        arrays = [a.data if isinstance(a, Tensor) else a for a in args]
        out = fn.forward(*arrays, **kwargs)
        needs_grad = any(fn.needs_input_grad)
        result = Tensor(out, requires_grad=needs_grad)
        if needs_grad:
            fn.inputs = args
            result._ctx = fn
        return result

    released = False          # Tensor.backward drops what forward saved, once it is used

    def forward(self, *args):
        raise NotImplementedError

    def backward(self, gy):
        raise NotImplementedError


def _as_array(data, dtype=None):
    """The array behind `data`: arrays keep their dtype, Python lists and numbers become float32."""
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, np.generic):
        data = np.asarray(data)
    if not (isinstance(data, np.ndarray) or backend.is_cupy_array(data)):
        data = np.asarray(data, dtype=np.float32)
    return data if dtype is None else data.astype(dtype, copy=False)


class Tensor:
    """An array with an optional gradient and the Function that produced it (NCHW throughout).
    `grad` is filled by `backward()` for tensors that require grad and were not produced by an
    op (leaves: inputs and parameters)."""

    __array_priority__ = 100  # so that ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = _as_array(data, dtype)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None          # the Function that made this tensor (None for a leaf)

    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    device = property(lambda self: backend.device_of(self.data))
    T = property(lambda self: self.transpose())        # all axes reversed, as NumPy's .T

    def __len__(self): return len(self.data)

    def __repr__(self):
        grad = ', requires_grad=True' if self.requires_grad else ''
        return f'Tensor({self.data!r}{grad})'

    def numpy(self):
        """A NumPy copy of the data, wherever it lives."""
        return np.array(backend.to_device(self.data, 'cpu'), copy=True)

    def item(self): return self.numpy().item()

    def to(self, device=None, dtype=None):
        """A new leaf tensor on `device` ('cpu' or 'cuda') and/or with `dtype`."""
        data = self.data if device is None else backend.to_device(self.data, device)
        data = data if dtype is None else data.astype(dtype, copy=False)
        return Tensor(data, requires_grad=self.requires_grad)

    def detach(self): return Tensor(self.data)

    # ----- autograd ---------------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into `leaf.grad` for every leaf that requires grad. Unless
        `retain_graph`, each Function lets go of its inputs and what it saved (activations, im2col
        columns) once used: memory falls as the pass goes, as in PyTorch."""
        if not self.requires_grad:
            raise RuntimeError('backward() on a tensor that does not require grad')
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise ValueError(f'backward() without a gradient needs a scalar, got shape {self.shape}')
            grad = xp.ones_like(self.data)
        grad = _as_array(grad, self.dtype)
        if grad.shape != self.shape:
            raise ValueError(f'gradient shape {grad.shape} does not match tensor shape {self.shape}')

        # 1. Topological order by an iterative depth-first walk (deep graphs need no recursion):
        #    a node is appended after every node it depends on.
        order, seen, stack = [], set(), [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            if node._ctx is not None:
                if node._ctx.released:
                    raise RuntimeError('backward() through a released graph (retain_graph=True keeps it)')
                for parent in node._ctx.inputs:
                    if isinstance(parent, Tensor) and parent.requires_grad and id(parent) not in seen:
                        stack.append((parent, False))

        # 2. One loop from the output back: by the time a node is reached, every path to it has
        #    added its share to grads[node]; its Function turns that into its inputs' shares.
        grads = {id(self): grad}
        while order:
            node = order.pop()                             # the walk holds no node it is done with
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._ctx is None:                          # a leaf: keep the gradient
                node.grad = g.copy() if node.grad is None else node.grad + g
                continue
            input_grads, inputs = node._ctx.backward(g), node._ctx.inputs
            if not retain_graph:
                node._ctx.__dict__ = {'released': True}
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for parent, pg in zip(inputs, input_grads):
                if pg is None or not isinstance(parent, Tensor) or not parent.requires_grad:
                    continue
                if pg.shape != parent.shape:
                    raise RuntimeError(f'{type(node._ctx).__name__}.backward returned a gradient of '
                                       f'shape {pg.shape} for an input of shape {parent.shape}')
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg

    # ----- operators --------------------------------------------------------------------------
    def _lift(self, other):
        if isinstance(other, Tensor):
            return other
        xp = backend.get_array_module(self.data)
        return Tensor(xp.asarray(other, dtype=self.dtype))

    def __add__(self, other): return Add.apply(self, self._lift(other))
    def __radd__(self, other): return Add.apply(self._lift(other), self)
    def __sub__(self, other): return self + -self._lift(other)         # a - b is a + (-b),
    def __rsub__(self, other): return self._lift(other) + -self        # exactly, in IEEE floats
    def __mul__(self, other): return Mul.apply(self, self._lift(other))
    def __rmul__(self, other): return Mul.apply(self._lift(other), self)
    def __truediv__(self, other): return Div.apply(self, self._lift(other))
    def __rtruediv__(self, other): return Div.apply(self._lift(other), self)
    def __matmul__(self, other): return MatMul.apply(self, self._lift(other))
    def __rmatmul__(self, other): return MatMul.apply(self._lift(other), self)
    def __neg__(self): return Neg.apply(self)
    def __pow__(self, p): return Pow.apply(self, p=p)
    def exp(self): return Exp.apply(self)
    def log(self): return Log.apply(self)

    def __getitem__(self, index):
        unwrap = lambda i: i.data if isinstance(i, Tensor) else i  # noqa: E731
        index = tuple(map(unwrap, index)) if isinstance(index, tuple) else unwrap(index)
        return GetItem.apply(self, index=index)

    def sum(self, axis=None, keepdims=False):
        return Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        n = self.data.size if axis is None else int(np.prod([self.shape[a] for a in np.atleast_1d(axis)]))
        return self.sum(axis=axis, keepdims=keepdims) * (1.0 / n)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return Reshape.apply(self, shape=shape)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return Transpose.apply(self, axes=axes or None)


def unbroadcast(g, shape):
    """Sum a broadcast gradient `g` back down to `shape`."""
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g


# ----- element-wise, reduction and shape primitives ---------------------------------------------
class Add(Function):
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, gy):
        return unbroadcast(gy, self.shapes[0]), unbroadcast(gy, self.shapes[1])


class Mul(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, gy):
        return unbroadcast(gy * self.b, self.a.shape), unbroadcast(gy * self.a, self.b.shape)


class Div(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, gy):
        ga = gy / self.b
        return unbroadcast(ga, self.a.shape), unbroadcast(-ga * self.a / self.b, self.b.shape)


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, gy):
        return (-gy,)


class Pow(Function):
    def forward(self, a, p):
        self.a, self.p = a, p
        return a ** p

    def backward(self, gy):
        return (gy * self.p * self.a ** (self.p - 1),)


class Exp(Function):
    def forward(self, a):
        self.y = backend.get_array_module(a).exp(a)
        return self.y

    def backward(self, gy):
        return (gy * self.y,)


class Log(Function):
    def forward(self, a):
        self.a = a
        return backend.get_array_module(a).log(a)

    def backward(self, gy):
        return (gy / self.a,)


class MatMul(Function):
    """a @ b for 2-D operands (and batched 3-D ones with matching batch sizes)."""

    def forward(self, a, b):
        if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
            raise ValueError(f'matmul expects (..., n, k) @ (..., k, m), got {a.shape} @ {b.shape}')
        self.a, self.b = a, b
        return a @ b

    def backward(self, gy):
        ga = gy @ self.b.swapaxes(-1, -2)
        gb = self.a.swapaxes(-1, -2) @ gy
        return unbroadcast(ga, self.a.shape), unbroadcast(gb, self.b.shape)


class Sum(Function):
    def forward(self, a, axis=None, keepdims=False):
        self.shape, self.axis, self.keepdims = a.shape, axis, keepdims
        return a.sum(axis=axis, keepdims=keepdims)

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        if self.axis is not None and not self.keepdims:
            axes = [a % len(self.shape) for a in np.atleast_1d(self.axis)]
            gy = xp.expand_dims(gy, tuple(sorted(axes)))
        return (xp.broadcast_to(gy, self.shape).copy(),)


class Reshape(Function):
    def forward(self, a, shape):
        self.shape = a.shape
        return a.reshape(shape)

    def backward(self, gy):
        return (gy.reshape(self.shape),)


class Transpose(Function):
    def forward(self, a, axes=None):
        self.axes = axes
        return a.transpose(axes)

    def backward(self, gy):
        return (gy.transpose() if self.axes is None else gy.transpose(np.argsort(self.axes)),)


class GetItem(Function):
    def forward(self, a, index):
        self.shape, self.dtype, self.index = a.shape, a.dtype, index
        return a[index]

    def backward(self, gy):
        xp = backend.get_array_module(gy)
        gx = xp.zeros(self.shape, dtype=self.dtype)
        items = self.index if isinstance(self.index, tuple) else (self.index,)
        if all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis for i in items):
            gx[self.index] = gy              # basic indexing never selects an element twice
        else:
            backend.scatter_add(xp, gx, self.index, gy)
        return (gx,)
