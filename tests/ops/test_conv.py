import numpy as np
import pytest

import tinyrcnn as tr
import tinyrcnn.functional as F
from helpers import distinct, gpu, naive_conv


@pytest.mark.parametrize('shape,wshape,stride,padding', [
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, 1),
    ((1, 2, 9, 8), (3, 2, 3, 3), 2, 1),
    ((3, 1, 5, 7), (2, 1, 2, 3), 1, 0),
    ((2, 4, 11, 10), (5, 4, 5, 5), 3, 2),
    ((1, 3, 4, 4), (2, 3, 1, 1), 2, 0),
])
def test_conv2d_matches_naive_loop(shape, wshape, stride, padding):
    x, w, b = distinct(shape, 1), distinct(wshape, 2), distinct(wshape[:1], 3)
    y = F.conv2d(tr.Tensor(x), tr.Tensor(w), tr.Tensor(b), stride=stride, padding=padding)
    np.testing.assert_allclose(y.data, naive_conv(x, w, b, stride, padding), rtol=0, atol=1e-10)


@pytest.mark.parametrize('shape,wshape,stride,padding,bias', [
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, 1, True),      # batch > 1, padding
    ((1, 2, 9, 7), (3, 2, 3, 3), 2, 1, True),      # stride 2, odd sizes
    ((2, 2, 5, 6), (2, 2, 2, 3), 1, 0, False),     # no bias, rectangular kernel
    ((1, 2, 8, 8), (2, 2, 3, 3), 3, 2, True),      # stride that skips pixels
])
def test_conv2d_gradcheck(shape, wshape, stride, padding, bias):
    x = tr.Tensor(distinct(shape, 4), requires_grad=True)
    w = tr.Tensor(distinct(wshape, 5), requires_grad=True)
    b = tr.Tensor(distinct(wshape[:1], 6), requires_grad=True) if bias else None
    inputs = [x, w] + ([b] if bias else [])
    assert tr.gradcheck(lambda x, w, *b: F.conv2d(x, w, b[0] if b else None, stride, padding), inputs)


def test_conv2d_recomputes_columns_when_they_are_too_big(monkeypatch):
    from tinyrcnn.ops import conv
    monkeypatch.setattr(conv, 'KEEP_COLS_BYTES', 0)
    x = tr.Tensor(distinct((2, 2, 5, 5), 7), requires_grad=True)
    w = tr.Tensor(distinct((3, 2, 3, 3), 8), requires_grad=True)
    assert tr.gradcheck(lambda x, w: F.conv2d(x, w, None, 2, 1), [x, w])


def test_conv2d_skips_input_gradient_when_not_needed():
    x = tr.Tensor(distinct((1, 2, 5, 5), 9))
    w = tr.Tensor(distinct((3, 2, 3, 3), 10), requires_grad=True)
    F.conv2d(x, w, padding=1).sum().backward()
    assert x.grad is None and w.grad is not None


def test_conv2d_frozen_weights_skip_the_weight_gradient():
    # a frozen layer (conv1/conv2 in Fast R-CNN) passes dx on but computes no dw: backward must
    # not even need the saved columns
    x = tr.Tensor(distinct((2, 2, 6, 5), 11), requires_grad=True)
    w = tr.Tensor(distinct((3, 2, 3, 3), 12))
    b = tr.Tensor(distinct((3,), 13))
    y = F.conv2d(x, w, b, padding=1)
    y._ctx.cols = y._ctx.x = None                                 # nothing to build dw from
    y.sum().backward()
    x2 = tr.Tensor(x.data, requires_grad=True)
    F.conv2d(x2, tr.Tensor(w.data, requires_grad=True), b, padding=1).sum().backward()
    np.testing.assert_allclose(x.grad, x2.grad, rtol=1e-12)
    assert w.grad is None and b.grad is None


def test_conv2d_float32_stays_float32():
    x = tr.Tensor(distinct((1, 2, 5, 5), 1, np.float32), requires_grad=True)
    w = tr.Tensor(distinct((3, 2, 3, 3), 2, np.float32), requires_grad=True)
    y = F.conv2d(x, w, padding=1)
    y.sum().backward()
    assert y.dtype == x.grad.dtype == w.grad.dtype == np.float32


def test_conv2d_bad_arguments():
    x = tr.Tensor(np.zeros((1, 3, 5, 5)))
    with pytest.raises(ValueError, match='3 channels but w expects 4'):
        F.conv2d(x, tr.Tensor(np.zeros((2, 4, 3, 3))))
    with pytest.raises(ValueError, match=r'\(N, C, H, W\)'):
        F.conv2d(tr.Tensor(np.zeros((3, 5, 5))), tr.Tensor(np.zeros((2, 3, 3, 3))))
    with pytest.raises(ValueError, match='smaller than the kernel'):
        F.conv2d(x, tr.Tensor(np.zeros((2, 3, 7, 7))))
    with pytest.raises(ValueError, match=r'b of shape \(2,\)'):
        F.conv2d(x, tr.Tensor(np.zeros((2, 3, 3, 3))), tr.Tensor(np.zeros(3)))


def test_conv2d_matches_torch_if_installed():
    torch = pytest.importorskip('torch')
    x, w, b = distinct((2, 3, 10, 9), 11), distinct((4, 3, 3, 3), 12), distinct((4,), 13)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, torch.tensor(b), stride=2, padding=1)
    gy = distinct(tuple(yt.shape), 14)
    yt.backward(torch.tensor(gy))
    X, Wt = tr.Tensor(x, requires_grad=True), tr.Tensor(w, requires_grad=True)
    y = F.conv2d(X, Wt, tr.Tensor(b), stride=2, padding=1)
    y.backward(gy)
    np.testing.assert_allclose(y.data, yt.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(X.grad, xt.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(Wt.grad, wt.grad.numpy(), atol=1e-12)


@gpu
def test_conv2d_cupy_equals_numpy():
    x, w, b = distinct((2, 3, 9, 8), 1, np.float32), distinct((4, 3, 3, 3), 2, np.float32), distinct((4,), 3, np.float32)
    gy = distinct((2, 4, 5, 4), 4, np.float32)
    out = {}
    for dev in ('cpu', 'cuda'):
        X = tr.Tensor(x, requires_grad=True).to(dev)
        Wt = tr.Tensor(w, requires_grad=True).to(dev)
        y = F.conv2d(X, Wt, tr.Tensor(b).to(dev), stride=2, padding=1)
        y.backward(tr.Tensor(gy).to(dev).data)
        out[dev] = [y.numpy(), tr.Tensor(X.grad).numpy(), tr.Tensor(Wt.grad).numpy()]
    for a, c in zip(out['cpu'], out['cuda']):
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)
