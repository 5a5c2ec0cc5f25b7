"""Fully connected layer y = x w^T + b (w is (out_features, in_features), as in PyTorch)."""
from .. import backend
from ..tensor import Function


class Linear(Function):
    def forward(self, x, w, b=None):
        self.x, self.w, self.has_b = x, w, b is not None
        y = x @ w.T                                   # (N, out)
        return y + b if b is not None else y

    def backward(self, gy):
        gx = gy @ self.w                              # (N, in)
        # gw directly in w's row-major layout: it is accumulated into w.grad and read by the
        # optimiser, and a transposed result would cost a strided copy there.
        gw = gy.T @ self.x                            # (out, in)
        gb = gy.sum(axis=0) if self.has_b else None
        return gx, gw, gb


def linear(x, w, b=None):
    """x (N, in_features), w (out_features, in_features), b (out_features,) -> (N, out_features)."""
    if x.ndim != 2:
        raise ValueError(f'linear expects x of shape (N, in_features), got {tuple(x.shape)}; '
                         f'reshape it first, e.g. x.reshape(N, -1)')
    if w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f'linear: x has {x.shape[1]} features but w has shape {tuple(w.shape)}, '
                         f'expected ({w.shape[0]}, {x.shape[1]})')
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise ValueError(f'linear expects b of shape ({w.shape[0]},), got {tuple(b.shape)}')
    op = backend.fast_cpu('linear', x) or Linear              # the CPU speed hook
    return op.apply(x, w, b)
