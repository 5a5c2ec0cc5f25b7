"""Rows for truncated SVD (Fast R-CNN, Sec. 3.1): computing it, and what it buys the RoI head.

Computing it: `truncated_svd` (the top t triplets from the Gram matrix's eigenvectors) against
the full LAPACK SVD that compress_net.py uses, on fc6-sized matrices, with the approximation
error ||W - W_t||_F / ||W||_F of each next to the exact one. A Gaussian matrix has a flat
spectrum (every singular value alike, the hardest case for telling the top t apart); trained
layers' spectra decay, which the other matrix imitates.
"""
import time

import numpy as np

from .. import nn
from ..fast_rcnn.svd import svd_linear, truncated_svd
from ..seed import manual_seed
from ..tensor import Tensor, no_grad
from .common import timeit


def fc_like(shape, kind, seed=0):
    """A float32 weight matrix of `shape`: 'gaussian' (flat spectrum) or 'decaying' (singular
    values ~ 1 / (1 + i/32), roughly: a random orthonormal basis times that spectrum times a
    Gaussian matrix, whose rows are nearly orthonormal)."""
    rng = np.random.default_rng(seed)
    u, v = shape
    Z = rng.standard_normal(shape, dtype=np.float32)
    if kind == 'gaussian':
        return Z
    m = min(u, v)
    U = np.linalg.qr(rng.standard_normal((u, m)))[0].astype(np.float32)
    spectrum = (1.0 / (1.0 + np.arange(m) / 32.0)).astype(np.float32)
    return (U * spectrum) @ Z[:m] / np.float32(np.sqrt(v))


def relative_error(W, U, S, Vt):
    """||W - U S Vt||_F / ||W||_F, in float64, a row block at a time (fc6 is 100M entries)."""
    num, den = 0.0, 0.0
    for i in range(0, W.shape[0], 512):
        w = W[i:i + 512].astype(np.float64)
        num += float(((w - (U[i:i + 512] * S) @ Vt) ** 2).sum())
        den += float((w ** 2).sum())
    return np.sqrt(num / den)


def exact_error(W, rank):
    """The smallest possible ||W - W_t||_F / ||W||_F: the singular values left out, here from
    every eigenvalue of the Gram matrix in float64 (cheaper than a full SVD, and exact to far
    better than the 1e-4 that matters)."""
    A = W.astype(np.float64)
    G = A @ A.T if A.shape[0] <= A.shape[1] else A.T @ A
    lam = np.clip(np.linalg.eigvalsh(G), 0, None)[::-1]          # S^2, largest first
    return float(np.sqrt(lam[rank:].sum() / lam.sum()))


def bench_truncated_svd(shape=(4096, 25088), rank=1024, full=True, kinds=('decaying', 'gaussian')):
    """Seconds for the top `rank` singular triplets of a `shape` matrix of each kind, with the
    approximation error next to the exact one; for the first kind the full LAPACK SVD
    (np.linalg.svd, as before) is timed too when `full`. One run each: these take seconds to
    minutes. VGG16's fc6 and the paper's rank are the defaults."""
    rows = []
    for n, kind in enumerate(kinds):
        W = fc_like(shape, kind)
        start = time.perf_counter()
        U, S, Vt = truncated_svd(W, rank)
        t_ours = time.perf_counter() - start
        t_full = None
        if full and n == 0:
            start = time.perf_counter()
            np.linalg.svd(W, full_matrices=False)
            t_full = time.perf_counter() - start
        error, exact = relative_error(W, U, S, Vt), exact_error(W, rank)
        label = (f'top-{rank} SVD of a {shape[0]}x{shape[1]} {kind} float32 matrix, error '
                 f'{error:.6f} (exact {exact:.6f}, difference {abs(error - exact):.0e})'
                 + ('; reference: full LAPACK SVD' if t_full else ''))
        rows.append((label, t_ours, t_full))
    return rows


def bench_svd_head(device='cpu', rois=256, fc6_rank=1024, fc7_rank=256, repeats=3):
    """Fast R-CNN's VGG16 head (fc6, fc7, cls_score, bbox_pred) on `rois` pooled RoIs, before and
    after truncated SVD (Sec. 3.1), with parameter counts and the change in class scores."""
    manual_seed(0)
    rng = np.random.default_rng(0)
    # fc6/fc7 with VGG16's shapes; weights drawn with a decaying spectrum, like trained layers
    def layer(out_f, in_f):
        lin = nn.Linear(in_f, out_f)
        U = np.linalg.qr(rng.standard_normal((out_f, min(out_f, 512))))[0]
        V = rng.standard_normal((min(out_f, 512), in_f)) / np.sqrt(in_f)
        spectrum = 1.0 / (1.0 + np.arange(U.shape[1]) / 32.0)
        lin.weight.data = ((U * spectrum) @ V).astype(np.float32)
        return lin
    head = nn.Sequential(layer(4096, 25088), nn.ReLU(), layer(4096, 4096), nn.ReLU(),
                         nn.Linear(4096, 21))
    head.to(device).eval()
    x = Tensor(rng.standard_normal((rois, 25088)).astype(np.float32)).to(device)

    def run_head():
        with no_grad():
            return head(x)
    before_params = head.num_parameters()
    t_full = timeit(run_head, device, repeats)
    scores_full = run_head().numpy()
    start = time.perf_counter()
    setattr(head, '0', svd_linear(head[0], fc6_rank))           # offline, once per model
    setattr(head, '2', svd_linear(head[2], fc7_rank))
    t_factor = time.perf_counter() - start
    t_svd = timeit(run_head, device, repeats)
    scores_svd = run_head().numpy()
    change = float(np.abs(scores_svd - scores_full).max() / np.abs(scores_full).max())
    return [(f'RoI head, {rois} RoIs, full ({before_params / 1e6:.1f}M params) ({device})', t_full, None),
            (f'RoI head, SVD {fc6_rank}/{fc7_rank} ({head.num_parameters() / 1e6:.1f}M params, '
             f'score change {change:.1e}; SVD itself {t_factor:.0f} s)', t_svd, t_full)]
