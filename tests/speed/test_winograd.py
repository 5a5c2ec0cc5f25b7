"""The Winograd F(2x2, 3x3) path of conv2d (tinyrcnn/speed/winograd.py): same numbers as the
naive loop and as im2col, same gradients, and taken exactly where `use_winograd` says."""
import numpy as np
import pytest

import tinyrcnn as tr
import tinyrcnn.functional as F
from tinyrcnn import speed
from tinyrcnn.ops import conv
from tinyrcnn.kernels.cpu import compiler
from tinyrcnn.speed import threads, winograd
from helpers import assert_bits_equal, distinct, naive_conv, signed_zeros


@pytest.fixture
def calls(monkeypatch):
    """The speed paths on, Winograd for every 3x3 stride-1 conv; counts the forward passes
    that took it."""
    monkeypatch.setattr(winograd, 'WINOGRAD_MIN_CHANNELS', 1)
    monkeypatch.setattr(winograd, 'WINOGRAD_MIN_PIXELS', 1)
    seen = []
    forward = winograd.forward

    def counting(*args):
        seen.append(args[0].shape)
        return forward(*args)
    monkeypatch.setattr(winograd, 'forward', counting)
    with speed.enabled():
        yield seen


@pytest.mark.parametrize('shape,K,padding', [
    ((2, 3, 7, 6), 4, 1),          # batch > 1, odd output height (7): a cropped row of tiles
    ((1, 2, 9, 8), 3, 0),          # no padding, odd width of the output
    ((3, 2, 4, 5), 5, 2),          # padding 2: tiles over the padding only
    ((1, 1, 3, 3), 2, 0),          # a single output pixel
])
def test_winograd_matches_naive_loop(calls, shape, K, padding):
    x, w, b = distinct(shape, 1), distinct((K, shape[1], 3, 3), 2), distinct((K,), 3)
    y = F.conv2d(tr.Tensor(x), tr.Tensor(w), tr.Tensor(b), padding=padding)
    assert calls == [shape]
    np.testing.assert_allclose(y.data, naive_conv(x, w, b, 1, padding), rtol=0, atol=1e-10)


@pytest.mark.parametrize('shape,K,padding,bias', [
    ((2, 3, 5, 6), 4, 1, True),
    ((1, 2, 7, 5), 3, 0, False),
    ((1, 2, 4, 4), 2, 2, True),
])
def test_winograd_gradcheck(calls, shape, K, padding, bias):
    x = tr.Tensor(distinct(shape, 4), requires_grad=True)
    w = tr.Tensor(distinct((K, shape[1], 3, 3), 5), requires_grad=True)
    b = tr.Tensor(distinct((K,), 6), requires_grad=True) if bias else None
    inputs = [x, w] + ([b] if bias else [])
    assert tr.gradcheck(lambda x, w, *b: F.conv2d(x, w, b[0] if b else None, 1, padding), inputs)
    assert calls


def test_winograd_recomputes_the_tiles_when_they_are_too_big(calls, monkeypatch):
    monkeypatch.setattr(conv, 'KEEP_COLS_BYTES', 0)
    x = tr.Tensor(distinct((2, 2, 5, 5), 7), requires_grad=True)
    w = tr.Tensor(distinct((3, 2, 3, 3), 8), requires_grad=True)
    assert tr.gradcheck(lambda x, w: F.conv2d(x, w, None, 1, 1), [x, w])
    assert calls


def test_winograd_skips_gradients_nobody_needs(calls):
    x = tr.Tensor(distinct((1, 2, 6, 6), 9))
    w = tr.Tensor(distinct((3, 2, 3, 3), 10), requires_grad=True)
    F.conv2d(x, w, padding=1).sum().backward()
    assert x.grad is None and w.grad.shape == (3, 2, 3, 3)
    x.requires_grad, w.requires_grad, w.grad = True, False, None
    F.conv2d(x, w, padding=1).sum().backward()
    assert w.grad is None and x.grad.shape == (1, 2, 6, 6)


def _forward_backward(x, w, b, gy):
    X, Wt, B = (tr.Tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.conv2d(X, Wt, B, padding=1)
    y.backward(gy)
    return [y.data, X.grad, Wt.grad, B.grad]


def test_float32_winograd_is_as_close_to_float64_as_im2col(monkeypatch):
    """A VGG16-sized layer (128 channels, 28x28: Winograd by default). F(2x2, 3x3)'s
    coefficients (0, +-1, 1/2) keep its float32 rounding within a few times im2col's."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 128, 28, 28))
    w, b = rng.standard_normal((128, 128, 3, 3)) * 0.05, rng.standard_normal(128)
    gy = rng.standard_normal((1, 128, 28, 28))
    assert winograd.use_winograd(x.shape, w.shape, 1, np.float32)
    exact = _forward_backward(x, w, b, gy)                   # float64: the reference
    f32 = [a.astype(np.float32) for a in (x, w, b, gy)]
    with speed.enabled():
        fast = _forward_backward(*f32)
    slow = _forward_backward(*f32)                           # the reference: im2col
    for e, a, s in zip(exact, fast, slow):
        assert a.dtype == np.float32
        err_fast = np.abs(a - e).max() / np.abs(e).max()
        err_slow = np.abs(s - e).max() / np.abs(e).max()
        assert err_fast < 1e-5 and err_fast < 10 * err_slow + 1e-7


def test_use_winograd_takes_every_vgg16_layer_but_the_first_and_the_14x14_ones():
    from tinyrcnn.vgg import VGG16_CFG
    chosen, C, size = [], 3, 224
    for v in VGG16_CFG:
        if v == 'M':
            size //= 2
            continue
        chosen.append(winograd.use_winograd((1, C, size, size), (v, C, 3, 3), 1, np.float32))
        C = v
    #        conv1_1 1_2   2_1   2_2   3_1   3_2   3_3   4_1   4_2   4_3   5_1    5_2    5_3
    assert chosen == [False, True, True, True, True, True, True, True, True, True, False, False,
                      False]
    assert not winograd.use_winograd((1, 256, 56, 56), (256, 256, 3, 3), 2, np.float32)
    assert not winograd.use_winograd((1, 256, 56, 56), (256, 256, 5, 5), 1, np.float32)
    assert not winograd.use_winograd((1, 256, 56, 56), (256, 256, 3, 3), 1, np.int64)
    # per image: a batch of 14x14 maps stays on im2col, as each of its images would
    assert not winograd.use_winograd((4, 512, 14, 14), (512, 512, 3, 3), 1, np.float32)
    # too big to hold whole: VGG16's conv1_2 on a 600x800 image (494 MB of tiles); conv2_2 fits
    assert not winograd.use_winograd((1, 64, 600, 800), (64, 64, 3, 3), 1, np.float32)
    assert winograd.use_winograd((1, 128, 300, 400), (128, 128, 3, 3), 1, np.float32)
    assert winograd.use_winograd((2, 128, 300, 400), (128, 128, 3, 3), 1, np.float32)  # per image


@pytest.mark.parametrize('shape', [(2, 3, 288, 384), (1, 3, 288, 480), (32, 3, 64, 64)])
def test_the_cpu_demos_network_takes_winograd_after_its_first_layer(shape):
    """vgg-tiny in a demo training step (2 images), at detection (1) and in crop pretraining
    (32 crops of 64 per thread): im2col for the RGB layer, Winograd for every other layer with
    784 pixels or more per image."""
    from tinyrcnn.vgg import VGG_TINY_CFG
    N, C, H, W = shape
    chosen, want = [], []
    for v in VGG_TINY_CFG:
        if v == 'M':
            H, W = H // 2, W // 2
            continue
        chosen.append(winograd.use_winograd((N, C, H, W), (v, C, 3, 3), 1, np.float32))
        want.append(C > 3 and H * W >= 28 * 28)
        C = v
    assert chosen == want and chosen[1]


needs_compiler = pytest.mark.skipif(compiler() is None, reason='needs a C++ compiler (g++)')


@needs_compiler
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('N,C,K,H,W,padding', [
    (2, 3, 4, 7, 6, 1),            # odd output height: a cropped row of tiles
    (1, 2, 3, 9, 8, 0),            # no padding, odd output width
    (3, 2, 5, 4, 5, 2),            # tiles over the padding only
    (1, 4, 4, 1, 1, 1),            # one pixel
    (1, 16, 24, 30, 34, 1),        # more rows of tiles than one cache line of columns
])
def test_the_compiled_transforms_equal_numpys_bit_for_bit(monkeypatch, dtype, N, C, K, H, W, padding):
    """winograd.cpp against the NumPy transforms it replaces: the same additions in the same
    order, so equal arrays, forward (with and without bias) and both adjoints."""
    rng = np.random.default_rng(C * H + W)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in [(N, C, H, W), (K, C, 3, 3), (K,)])
    geo = winograd.Geometry(x.shape, padding)
    gy = rng.standard_normal((N, K, geo.Ho, geo.Wo)).astype(dtype)
    signed_zeros(x, 1), signed_zeros(gy, 2), signed_zeros(b, 3)    # the signs of zero sums
    U = winograd.filter_transform(w)
    results = []
    for compiled in (False, True):
        monkeypatch.setattr(winograd, 'NATIVE', compiled)
        assert (winograd._native('input', x) is not None) == compiled
        V = winograd.input_transform(x, geo)
        M = threads.matmul_stack(U, V)
        gM = winograd.output_transform_adjoint(gy, geo)
        gV = threads.matmul_stack(U.transpose(0, 2, 1), gM)
        results.append([V, winograd.output_transform(M.copy(), geo, b), winograd.output_transform(M, geo),
                        gM, winograd.input_transform_adjoint(gV, geo)])
    for numpy_, compiled in zip(*results):
        assert_bits_equal(compiled, numpy_)


@needs_compiler
def test_transforms_that_do_not_compile_warn_once_and_numpy_takes_over(tmp_path, monkeypatch):
    from tinyrcnn.speed import native
    (tmp_path / 'winograd.cpp').write_text('this is not C++\n')
    monkeypatch.setattr(native, '_HERE', str(tmp_path))
    monkeypatch.setattr(native, '_LIBRARIES', {})
    x = distinct((1, 16, 6, 5), 21, np.float32)
    with pytest.warns(RuntimeWarning, match='winograd speed path is off'):
        assert winograd._native('input', x) is None
    geo = winograd.Geometry(x.shape, 1)
    got = winograd.input_transform(x, geo)                 # no second warning: None is kept
    monkeypatch.setattr(winograd, 'NATIVE', False)
    np.testing.assert_array_equal(got, winograd.input_transform(x, geo))


def test_winograd_keeps_no_recomputed_tiles_and_mixed_dtypes_take_im2col(calls, monkeypatch):
    monkeypatch.setattr(conv, 'KEEP_COLS_BYTES', 0)
    x = tr.Tensor(distinct((1, 2, 6, 6), 11), requires_grad=True)
    w = tr.Tensor(distinct((3, 2, 3, 3), 12), requires_grad=True)
    y = F.conv2d(x, w, padding=1)
    y.sum().backward(retain_graph=True)
    assert calls and y._ctx.saved is None          # backward's tiles were not kept on the graph
    y32 = F.conv2d(tr.Tensor(distinct((1, 2, 6, 6), 13, np.float32)), w, padding=1)
    assert len(calls) == 1                         # float32 x with float64 w: im2col, as before
    assert y32.dtype == np.float32


def test_conv3x3_is_winograd_at_any_size_and_passes_gradcheck():
    x = tr.Tensor(distinct((2, 3, 5, 6), 14), requires_grad=True)
    w = tr.Tensor(distinct((4, 3, 3, 3), 15), requires_grad=True)
    b = tr.Tensor(distinct((4,), 16), requires_grad=True)
    y = winograd.conv3x3(x, w, b, padding=1)
    assert type(y._ctx).__name__ == 'Winograd3x3'
    np.testing.assert_allclose(y.data, naive_conv(x.data, w.data, b.data, 1, 1), rtol=0, atol=1e-10)
    assert tr.gradcheck(lambda x, w, b: winograd.conv3x3(x, w, b, padding=1), [x, w, b])
    with pytest.raises(ValueError, match='3, 3'):
        winograd.conv3x3(x, tr.Tensor(np.zeros((4, 3, 5, 5))))


@pytest.mark.parametrize('N,C,K,H', [(2, 16, 32, 40), (3, 24, 16, 29)])
def test_an_image_in_a_batch_gets_the_bits_it_gets_alone(N, C, K, H):
    """One product per image (`per_image`), as the reference's one GEMM per image: BLAS rounds
    a column by its place in a wider product, and a batch would differ from its images by an
    ulp, which flips ties of a max pool downstream (the per-image training threads)."""
    rng = np.random.default_rng(H)
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    w = rng.standard_normal((K, C, 3, 3)).astype(np.float32)
    b, gy = rng.standard_normal(K).astype(np.float32), rng.standard_normal((N, K, H, H)).astype(np.float32)
    assert winograd.use_winograd(x.shape, w.shape, 1, np.float32)
    with speed.enabled(), threads.blas_threads(1):
        batch = _forward_backward(x, w, b, gy)
        alone = [_forward_backward(x[n:n + 1], w, b, gy[n:n + 1]) for n in range(N)]
    for n in range(N):
        np.testing.assert_array_equal(batch[0][n], alone[n][0][0])         # y
        np.testing.assert_array_equal(batch[1][n], alone[n][1][0])         # dx
