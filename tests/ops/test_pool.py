import numpy as np
import pytest

import tinyrcnn as tr
import tinyrcnn.functional as F
from helpers import distinct, gpu


def naive_pool(x, k, s):
    N, C, H, W = x.shape
    Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
    y = np.zeros((N, C, Ho, Wo))
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    y[n, c, i, j] = x[n, c, i * s:i * s + k, j * s:j * s + k].max()
    return y


@pytest.mark.parametrize('shape,k,s', [((2, 3, 8, 6), 2, None), ((1, 2, 7, 9), 3, 2),
                                       ((2, 1, 5, 5), 2, 1), ((1, 2, 9, 7), 2, 3)])
def test_max_pool2d_forward_and_gradcheck(shape, k, s):
    x = tr.Tensor(distinct(shape, 1), requires_grad=True)
    y = F.max_pool2d(x, k, s)
    np.testing.assert_array_equal(y.data, naive_pool(x.data, k, s or k))
    assert tr.gradcheck(lambda x: F.max_pool2d(x, k, s), [x])


def test_max_pool2d_first_maximum_wins_and_overlap_accumulates():
    x = tr.Tensor(np.array([[[[1., 3., 3.], [0., 3., 2.], [0., 0., 0.]]]]), requires_grad=True)
    y = F.max_pool2d(x, 2, 1)                                    # overlapping windows
    np.testing.assert_array_equal(y.data[0, 0], [[3, 3], [3, 3]])
    y.sum().backward()
    # windows at (0,0) and (0,1) both pick x[0,1] (the first 3 in row-major order, not x[0,2]
    # or x[1,1]); windows at (1,0) and (1,1) both pick x[1,1]
    np.testing.assert_array_equal(x.grad[0, 0], [[0, 2, 0], [0, 2, 0], [0, 0, 0]])


def test_max_pool2d_bad_arguments():
    with pytest.raises(ValueError, match=r'\(N, C, H, W\)'):
        F.max_pool2d(tr.Tensor(np.zeros((2, 4, 4))), 2)
    with pytest.raises(ValueError, match='smaller than the window'):
        F.max_pool2d(tr.Tensor(np.zeros((1, 1, 2, 2))), 3)
    with pytest.raises(ValueError, match='>= 1'):
        F.max_pool2d(tr.Tensor(np.zeros((1, 1, 4, 4))), 0)


@gpu
def test_max_pool2d_cupy_equals_numpy():
    x = distinct((2, 3, 9, 8), 1, np.float32)
    gy = distinct((2, 3, 4, 3), 2, np.float32)
    res = {}
    for dev in ('cpu', 'cuda'):
        X = tr.Tensor(x, requires_grad=True).to(dev)
        y = F.max_pool2d(X, 3, 2)
        y.backward(tr.Tensor(gy).to(dev).data)
        res[dev] = y.numpy(), tr.Tensor(X.grad).numpy()
    np.testing.assert_array_equal(res['cpu'][0], res['cuda'][0])
    np.testing.assert_allclose(res['cpu'][1], res['cuda'][1], atol=1e-6)
