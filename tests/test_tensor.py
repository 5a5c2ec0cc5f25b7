import numpy as np
import pytest

import tinyrcnn as tr
from helpers import distinct


def T(a, grad=True):
    return tr.Tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def test_dtype_defaults_and_preservation():
    assert tr.Tensor([1, 2, 3]).dtype == np.float32          # Python lists: float32
    assert tr.Tensor(np.zeros(3)).dtype == np.float64          # arrays keep their dtype
    assert tr.Tensor(np.zeros(3, np.int64)).dtype == np.int64
    x = tr.Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    y = ((x * 2 + 1) / 3 - x).sum()
    assert y.dtype == np.float32
    y.backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad, np.full((2, 3), 2 / 3 - 1), rtol=1e-6)


def test_arithmetic_gradients_with_broadcasting():
    a, b = T(distinct((3, 4), 1)), T(distinct((4,), 2) + 2.0)
    c = T(distinct((3, 1), 3) + 3.0)
    assert tr.gradcheck(lambda a, b, c: (a + b) * c - a / b + (-c) / (a + 2.0), [a, b, c])
    assert tr.gradcheck(lambda a, b: 1.0 - a * 3.0 + 2.0 / b, [a, b])
    assert tr.gradcheck(lambda a: (a + 2.0) ** 3, [a])


def test_matmul_sum_mean_reshape_transpose():
    a, b = T(distinct((3, 4), 4)), T(distinct((4, 5), 5))
    assert tr.gradcheck(lambda a, b: a @ b, [a, b])
    assert tr.gradcheck(lambda a: a.sum(axis=1) * a.mean(axis=0).sum(), [a])
    assert tr.gradcheck(lambda a: a.mean(), [a])
    assert tr.gradcheck(lambda a: a.reshape(2, -1) @ a.reshape(6, 2).transpose().transpose(), [a])
    assert tr.gradcheck(lambda a: a.reshape(12).reshape((2, 2, 3)).transpose(2, 0, 1), [a])
    assert tr.gradcheck(lambda a: a.sum(axis=(0, 1), keepdims=True) * a, [a])
    assert tr.gradcheck(lambda a: a.exp() + (a + 1.0).log(), [a])


def test_indexing_basic_and_fancy_accumulates():
    a = T(distinct((4, 5), 6))
    assert tr.gradcheck(lambda a: a[1:3, ::2] * 2.0, [a])
    assert tr.gradcheck(lambda a: a[:, 1], [a])
    idx = np.array([0, 2, 2, 3, 0])                    # repeated rows must accumulate
    assert tr.gradcheck(lambda a: a[idx], [a])
    a.grad = None
    a[idx].sum().backward()
    np.testing.assert_array_equal(a.grad[:, 0], [2, 0, 2, 1])
    mask = a.data > 0
    assert tr.gradcheck(lambda a: a[mask], [a])
    assert tr.gradcheck(lambda a: a[tr.Tensor(np.array([1, 1])), 2], [a])


def test_concat():
    a, b = T(distinct((2, 3), 7)), T(distinct((2, 2), 8))
    assert tr.gradcheck(lambda a, b: tr.concat([a, b], axis=1) * 3.0, [a, b])
    assert tr.concat([a, b], axis=1).shape == (2, 5)
    with pytest.raises(ValueError):
        tr.concat([])


def test_gradient_accumulates_over_backward_calls_and_shared_use():
    x = T([1.0, 2.0, 3.0])
    y = (x * x).sum() + x.sum()          # x used twice in the graph
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 1)
    (x * 1.0).sum().backward()            # a second backward adds to .grad
    np.testing.assert_allclose(x.grad, 2 * x.data + 2)


def test_backward_releases_what_the_graph_saved_unless_asked_to_retain_it():
    import weakref
    x = T([1.0, -2.0, 3.0])
    h = (x * 3.0).exp()                   # Exp saves its output h for backward
    y = (h * h).sum()
    kept = weakref.ref(h.data)
    del h
    y.backward(retain_graph=True)
    assert kept() is not None             # the graph still holds it
    y.backward()                          # a second pass through a retained graph adds up
    np.testing.assert_allclose(x.grad, 2 * 2 * 3 * np.exp(6 * x.data))   # 2 passes of d/dx e^(6x)
    assert kept() is None                 # released as the pass went through it
    with pytest.raises(RuntimeError, match='released graph'):
        y.backward()


def test_diamond_graph_topological_order():
    x = T([0.5, -1.5])
    h = x * 2.0
    y = (h * h + h * 3.0).sum()           # h has two consumers: its grad must be complete first
    y.backward()
    np.testing.assert_allclose(x.grad, (2 * 2 * x.data + 3) * 2)


def test_deep_graph_needs_no_recursion():
    x = T([1.0])
    y = x
    for _ in range(5000):
        y = y + 1.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0])


def test_no_grad_records_nothing():
    x = T([1.0, 2.0])
    with tr.no_grad():
        y = x * 2
    assert not y.requires_grad and y._ctx is None
    z = x * 2
    assert z.requires_grad


def test_backward_errors():
    x = T([1.0, 2.0])
    with pytest.raises(ValueError, match='scalar'):
        (x * 2).backward()
    with pytest.raises(RuntimeError, match='does not require grad'):
        tr.Tensor([1.0]).backward()
    with pytest.raises(ValueError, match='matmul'):
        x.reshape(1, 2) @ x.reshape(1, 2)


def test_numpy_is_a_copy_and_to_cpu():
    x = tr.Tensor(np.arange(3.0))
    n = x.numpy()
    n[0] = 99
    assert x.data[0] == 0
    assert x.to('cpu').device == 'cpu'
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        x.to('tpu')


def test_cuda_request_without_gpu_is_a_clear_error():
    from cupy_standin.switch import without_cupy
    with without_cupy():                          # as on a machine without CuPy, GPU or not
        assert not tr.cuda_available()
        with pytest.raises(RuntimeError, match='no GPU is available'):
            tr.Tensor([1.0]).to('cuda')
        with pytest.raises(RuntimeError, match='no GPU is available'):
            tr.nn.Linear(2, 2).to('cuda')


def test_importing_does_not_import_cupy():
    import subprocess
    import sys
    code = 'import sys, tinyrcnn, tinyrcnn.functional, tinyrcnn.nn; print("cupy" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                         cwd=__import__('os').path.dirname(__import__('os').path.dirname(__file__)))
    assert out.stdout.strip() == 'False'


def test_gradcheck_catches_a_wrong_gradient():
    class Wrong(tr.Function):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, gy):
            return (gy * self.x,)            # missing the factor 2

    x = T(distinct((5,), 9))
    with pytest.raises(AssertionError, match='worst relative error'):
        tr.gradcheck(lambda x: Wrong.apply(x), [x])
    with pytest.raises(ValueError, match='float64'):
        tr.gradcheck(lambda x: x * 2, [tr.Tensor(np.ones(2, np.float32), requires_grad=True)])
