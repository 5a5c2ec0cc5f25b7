import numpy as np
import pytest

import tinyrcnn as tr
import tinyrcnn.functional as F
from helpers import distinct


def test_relu_values_and_gradcheck():
    x = tr.Tensor(distinct((3, 4), 1), requires_grad=True)
    np.testing.assert_array_equal(F.relu(x).data, np.maximum(x.data, 0))
    assert tr.gradcheck(F.relu, [x])


def test_dropout_scales_kept_units_and_is_identity_at_test_time():
    tr.manual_seed(0)
    x = tr.Tensor(np.ones((200, 50)), requires_grad=True)
    y = F.dropout(x, p=0.5, training=True)
    kept = y.data != 0
    assert 0.45 < kept.mean() < 0.55
    np.testing.assert_array_equal(y.data[kept], 2.0)           # inverted dropout: 1 / (1 - p)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, y.data)               # same mask routes the gradient
    assert F.dropout(x, 0.5, training=False) is x
    with pytest.raises(ValueError, match=r'\[0, 1\)'):
        F.dropout(x, 1.0)


def test_dropout_gradcheck_with_fixed_mask():
    x = tr.Tensor(distinct((4, 5), 2), requires_grad=True)

    def fn(x):
        tr.manual_seed(3)                                       # same mask on every call
        return F.dropout(x, 0.3)
    assert tr.gradcheck(fn, [x])


def test_linear_values_gradcheck_and_errors():
    x = tr.Tensor(distinct((3, 5), 3), requires_grad=True)
    w = tr.Tensor(distinct((4, 5), 4), requires_grad=True)
    b = tr.Tensor(distinct((4,), 5), requires_grad=True)
    np.testing.assert_allclose(F.linear(x, w, b).data, x.data @ w.data.T + b.data, atol=1e-14)
    assert tr.gradcheck(F.linear, [x, w, b])
    assert tr.gradcheck(lambda x, w: F.linear(x, w), [x, w])
    with pytest.raises(ValueError, match='5 features'):
        F.linear(x, tr.Tensor(np.zeros((4, 6))))
    with pytest.raises(ValueError, match=r'\(N, in_features\)'):
        F.linear(tr.Tensor(np.zeros((2, 3, 5))), w)


def test_cross_entropy_values_stability_gradcheck_errors():
    logits = np.array([[1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0]])
    labels = np.array([2, 0])
    loss = F.cross_entropy(tr.Tensor(logits), labels)
    expected = (-(3 - np.log(np.exp(1) + np.exp(2) + np.exp(3))) + 0.0) / 2
    np.testing.assert_allclose(loss.data, expected, rtol=1e-12)   # no overflow at 1000
    x = tr.Tensor(distinct((5, 4), 6, scale=4), requires_grad=True)
    y = np.array([0, 3, 1, 1, 2])
    assert tr.gradcheck(lambda x: F.cross_entropy(x, y), [x])
    with pytest.raises(ValueError, match=r'labels must be in \[0, 3\]'):
        F.cross_entropy(x, np.array([0, 4, 1, 1, 2]))
    with pytest.raises(ValueError, match='integer labels'):
        F.cross_entropy(x, np.zeros(5))
    with pytest.raises(ValueError, match=r'shape \(5,\)'):
        F.cross_entropy(x, np.zeros(4, np.int64))
    with pytest.raises(ValueError, match=r'\(N, K\)'):
        F.cross_entropy(tr.Tensor(np.zeros(3)), np.zeros(3, np.int64))


def test_smooth_l1_values_sigma_weights_gradcheck():
    d = np.array([[0.5, -2.0, 0.1, 3.0]])
    loss = F.smooth_l1_loss(tr.Tensor(d), np.zeros_like(d))
    np.testing.assert_allclose(loss.data, 0.125 + 1.5 + 0.005 + 2.5)      # sigma = 1
    loss3 = F.smooth_l1_loss(tr.Tensor(d), np.zeros_like(d), sigma=3.0)
    # sigma = 3: quadratic below 1/9: only 0.1 -> 0.5 * 9 * 0.01; others |d| - 1/18
    np.testing.assert_allclose(loss3.data, (0.5 - 1 / 18) + (2 - 1 / 18) + 0.045 + (3 - 1 / 18))
    wt = np.array([[1.0, 0.0, 1.0, 0.0]])
    np.testing.assert_allclose(F.smooth_l1_loss(tr.Tensor(d), 0 * d, weight=wt).data, 0.13)
    x = tr.Tensor(distinct((3, 8), 7, scale=6), requires_grad=True)
    t = tr.Tensor(distinct((3, 8), 8), requires_grad=True)
    w = (np.arange(24).reshape(3, 8) % 3 > 0).astype(np.float64)
    assert tr.gradcheck(lambda x, t: F.smooth_l1_loss(x, t, w, sigma=2.0), [x, t])
    # divided by the number of rows, not elements
    two_rows = F.smooth_l1_loss(tr.Tensor(np.vstack([d, d])), np.zeros((2, 4)))
    np.testing.assert_allclose(two_rows.data, loss.data)
    with pytest.raises(ValueError, match='same shape'):
        F.smooth_l1_loss(tr.Tensor(d), np.zeros((1, 3)))
    with pytest.raises(ValueError, match='sigma > 0'):
        F.smooth_l1_loss(tr.Tensor(d), 0 * d, sigma=0)
