"""Element-wise layers: ReLU and (inverted) dropout."""
import numpy as np

from .. import backend
from ..parallel import split_work
from ..tensor import Function
from ..utils import rng


class ReLU(Function):
    def forward(self, x):
        xp = backend.get_array_module(x)
        if xp is np and x.flags.c_contiguous:
            self.y = _halves(lambda a, out: np.maximum(a, 0, out=out), x)
        else:
            self.y = xp.maximum(x, 0)        # one pass; the mask is rebuilt from y in backward
        return self.y

    def backward(self, gy):
        if isinstance(gy, np.ndarray) and gy.flags.c_contiguous and self.y.flags.c_contiguous:
            return (_halves(lambda g, out, y: np.multiply(g, y > 0, out=out), gy, self.y),)
        return (gy * (self.y > 0),)


def _halves(fn, a, *more):
    """fn(a, out=out, *more) element-wise over C-contiguous arrays, on two threads when large
    (`parallel.split_work`)."""
    out = np.empty_like(a)
    flat, others, dst = a.reshape(-1), [m.reshape(-1) for m in more], out.reshape(-1)

    def part(lo, hi):
        fn(flat[lo:hi], dst[lo:hi], *[m[lo:hi] for m in others])
    split_work(flat.size, flat.size, part)
    return out


def relu(x):
    """max(x, 0), element-wise."""
    return ReLU.apply(x)


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
