"""Truncated SVD of the fc layers (tinyrcnn/fast_rcnn/svd.py, Sec. 3.1)."""
import numpy as np
import pytest

import tinyrcnn as tr
from tinyrcnn.fast_rcnn.network import FastRCNN
from tinyrcnn.fast_rcnn.svd import svd_linear, truncated_svd
from tinyrcnn.vgg import VGG
from helpers import distinct


def tiny_fast_rcnn(num_classes=2):
    trunk = VGG((3, 'M', 4, 'M', 4, 'M'), num_classes=10, hidden=6, pool_size=2)
    return FastRCNN(trunk, num_classes, freeze_stages=0, roi_size=(2, 2), spatial_scale=1 / 4)


def test_truncated_svd_counts_and_accuracy():
    tr.manual_seed(2)
    model = tiny_fast_rcnn().to(dtype=np.float64).eval()
    x = tr.Tensor(distinct((1, 3, 12, 12), 3))
    rois = np.array([[0, 0, 0, 11, 11], [0, 2, 3, 9, 10]], np.float64)
    with tr.no_grad():
        before = model(x, rois)[0].numpy()
    fc6, fc7 = model.classifier[0], model.classifier[3]
    counts = model.compress(fc6_rank=min(fc6.weight.shape), fc7_rank=min(fc7.weight.shape))
    with tr.no_grad():
        after = model(x, rois)[0].numpy()
    np.testing.assert_allclose(after, before, atol=1e-10)       # full rank: the same function
    u, v = fc6.weight.shape
    t = min(u, v)
    assert counts['parameters_after'] - counts['parameters_before'] == (t * (u + v) - u * v) + (
        min(fc7.weight.shape) * sum(fc7.weight.shape) - fc7.weight.size)
    with pytest.raises(ValueError, match='already compressed'):
        model.compress()
    low = tiny_fast_rcnn().to(dtype=np.float64).eval()
    low.load_state_dict({k: v for k, v in tiny_fast_rcnn().state_dict().items()}, strict=False)
    with pytest.raises(ValueError, match='SVD rank'):
        low.compress(fc6_rank=10_000)


def spectrum_matrix(shape, singular_values, seed=0):
    """W = U diag(s) V^T with random orthonormal U, V: a matrix whose spectrum is known."""
    rng = np.random.default_rng(seed)
    m = len(singular_values)
    U = np.linalg.qr(rng.standard_normal((shape[0], m)))[0]
    V = np.linalg.qr(rng.standard_normal((shape[1], m)))[0]
    return (U * singular_values) @ V.T


def relative_error(W, U, S, Vt):
    return np.linalg.norm(W - (U * S) @ Vt) / np.linalg.norm(W)


def exact_error(W, rank):
    """||W - W_t||_F / ||W||_F of the exact truncated SVD: the singular values left out."""
    s = np.linalg.svd(W.astype(np.float64), compute_uv=False)
    return np.sqrt((s[rank:] ** 2).sum() / (s ** 2).sum())


CASES = {   # name: (shape, singular values or None for a Gaussian matrix: a flat spectrum)
    'gaussian wide': ((40, 90), None),
    'gaussian tall': ((90, 40), None),
    'ill-conditioned wide': ((40, 90), np.logspace(0, -12, 40)),
    'ill-conditioned tall': ((90, 40), np.logspace(0, -12, 40)),
    'rank 5 of 40 (zero singular values)': ((40, 90), np.r_[np.linspace(2, 1, 5), np.zeros(35)]),
    'square, one repeated singular value': ((30, 30), np.r_[3.0, np.ones(29)]),
}


@pytest.mark.parametrize('case', list(CASES))
@pytest.mark.parametrize('rank', [1, 4, 12])
def test_truncated_svd_error_equals_the_exact_truncation(case, rank):
    shape, s = CASES[case]
    W = np.random.default_rng(1).standard_normal(shape) if s is None else spectrum_matrix(shape, s)
    U, S, Vt = truncated_svd(W, rank)
    assert U.shape == (shape[0], rank) and S.shape == (rank,) and Vt.shape == (rank, shape[1])
    assert np.all(np.diff(S) <= 1e-12 * S[0]) and np.all(S >= 0)
    np.testing.assert_allclose(S, np.linalg.svd(W, compute_uv=False)[:rank], rtol=1e-9, atol=1e-12 * S[0])
    assert abs(relative_error(W, U, S, Vt) - exact_error(W, rank)) < 1e-10
    live = S > 1e-6 * S[0]                       # well above the Gram matrix's rounding
    np.testing.assert_allclose(U[:, live].T @ U[:, live], np.eye(live.sum()), atol=1e-9)
    np.testing.assert_allclose(Vt[live] @ Vt[live].T, np.eye(live.sum()), atol=1e-9)


@pytest.mark.parametrize('spectrum', ['decaying', 'gaussian'])
def test_truncated_svd_of_float32_weights_works_in_float32_to_the_exact_error(spectrum):
    from tinyrcnn.bench.svd import fc_like
    W = fc_like((64, 400), spectrum, seed=3)                     # float32, like the fc layers
    for w in (W, W.T):
        U, S, Vt = truncated_svd(w, 24)
        assert U.dtype == S.dtype == Vt.dtype == np.float32
        assert abs(relative_error(w.astype(np.float64), U, S, Vt) - exact_error(w, 24)) < 1e-5
        np.testing.assert_allclose(U.T @ U, np.eye(24), atol=1e-5)
        np.testing.assert_allclose(S, np.linalg.svd(w.astype(np.float64), compute_uv=False)[:24],
                                   rtol=1e-4)


def test_truncated_svd_in_float32_keeps_small_but_real_singular_values():
    """A wide float32 matrix whose spectrum spans 1 to 1e-3: every requested triplet is real
    (none below the Gram matrix's rounding), so the error is the exact truncation's."""
    W = spectrum_matrix((60, 20000), np.logspace(0, -3, 60), seed=4).astype(np.float32)
    U, S, Vt = truncated_svd(W, 56)
    assert np.all(S > 0)
    assert abs(relative_error(W.astype(np.float64), U, S, Vt) - exact_error(W, 56)) < 1e-6


def test_truncated_svd_zero_singular_values_get_zero_vectors_and_a_fixed_sign():
    W = spectrum_matrix((20, 50), np.r_[np.linspace(2, 1, 3), np.zeros(17)])
    U, S, Vt = truncated_svd(W, 6)
    assert np.all(S[3:] == 0) and np.all(Vt[3:] == 0)
    np.testing.assert_allclose((U * S) @ Vt, W, atol=1e-12)
    # the sign of each triplet is W's, not LAPACK's: the largest entry of each column of U is
    # positive, and -W flips V, not U
    U2, S2, Vt2 = truncated_svd(-W, 3)
    assert np.all(U[np.abs(U).argmax(0), range(6)][:3] > 0)
    np.testing.assert_allclose(U2, U[:, :3], atol=1e-12)
    np.testing.assert_allclose(Vt2, -Vt[:3], atol=1e-12)


def test_truncated_svd_checks_the_rank():
    with pytest.raises(ValueError, match='rank must be in'):
        truncated_svd(np.ones((3, 4)), 4)
    with pytest.raises(ValueError, match='rank must be in'):
        truncated_svd(np.ones((3, 4)), 0)


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('shape', [(24, 60), (60, 24)])
def test_svd_linear_matches_the_full_lapack_svd(dtype, shape):
    """The layers from the top-t route and from the full SVD (the reference) compute the same
    function, in the layer's dtype, with an ill-conditioned weight."""
    layer = tr.nn.Linear(shape[1], shape[0]).to(dtype=dtype)
    W = spectrum_matrix(shape, np.logspace(0, -6, min(shape)), seed=3)
    layer.weight.data = W.astype(dtype)
    x = tr.Tensor(np.random.default_rng(4).standard_normal((5, shape[1])).astype(dtype))
    rank = 7
    fast, full = svd_linear(layer, rank), svd_linear(layer, rank, full_svd=True)
    for two in (fast, full):
        assert [p.dtype for p in two.parameters()] == [dtype] * 3
    with tr.no_grad():
        y_fast, y_full = fast(x).numpy(), full(x).numpy()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y_fast, y_full, atol=tol * np.abs(y_full).max())
    W_t = fast[1].weight.numpy().astype(np.float64) @ fast[0].weight.numpy()
    error = np.linalg.norm(W_t - layer.weight.numpy()) / np.linalg.norm(layer.weight.numpy())
    assert abs(error - exact_error(layer.weight.numpy(), rank)) < 10 * tol
