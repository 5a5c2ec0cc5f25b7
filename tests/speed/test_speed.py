"""tinyrcnn.speed: every CPU speed path against the reference it stands in for.

Bit for bit where the path only reorganises the work (threads, vectorisation, the 2x2 pool),
to float rounding where it sums in another order (Winograd: tests/speed/test_winograd.py;
dx as a full convolution; the linear layer's product orientation)."""
import numpy as np
import pytest

import tinyrcnn as tr
import tinyrcnn.functional as F
from tinyrcnn import backend, nn, speed
from tinyrcnn.kernels.cpu import compiler
from tinyrcnn.ops import conv, pool
from tinyrcnn.ops.roi_pool import _backward_numpy, _forward_numpy
from tinyrcnn.speed import layers
from tinyrcnn.speed import roi_pool as fast_roi
from tinyrcnn.speed.threads import blas_threads
from tinyrcnn.train.parts import backward_parts
from helpers import awkward_map, distinct, edge_rois


@pytest.fixture
def fast():
    with speed.enabled():
        yield


def test_enable_registers_every_hook_and_the_ops_pick_them():
    with speed.enabled(False):
        assert not speed.is_enabled() and backend.fast_cpu('conv2d', np.zeros(1)) is None
        y = F.relu(tr.Tensor(np.ones(3), requires_grad=True))
        assert type(y._ctx).__name__ == 'ReLU'
        with speed.enabled():
            assert speed.is_enabled()
            assert set(backend.fast_cpu_paths()) == {'conv2d', 'max_pool2d', 'relu', 'linear',
                                                     'roi_pool', 'backward_parts', 'felzenszwalb',
                                                     'nms', 'adam'}
            x = tr.Tensor(np.ones((1, 1, 4, 4)), requires_grad=True)
            assert type(F.relu(x)._ctx).__name__ == 'FastReLU'
            assert type(F.max_pool2d(x, 2)._ctx).__name__ == 'FastMaxPool2d'
            assert type(F.conv2d(x, x)._ctx).__name__ == 'FastConv2d'
            assert type(F.roi_pool(x, [[0, 0, 0, 3, 3]], 1, 1.0)._ctx).__name__ == 'FastRoIPool'
            assert backend.fast_cpu('conv2d', tr.Tensor(np.ones(1))) is not None
            assert backend.fast_cpu('conv2d', [1.0]) is None      # not a NumPy array: no path
        assert not speed.is_enabled()                               # the block restored it


def forward_backward(seed, shape=(2, 6, 60, 58)):
    """A little of everything: conv (stride 1, with K <= C on a large map: dx as a full
    convolution; stride 2: col2im), ReLU, 2x2 pool, linear."""
    rng = np.random.default_rng(seed)
    x = tr.Tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
    w = tr.Tensor(rng.standard_normal((4, 6, 3, 3)).astype(np.float32), requires_grad=True)
    b = tr.Tensor(rng.standard_normal(4).astype(np.float32), requires_grad=True)
    fc = tr.Tensor(rng.standard_normal((5, 4 * 14 * 14)).astype(np.float32), requires_grad=True)
    y = F.max_pool2d(F.relu(F.conv2d(x, w, b, padding=1)), 2)
    z = F.conv2d(y, w[:, :4], stride=2)                          # (2, 4, 14, 14)
    out = F.linear(z.reshape(2, -1), fc)
    out.backward(rng.standard_normal(out.shape).astype(np.float32))
    return [y.data, z.data, out.data, x.grad, w.grad, b.grad, fc.grad]


@pytest.mark.parametrize('seed', [0, 1])
def test_a_small_network_with_and_without_speed_agrees_to_float_rounding(seed):
    with speed.enabled(False):
        ref = forward_backward(seed)
    with speed.enabled():
        fast = forward_backward(seed)
    for a, r in zip(fast, ref):
        np.testing.assert_allclose(a, r, rtol=2e-5, atol=2e-5 * np.abs(r).max())


@pytest.mark.parametrize('C,K,padding', [(4, 3, 1), (3, 3, 0), (5, 2, 2)])
def test_conv2d_input_gradient_as_full_convolution_equals_col2im(C, K, padding, fast, monkeypatch):
    # on large maps with K <= C the speed path computes dx as a convolution of dy; in float64
    # it equals the reference's w^T dy + col2im to rounding
    rng = np.random.default_rng(1)
    x = tr.Tensor(rng.standard_normal((2, C, 55, 53)), requires_grad=True)
    w = tr.Tensor(rng.standard_normal((K, C, 3, 3)))
    y = F.conv2d(x, w, padding=padding)
    assert y.shape[2] * y.shape[3] >= 2500                       # the full-convolution branch
    gy = rng.standard_normal(y.shape)
    col2im = conv.col2im
    monkeypatch.setattr('tinyrcnn.speed.conv.FastConv2d.col2im', None)   # must not be needed
    y.backward(gy)
    gcols = np.einsum('kc,nkp->ncp', w.data.reshape(K, -1), gy.reshape(2, K, -1))
    np.testing.assert_allclose(x.grad, col2im(gcols, x.shape, 3, 3, 1, padding), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('stride,padding', [(1, 1), (2, 0), (1, 2)])
def test_conv2d_forward_in_bands_unfolds_no_more_than_a_band(stride, padding, fast, monkeypatch):
    """Above BAND_BYTES the forward pass unfolds a few output rows at a time (here 3 rows of
    columns) and backward unfolds again from x: the same values to rounding, and gradcheck."""
    from tinyrcnn.speed import conv as fast_conv
    rng = np.random.default_rng(2)
    x = tr.Tensor(rng.standard_normal((2, 3, 13, 11)), requires_grad=True)
    w = tr.Tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    b = tr.Tensor(rng.standard_normal(4), requires_grad=True)
    with speed.enabled(False):
        ref = F.conv2d(x, w, b, stride=stride, padding=padding)
    Wo = ref.shape[3]
    monkeypatch.setattr(fast_conv, 'BAND_BYTES', 3 * 27 * Wo * 8)
    unfolded = []
    full = fast_conv.FastConv2d.im2col
    monkeypatch.setattr(fast_conv.FastConv2d, 'im2col',
                        staticmethod(lambda *a: unfolded.append(a[0].shape) or full(*a)))
    y = F.conv2d(x, w, b, stride=stride, padding=padding)
    assert unfolded == [] and y._ctx.cols is None and y._ctx.x is x.data   # nothing unfolded whole
    np.testing.assert_allclose(y.data, ref.data, rtol=0, atol=1e-12)
    assert tr.gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=padding), [x, w, b])


def split_in_two(monkeypatch):
    """Every `threads.split_work` call cut in two halves on two threads, however small."""
    from tinyrcnn.speed import threads
    monkeypatch.setattr(threads, 'intra_op_threads', lambda: True)
    monkeypatch.setattr(threads, 'INTRA_OP_MIN_ELEMENTS', 0)


@pytest.mark.parametrize('compiled', [pytest.param(True, marks=pytest.mark.skipif(
    compiler() is None, reason='needs a C++ compiler (g++)')), False])
@pytest.mark.parametrize('split', [False, True])
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_max_pool2d_2x2_path_equals_the_reference(dtype, split, compiled, monkeypatch):
    if compiled:
        assert layers._compiled('max_pool_2x2', np.zeros(1, dtype)) is not None
    else:
        monkeypatch.setattr(layers, '_compiled', lambda name, x: None)   # NumPy's passes
    if split:
        split_in_two(monkeypatch)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, (2, 3, 7, 9)).astype(dtype)       # odd sides and many ties
    x[0, 0, 2:4, 4:6] = np.nan                                 # one window with a NaN ...
    Ho, Wo = 3, 4
    y_ref, argmax = pool._forward_cpu(x, 2, 2, Ho, Wo)
    assert layers._forward_2x2(x, Ho, Wo) is None              # ... sends it to the reference
    with speed.enabled():
        np.testing.assert_array_equal(F.max_pool2d(tr.Tensor(x), 2).data, y_ref)
    x = x[:, :, :, ::-1].copy()
    x[np.isnan(x)] = 1
    x[1, 2, 0, :4] = [-0.0, 0.0, 0.0, -0.0]                   # a tie of zeros: the first's sign
    x[1, 2, 1, :4] = -1
    y_ref, argmax = pool._forward_cpu(x, 2, 2, Ho, Wo)
    y, winner = layers._forward_2x2(x, Ho, Wo)
    np.testing.assert_array_equal(y, y_ref)
    assert np.array_equal(np.signbit(y), np.signbit(y_ref))
    assert np.signbit(y[1, 2, 0, :2]).tolist() == [True, False]
    gy = rng.standard_normal(y.shape).astype(dtype)
    gy[0, 1, 1, 1] = np.inf                                    # zero, not inf * 0, beside it
    gx = layers._backward_2x2(gy, winner, x.shape)
    np.testing.assert_array_equal(gx, pool._backward_cpu(gy, argmax, x.shape, False))
    assert np.isinf(gx).sum() == 1 and not np.isnan(gx).any()
    big = rng.standard_normal((2, 64, 40, 40)).astype(dtype)
    for x in (big, big[:, :, :, ::-1]):                        # strided: NumPy's forward
        y_ref, argmax = pool._forward_cpu(x, 2, 2, 20, 20)
        y, winner = layers._forward_2x2(x, 20, 20)
        np.testing.assert_array_equal(y, y_ref)
        gy = rng.standard_normal(y.shape).astype(dtype)
        np.testing.assert_array_equal(layers._backward_2x2(gy, winner, x.shape),
                                      pool._backward_cpu(gy, argmax, x.shape, False))
    big[1, 63, 39, 39] = np.nan                                # a NaN in the second half only
    assert layers._forward_2x2(big, 20, 20) is None


def test_relu_is_bit_for_bit_and_takes_strided_input():
    x = distinct((3, 5, 8, 8), 2, np.float32)
    x[0, 0, 0, :3] = [0.0, -0.0, np.nan]
    gy = distinct(x.shape, 3, np.float32)
    out = {}
    for on in (False, True):
        with speed.enabled(on):
            for name, a in (('contiguous', x), ('strided', x[:, :, ::2])):
                X = tr.Tensor(a, requires_grad=True)
                y = F.relu(X)
                y.backward(np.ascontiguousarray(gy[:, :, :a.shape[2]]))
                out[on, name] = y.data, X.grad
    for name in ('contiguous', 'strided'):
        for a, b in zip(out[True, name], out[False, name]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('N', [3, 200])
def test_linear_products_in_the_other_orientation_agree_to_rounding(N):
    rng = np.random.default_rng(4)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((N, 300), (40, 300), (40,)))
    gy = rng.standard_normal((N, 40)).astype(np.float32)
    out = {}
    for on in (False, True):
        with speed.enabled(on):
            X, Wt, B = (tr.Tensor(a, requires_grad=True) for a in (x, w, b))
            y = F.linear(X, Wt, B)
            y.backward(gy)
            out[on] = y.data, X.grad, Wt.grad, B.grad
    for a, r in zip(out[True], out[False]):
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5 * np.abs(r).max())


@pytest.mark.parametrize('split', [False, True])
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('forward', [pytest.param('compiled', marks=pytest.mark.skipif(
    compiler() is None, reason='needs a C++ compiler (g++)')), 'vectorised'])
def test_roi_pool_fast_paths_are_bit_for_bit(dtype, forward, split, monkeypatch):
    """Both forwards, and the backward (C++ where g++ builds it), against the reference."""
    fast = fast_roi.forward if forward == 'compiled' else fast_roi.forward_numpy
    if forward == 'compiled':
        assert fast_roi._compiled('roi_pool_forward', dtype) is not None
    if split:
        split_in_two(monkeypatch)                                 # RoIs, then channels, halved
    x = awkward_map(dtype)                                        # ties, -inf, NaN, -0.0
    rois = edge_rois(11, 14, 1 / 16, seed=12, R=40).astype(dtype)
    wide = np.random.default_rng(5).standard_normal((2, 64, 11, 14)).astype(dtype)  # two threads
    for x in (x, wide):
        for output_size in [(7, 7), (2, 5), (13, 11), (1, 1)]:
            y_ref, argmax_ref = _forward_numpy(x, rois, output_size, 1 / 16)
            y, argmax = fast(x, rois, output_size, 1 / 16)
            np.testing.assert_array_equal(argmax, argmax_ref)
            np.testing.assert_array_equal(y, y_ref)              # NaN == NaN here
            assert np.array_equal(np.signbit(y), np.signbit(y_ref))
            gy = np.random.default_rng(6).standard_normal(y.shape).astype(dtype)
            gx_ref = _backward_numpy(gy, argmax_ref, rois, x.shape)   # overlapping RoIs add up
            np.testing.assert_array_equal(fast_roi.backward(gy, argmax, rois, x.shape), gx_ref)


def test_roi_pool_maps_too_large_for_32_bit_pixel_indices_take_numpy(monkeypatch):
    x, rois = awkward_map(np.float32), edge_rois(11, 14, 1 / 16, R=5).astype(np.float32)
    monkeypatch.setattr(fast_roi, 'MAX_PIXELS', 11 * 14 - 1)     # as if H * W were 2**31
    taken = []
    monkeypatch.setattr(fast_roi, 'forward_numpy', lambda *a: taken.append(1) or _forward_numpy(*a))
    y, argmax = fast_roi.forward(x, rois, (2, 2), 1 / 16)
    assert taken == [1] and np.array_equal(argmax, _forward_numpy(x, rois, (2, 2), 1 / 16)[1])


def _net_and_parts(seed=0):
    tr.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    head = nn.Linear(4 * 4 * 4, 3)
    model = nn.Sequential(net, nn.Flatten(), head)
    model[0][0].bias.requires_grad = False                       # a frozen parameter
    rng = np.random.default_rng(seed)
    parts = [(rng.standard_normal((n, 3, 8, 8)).astype(np.float32), rng.integers(0, 3, n))
             for n in (2, 3, 1)]
    return model, parts


def _run(model, part):
    x, labels = part
    loss = F.cross_entropy(model(tr.Tensor(x)), labels)
    return [loss, loss * 2.0], len(labels) / 6


def test_backward_parts_on_threads_equals_the_sequential_loop_bit_for_bit():
    # the threads run their products on one BLAS thread each; so does the loop here (OpenBLAS
    # on two threads may split a product's sums differently, a last-bit difference)
    grads, values = {}, {}
    for on in (False, True):
        model, parts = _net_and_parts()
        model[2].weight.grad = np.ones_like(model[2].weight.data)   # stale: must be replaced
        with speed.enabled(on), blas_threads(1):
            values[on] = backward_parts(_run, parts, model, threads=2)
        grads[on] = [None if p.grad is None else p.grad.copy() for p in model.parameters()]
    assert values[True] == values[False]
    assert grads[True][1] is None                                  # the frozen bias
    for a, b in zip(grads[True], grads[False]):
        if a is not None:
            np.testing.assert_array_equal(a, b)
    model, parts = _net_and_parts()                                 # the replicas share arrays:
    before = [(p.data, p.data.copy()) for p in model.parameters()]  # the model's stay its own
    with speed.enabled():
        backward_parts(_run, parts, model, threads=2)
    for p, (array, values) in zip(model.parameters(), before):
        assert p.data is array
        np.testing.assert_array_equal(p.data, values)


def test_a_replica_has_its_own_modules_and_parameters_on_the_models_arrays():
    from tinyrcnn.speed.parts import replicate
    model, _ = _net_and_parts()
    model.alias, model.table = model[0][0], {'anchors': np.zeros(3)}   # a module reached twice
    model[2].weight.grad = np.ones_like(model[2].weight.data)
    replica = replicate(model)
    assert type(replica) is nn.Sequential and replica is not model
    assert replica[0] is not model[0] and replica[0][0] is not model[0][0]
    assert replica.alias is replica[0][0]                          # copied once, kept aliased
    assert replica.table is model.table                            # other attributes: shared
    for p, q in zip(model.parameters(), replica.parameters()):
        assert q is not p and q.data is p.data and q.grad is None
        assert q.requires_grad == p.requires_grad
    assert model[2].weight.grad is not None and not replica[0][0].bias.requires_grad
    replica[0][0].weight = nn.Parameter(np.zeros(1))                # the model is not touched
    assert model[0][0].weight.data.shape == (4, 3, 3, 3)


def test_two_parts_add_into_the_model_gradient_in_either_order_bit_for_bit():
    """With two parts each replica's gradient goes into the model's .grad as it arrives: the
    same floats as the sequential g0 + g1 whichever thread is first (part 0 is held back here
    so that part 1's arrives first)."""
    import time

    def late_first(model, part):
        if part[1] is first_labels:
            time.sleep(0.2)
        return _run(model, part)

    grads = {}
    for on in (False, True):
        model, parts = _net_and_parts(seed=3)
        parts = parts[:2]
        first_labels = parts[0][1]
        with speed.enabled(on), blas_threads(1):
            backward_parts(late_first, parts, model, threads=2)
        grads[on] = [p.grad for p in model.parameters()]
        assert all(type(p) is nn.Parameter for p in model.parameters())
    for a, b in zip(grads[True], grads[False]):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(compiler() is None, reason='needs a C++ compiler (g++)')
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('n,thresh,max_keep', [(600, 0.7, 300), (1000, 0.5, None), (700, 0.0, None),
                                               (300, 1.0, 5), (0, 0.7, None), (5, 0.7, 0)])
def test_compiled_nms_keeps_exactly_the_reference_boxes(dtype, n, thresh, max_keep):
    """Clustered boxes (many overlaps), tied scores, a degenerate box, a NaN coordinate,
    presorted or not: the compiled loop keeps the same indices in the same order."""
    from tinyrcnn.boxes import nms, random_clustered_boxes
    from tinyrcnn.speed.nms import compiled_nms
    assert compiled_nms(np.zeros((1, 4), dtype), np.ones(1, dtype), dtype(0.5)) is not None
    boxes, _ = random_clustered_boxes(n, num_objects=20, seed=n) if n else (np.zeros((0, 4)), None)
    boxes = boxes.astype(dtype)
    scores = np.round(np.random.default_rng(n).random(n), 2).astype(dtype)     # ties
    if n:
        boxes[3] = [10, 10, 8, 8]                 # w = h = -1: area 0 against inter 0 with itself
        boxes[-1, 0] = np.nan                     # NaN IoUs: NumPy's minimum/maximum propagate it
    for presorted in (False, True):
        s = np.sort(scores)[::-1].copy() if presorted else scores
        with speed.enabled(False):
            want = nms(boxes, s, thresh, max_keep=max_keep, presorted=presorted)
        with speed.enabled():
            got = nms(boxes, s, thresh, max_keep=max_keep, presorted=presorted)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
    assert n < 300 or 0 < len(want) < n


@pytest.mark.skipif(compiler() is None, reason='needs a C++ compiler (g++)')
@pytest.mark.parametrize('split', [False, True])
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_compiled_adam_takes_the_reference_steps_bit_for_bit(dtype, split, monkeypatch):
    """Five Adam steps with weight decay, from the same start: the same weights and moments
    with the one-pass update as with NumPy's dozen passes, a transposed gradient included;
    also with every parameter cut in two halves on two threads."""
    from tinyrcnn.optim import Adam
    from tinyrcnn.speed import threads
    from tinyrcnn.speed.adam import compiled_adam
    if split:
        monkeypatch.setattr(threads, 'intra_op_threads', lambda: True)
        monkeypatch.setattr(threads, 'INTRA_OP_MIN_ELEMENTS', 0)
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(s).astype(dtype) for s in [(64, 27), (64,), (5, 7)]]
    grads = [[rng.standard_normal(a.shape).astype(dtype) for a in start] for _ in range(5)]
    grads[2][0] = np.asfortranarray(grads[2][0])             # not C-contiguous: NumPy's passes
    runs = []
    for on in (False, True):
        params = [nn.Parameter(a.copy()) for a in start]
        opt = Adam(params, lr=0.01, weight_decay=1e-3)
        with speed.enabled(on):
            for g in grads:
                for p, gi in zip(params, g):
                    p.grad = gi
                opt.step()
        runs.append([p.data for p in params] + [opt.velocity[id(p)] for p in params]
                    + [opt.second[id(p)] for p in params])
    for numpy_, compiled in zip(*runs):
        np.testing.assert_array_equal(compiled, numpy_)
    a = np.zeros(3, dtype)
    assert compiled_adam(a, a, a, a, 0.1, 0.9, 0.999, 0.01, 1e-8, 1e-3)
    assert not compiled_adam(a, np.zeros(3, np.float16), a, a, 0.1, 0.9, 0.999, 0.01, 1e-8, 1e-3)
