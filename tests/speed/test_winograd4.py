"""The Winograd F(4x4, 3x3) path of conv2d (tinyrcnn/speed/winograd4.py): same numbers as the
naive loop in float64, float32 within its documented precision, same gradients, its C++
transforms bit-identical to its NumPy ones, and taken exactly where `use_winograd4` says."""
import numpy as np
import pytest

import tinyrcnn as tr
import tinyrcnn.functional as F
from tinyrcnn import speed
from tinyrcnn.kernels.cpu import compiler
from tinyrcnn.speed import threads, winograd, winograd4
from helpers import assert_bits_equal, distinct, naive_conv, signed_zeros


@pytest.fixture
def calls(monkeypatch):
    """The speed paths on, F(4x4, 3x3) for every 3x3 stride-1 conv; counts its forward passes."""
    monkeypatch.setattr(winograd, 'WINOGRAD_MIN_CHANNELS', 1)
    monkeypatch.setattr(winograd, 'WINOGRAD_MIN_PIXELS', 1)
    monkeypatch.setattr(winograd4, 'WINOGRAD4_MIN_WORK', 1)
    seen = []
    forward = winograd4.forward

    def counting(*args):
        seen.append(args[0].shape)
        return forward(*args)
    monkeypatch.setattr(winograd4, 'forward', counting)
    with speed.enabled():
        yield seen


def test_the_matrices_compute_a_1d_correlation():
    """A^T [(G g) * (B^T d)] = the four outputs of g slid over six inputs."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        d, g = rng.standard_normal(6), rng.standard_normal(3)
        want = [d[i:i + 3] @ g for i in range(4)]
        np.testing.assert_allclose(winograd4.AT @ ((winograd4.G @ g) * (winograd4.BT @ d)), want,
                                   rtol=0, atol=1e-13)


@pytest.mark.parametrize('shape,K,padding', [
    ((2, 3, 7, 6), 4, 1),          # batch > 1, output 7x6: cropped tiles both ways
    ((1, 2, 9, 8), 3, 0),          # no padding
    ((3, 2, 4, 5), 5, 2),          # padding 2: tiles over the padding only
    ((1, 1, 3, 3), 2, 0),          # a single output pixel
    ((1, 3, 12, 13), 2, 1),        # three rows of tiles: shared rows between neighbours
])
def test_winograd4_matches_naive_loop(calls, shape, K, padding):
    x, w, b = distinct(shape, 1), distinct((K, shape[1], 3, 3), 2), distinct((K,), 3)
    y = F.conv2d(tr.Tensor(x), tr.Tensor(w), tr.Tensor(b), padding=padding)
    assert calls == [shape]
    np.testing.assert_allclose(y.data, naive_conv(x, w, b, 1, padding), rtol=0, atol=1e-10)


@pytest.mark.parametrize('shape,K,padding,bias', [
    ((2, 3, 5, 6), 4, 1, True),
    ((1, 2, 9, 7), 3, 0, False),
    ((1, 2, 4, 4), 2, 2, True),
])
def test_winograd4_gradcheck(calls, shape, K, padding, bias):
    x = tr.Tensor(distinct(shape, 4), requires_grad=True)
    w = tr.Tensor(distinct((K, shape[1], 3, 3), 5), requires_grad=True)
    b = tr.Tensor(distinct((K,), 6), requires_grad=True) if bias else None
    inputs = [x, w] + ([b] if bias else [])
    assert tr.gradcheck(lambda x, w, *b: F.conv2d(x, w, b[0] if b else None, 1, padding), inputs)
    assert calls


def test_winograd4_recomputes_the_tiles_when_they_are_too_big(calls, monkeypatch):
    from tinyrcnn.ops import conv
    monkeypatch.setattr(conv, 'KEEP_COLS_BYTES', 0)
    x = tr.Tensor(distinct((2, 2, 9, 6), 7), requires_grad=True)
    w = tr.Tensor(distinct((3, 2, 3, 3), 8), requires_grad=True)
    y = F.conv2d(x, w, None, 1, 1)
    assert y._ctx.saved is None                    # backward's tiles were not kept on the graph
    assert tr.gradcheck(lambda x, w: F.conv2d(x, w, None, 1, 1), [x, w])
    assert calls


def test_winograd4_skips_gradients_nobody_needs(calls):
    x = tr.Tensor(distinct((1, 2, 6, 6), 9))
    w = tr.Tensor(distinct((3, 2, 3, 3), 10), requires_grad=True)
    F.conv2d(x, w, padding=1).sum().backward()
    assert x.grad is None and w.grad.shape == (3, 2, 3, 3)
    x.requires_grad, w.requires_grad, w.grad = True, False, None
    F.conv2d(x, w, padding=1).sum().backward()
    assert w.grad is None and x.grad.shape == (1, 2, 6, 6)
    gx, gw, gb = winograd4.backward(np.ones((1, 3, 6, 6)), winograd4.transforms(x.data, w.data, 1),
                                    need_x=False, need_w=False, need_b=True)
    assert gx is None and gw is None and gb.tolist() == [36.0] * 3
    assert len(calls) == 2


def _forward_backward(x, w, b, gy):
    X, Wt, B = (tr.Tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.conv2d(X, Wt, B, padding=1)
    y.backward(gy)
    return [y.data, X.grad, Wt.grad, B.grad]


def test_float32_winograd4_is_within_3e_5_of_float64():
    """A layer of 256 channels on 112x112 (F(4x4, 3x3) by default). Its coefficients
    (4, 5, 8, 1/6, 1/24) cost precision: float32 lands ~1e-5 of the scale from float64, several
    times F(2x2, 3x3)'s error, and still far below what training notices."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 256, 112, 112))
    w, b = rng.standard_normal((256, 256, 3, 3)) * 0.03, rng.standard_normal(256)
    gy = rng.standard_normal((1, 256, 112, 112))
    assert winograd4.use_winograd4(x.shape, w.shape, 1, np.float32)
    exact = _forward_backward(x, w, b, gy)                   # float64: the reference
    f32 = [a.astype(np.float32) for a in (x, w, b, gy)]
    with speed.enabled():
        fast = _forward_backward(*f32)
    y, saved = winograd.forward(*f32[:3], 1)                 # F(2x2, 3x3) for comparison
    f2 = [y, *winograd.backward(f32[3], saved)]
    for e, a, s in zip(exact, fast, f2):
        assert a.dtype == np.float32
        err4 = np.abs(a - e).max() / np.abs(e).max()
        err2 = np.abs(s - e).max() / np.abs(e).max()
        assert err4 < 3e-5 and err2 < 3e-6          # measured: <= 1.2e-5 and 8e-7
    assert np.abs(fast[0] - exact[0]).max() > np.abs(f2[0] - exact[0]).max()


def test_use_winograd4_takes_vgg16s_large_maps_and_no_demo_layer():
    from tinyrcnn.vgg import VGG16_CFG, VGG_TINY_CFG
    chosen, C, size = [], 3, 224
    for v in VGG16_CFG:
        if v == 'M':
            size //= 2
            continue
        chosen.append(winograd4.use_winograd4((1, C, size, size), (v, C, 3, 3), 1, np.float32))
        C = v
    #        conv1_1 1_2   2_1   2_2   3_1    3_2    3_3    4_1    4_2    4_3    5_1 ...
    assert chosen == [False, True, True, True, False, False, False, False, False, False, False,
                      False, False]
    # the paper's 600x800 (conv4 at 75x100) takes it down to conv4_3; conv1_2 there is too big
    # for either Winograd (the bands of speed.conv)
    assert winograd4.use_winograd4((1, 512, 75, 100), (512, 512, 3, 3), 1, np.float32)
    assert not winograd4.use_winograd4((1, 64, 600, 800), (64, 64, 3, 3), 1, np.float32)
    assert not winograd4.use_winograd4((1, 512, 28, 28), (512, 512, 3, 3), 1, np.float32)
    # its own size limit: conv2_2 on a 600x1000 image (300x500) is too big for F(2x2, 3x3)'s
    # tiles (4 numbers a pixel), not for F(4x4, 3x3)'s (2.25)
    assert winograd4.use_winograd4((1, 128, 300, 500), (128, 128, 3, 3), 1, np.float32)
    assert not winograd.use_winograd((1, 128, 300, 500), (128, 128, 3, 3), 1, np.float32)
    assert not winograd4.use_winograd4((1, 256, 112, 112), (256, 256, 3, 3), 1, np.float16)
    for N, H, W in [(2, 288, 384), (1, 288, 480), (32, 64, 64)]:     # the CPU demos' shapes
        C = 3
        for v in VGG_TINY_CFG:
            if v == 'M':
                H, W = H // 2, W // 2
                continue
            assert not winograd4.use_winograd4((N, C, H, W), (v, C, 3, 3), 1, np.float32)
            C = v
    assert not winograd4.use_winograd4((1, 256, 56, 56), (256, 256, 3, 3), 2, np.float32)


needs_compiler = pytest.mark.skipif(compiler() is None, reason='needs a C++ compiler (g++)')


@needs_compiler
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('N,C,K,H,W,padding', [
    (2, 3, 4, 7, 6, 1),            # cropped tiles both ways
    (1, 2, 3, 9, 8, 0),            # no padding
    (3, 2, 5, 4, 5, 2),            # tiles over the padding only
    (1, 4, 4, 1, 1, 1),            # one pixel
    (1, 16, 24, 30, 34, 1),        # several rows and columns of tiles
])
def test_the_compiled_transforms_equal_numpys_bit_for_bit(monkeypatch, dtype, N, C, K, H, W, padding):
    """winograd4.cpp against the NumPy transforms: the same operations in the same order (no
    fused multiply-adds), so equal arrays, forward (with and without bias) and both adjoints;
    whole, and with the channels split in two halves on two threads."""
    rng = np.random.default_rng(C * H + W)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in [(N, C, H, W), (K, C, 3, 3), (K,)])
    geo = winograd4.Geometry(x.shape, padding)
    gy = rng.standard_normal((N, K, geo.Ho, geo.Wo)).astype(dtype)
    signed_zeros(x, 1), signed_zeros(gy, 2), signed_zeros(b, 3)    # the signs of zero sums
    U = winograd4.filter_transform(w)
    results = []
    for compiled, split in ((False, False), (True, False), (True, True), (False, True)):
        monkeypatch.setattr(winograd, 'NATIVE', compiled)
        monkeypatch.setattr(threads, 'intra_op_threads', lambda: split)
        monkeypatch.setattr(threads, 'INTRA_OP_MIN_ELEMENTS', 0 if split else 1 << 60)
        assert (winograd4._native('input', x) is not None) == compiled
        V = winograd4.input_transform(x, geo)
        M = threads.matmul_stack(U, V)
        gM = winograd4.output_transform_adjoint(gy, geo)
        gV = threads.matmul_stack(U.transpose(0, 2, 1), gM)
        results.append([V, winograd4.output_transform(M, geo, b), winograd4.output_transform(M, geo),
                        gM, winograd4.input_transform_adjoint(gV, geo)])
    for other in results[1:]:
        for numpy_, compiled in zip(results[0], other):
            assert_bits_equal(compiled, numpy_)


@pytest.mark.parametrize('N,C,K,H', [(2, 128, 128, 113), (3, 64, 256, 80)])
def test_an_image_in_a_batch_gets_the_bits_it_gets_alone(N, C, K, H):
    """As for F(2x2, 3x3): one product per image, so a batch's image equals the image alone."""
    rng = np.random.default_rng(H)
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    w = (rng.standard_normal((K, C, 3, 3)) * 0.03).astype(np.float32)
    b, gy = rng.standard_normal(K).astype(np.float32), rng.standard_normal((N, K, H, H)).astype(np.float32)
    assert winograd4.use_winograd4(x.shape, w.shape, 1, np.float32)
    with speed.enabled(), threads.blas_threads(1):
        batch = _forward_backward(x, w, b, gy)
        alone = [_forward_backward(x[n:n + 1], w, b, gy[n:n + 1]) for n in range(N)]
    for n in range(N):
        np.testing.assert_array_equal(batch[0][n], alone[n][0][0])         # y
        np.testing.assert_array_equal(batch[1][n], alone[n][1][0])         # dx


def test_conv3x3_4x4_is_winograd4_at_any_size_and_passes_gradcheck():
    x = tr.Tensor(distinct((2, 3, 5, 6), 14), requires_grad=True)
    w = tr.Tensor(distinct((4, 3, 3, 3), 15), requires_grad=True)
    b = tr.Tensor(distinct((4,), 16), requires_grad=True)
    y = winograd4.conv3x3_4x4(x, w, b, padding=1)
    assert type(y._ctx).__name__ == 'Winograd4x4'
    np.testing.assert_allclose(y.data, naive_conv(x.data, w.data, b.data, 1, 1), rtol=0, atol=1e-10)
    assert tr.gradcheck(lambda x, w, b: winograd4.conv3x3_4x4(x, w, b, padding=1), [x, w, b])
    with pytest.raises(ValueError, match='conv3x3_4x4 expects'):
        winograd4.conv3x3_4x4(x, tr.Tensor(np.zeros((4, 3, 5, 5))))
