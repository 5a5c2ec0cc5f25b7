"""Element-wise layers: ReLU and (inverted) dropout."""
import numpy as np

from .. import backend
from ..seed import rng
from ..tensor import Function


class ReLU(Function):
    def forward(self, x):
        self.y = backend.get_array_module(x).maximum(x, 0)   # the mask is rebuilt from y later
        return self.y

    def backward(self, gy):
        return (gy * (self.y > 0),)


def relu(x):
    """max(x, 0), element-wise."""
    op = backend.fast_cpu('relu', x) or ReLU                  # the CPU speed hook
    return op.apply(x)


class Dropout(Function):
    def forward(self, x, p):
        xp = backend.get_array_module(x)
        u = rng().random(x.shape) if xp is np else xp.random.random(x.shape)
        # Inverted dropout: scale the kept units at training time so that test time is a no-op.
        self.mask = (u >= p).astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
        return x * self.mask

    def backward(self, gy):
        return (gy * self.mask,)


def dropout(x, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p) (training only)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f'dropout probability must be in [0, 1), got {p}')
    if not training or p == 0.0:
        return x
    return Dropout.apply(x, p=p)
