"""tinyrcnn.parallel: ops split over two threads give the single-thread numbers exactly."""
import numpy as np
import pytest

import tinyrcnn as tr
import tinyrcnn.functional as F
from tinyrcnn import parallel


def forward_backward(seed):
    rng = np.random.default_rng(seed)
    x = tr.Tensor(rng.standard_normal((2, 6, 21, 18)).astype(np.float32), requires_grad=True)
    w = tr.Tensor(rng.standard_normal((4, 6, 3, 3)).astype(np.float32), requires_grad=True)
    y = F.max_pool2d(F.relu(F.conv2d(x, w, padding=1)), 2)
    z = F.conv2d(y, w[:, :4], stride=2)                       # a strided conv: im2col + col2im
    z.backward(rng.standard_normal(z.shape).astype(np.float32))
    return [y.data, z.data, x.grad, w.grad]


@pytest.mark.parametrize('seed', [0, 1])
def test_ops_split_over_threads_equal_the_whole(monkeypatch, seed):
    whole = forward_backward(seed)                             # small: no split
    calls = []
    split = parallel.split_work

    def counting(n, elements, fn):
        calls.append(n)
        return split(n, elements, fn)
    monkeypatch.setattr(parallel, 'INTRA_OP_MIN_ELEMENTS', 0)   # split everything in two
    for module in ('conv', 'pool', 'activation'):
        monkeypatch.setattr(f'tinyrcnn.ops.{module}.split_work', counting)
    halves = forward_backward(seed)
    assert len(calls) >= 6                                     # im2col, col2im, pool, ReLU ...
    for a, b in zip(whole, halves):
        np.testing.assert_array_equal(a, b)


def test_split_work_covers_the_range_once():
    seen = np.zeros(1001, int)

    def fn(lo, hi):
        seen[lo:hi] += 1
    parallel.split_work(1001, 1 << 30, fn)
    assert (seen == 1).all()
