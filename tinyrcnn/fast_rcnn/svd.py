"""Truncated SVD for faster detection (Fast R-CNN, Sec. 3.1).

At test time the fully connected layers run once per RoI, so for 2000 RoIs they take nearly
half of the forward pass (Fig. 2). A u x v layer y = W x + b is replaced by the best rank-t
approximation of W, W ~ U_t S_t V_t^T, as two layers: S_t V_t^T (t x v, no bias), then U_t
(u x t) with the original bias. u*v multiplications per RoI become t*(u + v).

Only the top t singular triplets are needed, and a full SVD of VGG16's fc6 (4096 x 25088)
computes all 4096 of them, for minutes on a CPU. `truncated_svd` finds just the top t, from
the eigenvectors of the smaller Gram matrix; `svd_linear(..., full_svd=True)` keeps the full
LAPACK SVD (what the released code's compress_net.py does) as the reference it is tested against.
"""
import numpy as np

from .. import nn


def truncated_svd(W, rank):
    """The top `rank` singular triplets of W (u, v), in W's precision (float32 stays float32,
    anything else is computed in float64).

    Returns U (u, t), S (t,) in decreasing order and Vt (t, v), such that U * S @ Vt is a best
    rank-t approximation of W. The columns of U and rows of Vt are orthonormal (to the
    precision's rounding), except that singular values that are numerically zero (below
    S[0] * m * eps, m the Gram matrix's size) get zero vectors.

    With A = W (or W^T, whichever has fewer rows, m <= n), A A^T = U S^2 U^T: the top t
    eigenvectors Q of this m x m Gram matrix are the left singular vectors. The rest follows
    from one product, Q^T A = S V^T: no second eigenproblem whose vectors' signs would have to
    be matched with the first, and for a wide W (fc6) the two layers, S V^T and U = Q, need no
    division by a singular value. The Gram matrix squares the condition number: singular
    values below ~1e-8 of the largest (float64) or ~3e-4 (float32) are lost in its rounding,
    and their vectors are orthogonal only to about eps * (S[0] / S[i])^2. The product stays
    accurate, as it is W projected onto the span of Q whatever Q's smallest directions are: for
    VGG16's fc6 in float32 (10 s where LAPACK's full SVD takes minutes, `bench --only svd`)
    the approximation error equals the exact truncation's to 1e-9.
    """
    from scipy.linalg import eigh        # LAPACK's MRRR (syevr) computes a subset of eigenpairs
    dtype = np.float32 if np.asarray(W).dtype == np.float32 else np.float64
    A = np.asarray(W, dtype=dtype)
    if A.ndim != 2 or not 1 <= rank <= min(A.shape):
        raise ValueError(f'rank must be in [1, {min(A.shape)}] for a {A.shape} matrix, got {rank}')
    tall = A.shape[0] > A.shape[1]
    if tall:
        A = A.T                                                  # (m, n), m < n
    m = A.shape[0]
    _, Q = eigh(A @ A.T, subset_by_index=[m - rank, m - 1], driver='evr', check_finite=False)
    Q = Q[:, ::-1]                                               # (m, t), largest first
    # an eigenvector's sign is arbitrary (LAPACK's choice): fix it, so that the factors depend on
    # W alone; the largest entry of each column of Q is made positive
    biggest = Q[np.abs(Q).argmax(axis=0), np.arange(rank)]
    Q = Q * np.where(biggest < 0, -1, 1).astype(dtype)
    C = Q.T @ A                                                  # (t, n) = S V^T, rows orthogonal
    S = np.linalg.norm(C, axis=1)                                # (t,) never sqrt of an eigenvalue
    # that rounding made slightly negative; rows below S[0] * m * eps are zero (a
    # rank-deficient W): no division of rounding noise by rounding noise
    nonzero = S > S[0] * min(A.shape) * np.finfo(dtype).eps
    S = np.where(nonzero, S, 0).astype(dtype)
    Vt = np.divide(C, S[:, None], out=np.zeros_like(C), where=nonzero[:, None])
    if tall:                                                     # W = A^T ~ Vt^T S Q^T
        return Vt.T, S, Q.T
    return Q, S, Vt


def svd_linear(layer, rank, full_svd=False):
    """Two Linear layers whose product is the best rank-`rank` approximation of `layer`.

    full_svd=True computes every singular triplet with LAPACK (np.linalg.svd), the reference;
    the default computes only the top `rank` (`truncated_svd`). Both give the same product up
    to rounding."""
    W = layer.weight.numpy()                                     # (u, v), in the layer's dtype
    u, v = W.shape
    if not 1 <= rank <= min(u, v):
        raise ValueError(f'SVD rank must be in [1, {min(u, v)}] for a {u}x{v} layer, got {rank}')
    if full_svd:
        U, S, Vt = np.linalg.svd(W, full_matrices=False)
        U, S, Vt = U[:, :rank], S[:rank], Vt[:rank]
    else:
        U, S, Vt = truncated_svd(W, rank)
    first = nn.Linear(v, rank, bias=False)
    second = nn.Linear(rank, u)
    dtype, device = layer.weight.dtype, layer.weight.device
    first.weight.data = (S[:, None] * Vt).astype(dtype)          # (t, v)
    second.weight.data = U.astype(dtype)                         # (u, t)
    second.bias.data = layer.bias.numpy().astype(dtype)
    return nn.Sequential(first, second).to(device)
