"""Truncated SVD for faster detection (Fast R-CNN, Sec. 3.1).

At test time the fully connected layers run once per RoI, so for 2000 RoIs they take nearly
half of the forward pass (Fig. 2). A u x v layer y = W x + b is replaced by the best rank-t
approximation of W, W ~ U_t S_t V_t^T, as two layers: S_t V_t^T (t x v, no bias), then U_t
(u x t) with the original bias. u*v multiplications per RoI become t*(u + v).
"""
import numpy as np

from .. import nn


def svd_linear(layer, rank):
    """Two Linear layers whose product is the best rank-`rank` approximation of `layer`."""
    W = layer.weight.numpy()                                     # (u, v), in the layer's dtype
    u, v = W.shape
    if not 1 <= rank <= min(u, v):
        raise ValueError(f'SVD rank must be in [1, {min(u, v)}] for a {u}x{v} layer, got {rank}')
    U, S, Vt = np.linalg.svd(W, full_matrices=False)
    first = nn.Linear(v, rank, bias=False)
    second = nn.Linear(rank, u)
    dtype, device = layer.weight.dtype, layer.weight.device
    first.weight.data = (S[:rank, None] * Vt[:rank]).astype(dtype)   # (t, v)
    second.weight.data = U[:, :rank].astype(dtype)                   # (u, t)
    second.bias.data = layer.bias.numpy().astype(dtype)
    return nn.Sequential(first, second).to(device)
