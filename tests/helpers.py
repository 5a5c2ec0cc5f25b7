"""Helpers shared by the tests: inputs without ties, the GPU mark, plain-loop references, small
fixtures. Importable from every test folder (pyproject: pythonpath = tests)."""
import os

import numpy as np
import pytest

import tinyrcnn as tr

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures')

# The GPU tests run on the real CuPy and GPU where there is one and on the strict CuPy stand-in
# everywhere else (fixture cuda_device, tests/cupy_standin/switch.py): never skipped for want of one.
# Marked `gpu` too, so that `pytest -m gpu` (the first step of `python -m tinyrcnn gpu-check`)
# runs exactly these on a lent GPU.
def gpu(test):
    return pytest.mark.gpu(pytest.mark.usefixtures('cuda_device')(test))


def distinct(shape, seed=0, dtype=np.float64, scale=1.0):
    """Values that are all different (a shuffled ramp plus jitter), so max-pooling has no ties."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    ramp = rng.permutation(n).astype(np.float64) / n
    return ((ramp + 0.1 * rng.random(n) / n - 0.5) * scale).reshape(shape).astype(dtype)


def naive_conv(x, w, b, stride, padding):
    """Convolution by four nested loops: the definition, in float64."""
    N, C, H, W = x.shape
    K, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    Ho, Wo = (H + 2 * padding - kh) // stride + 1, (W + 2 * padding - kw) // stride + 1
    y = np.zeros((N, K, Ho, Wo))
    for n in range(N):
        for k in range(K):
            for i in range(Ho):
                for j in range(Wo):
                    patch = xp[n, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
                    y[n, k, i, j] = (patch * w[k]).sum() + (b[k] if b is not None else 0)
    return y


def fixture_vgg():
    """The architecture of tests/fixtures/vgg_tiny_*.pth (see make_fixtures.py)."""
    return tr.models.VGG((4, 4, 'M', 8, 'M'), num_classes=5, hidden=16, pool_size=2)


def jittered_proposals(ds, n=60, seed=0):
    """Cheap stand-in proposals: jittered ground-truth boxes plus random boxes."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(len(ds)):
        gt = ds.annotation(i)
        H, W = ds[i]['image'].shape[:2]
        g = np.repeat(gt['boxes'], 8, axis=0)
        wh = np.stack([g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]] * 2, axis=1)
        jit = g + rng.normal(0, 0.15, g.shape) * wh
        x1, y1 = rng.uniform(0, W - 20, n), rng.uniform(0, H - 20, n)
        rand = np.stack([x1, y1, x1 + rng.uniform(10, W / 2, n), y1 + rng.uniform(10, H / 2, n)], 1)
        out[gt['id']] = tr.boxes.clip_boxes(np.concatenate([jit, rand]), H, W).astype(np.float32)
    return out


def edge_rois(H, W, scale, N=2, seed=0, R=24):
    """Random RoIs plus the awkward ones, in image pixels (map size H x W times 1/scale)."""
    s = 1 / scale
    special = [[0, 5 * s, 5 * s, 2 * s, 2 * s],                     # degenerate: x2 < x1
               [1, 0, 0, (W - 1) * s, (H - 1) * s],                  # the whole map
               [0, 3 * s, 2 * s, 3 * s, 2 * s],                      # a single pixel
               [1, -4 * s, -3 * s, 2 * s, 1 * s],                    # hangs over the top-left
               [0, (W - 2) * s, (H - 3) * s, (W + 5) * s, (H + 2) * s],  # over the bottom-right
               [1, (W + 2) * s, 0, (W + 9) * s, 4 * s],              # wholly outside: all empty
               [0, -0.5 * s, -0.5 * s, 2.5 * s, 1.5 * s],            # corners on halves
               [0, 0.5 * s, 1.5 * s, 3.5 * s, 2.5 * s],
               [1, 0, 1 * s, 3 * s, 7 * s]]         # 7 rows: in 13 bins float32 adds a row
    special += [special[1], special[3]]                               # overlapping duplicates
    rois = tr.boxes.random_rois(R, N, H * s, W * s, seed=seed, min_size=1).astype(np.float64)
    rois[:, 1:] += np.random.default_rng(seed).uniform(-2 * s, 2 * s, (R, 4))  # some go outside
    return np.concatenate([np.array(special, np.float64), rois])


def expected(npz_name):
    """The arrays of a fixture .npz (what PyTorch gave), by name."""
    with np.load(os.path.join(FIXTURES, npz_name)) as npz:
        return {k: npz[k] for k in npz.files}


def assert_same(got, want):
    """Same keys in the same order, same dtypes and shapes, bit-identical values."""
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert got[k].shape == want[k].shape, k
        assert np.array_equal(got[k], want[k]), k


def assert_bits_equal(got, want):
    """Same shape and dtype and the same bytes: -0.0 is not 0.0, a NaN's payload counts."""
    assert got.shape == want.shape and got.dtype == want.dtype
    unsigned = np.dtype(f'u{want.dtype.itemsize}')
    np.testing.assert_array_equal(np.ascontiguousarray(got).view(unsigned),
                                  np.ascontiguousarray(want).view(unsigned))


def signed_zeros(a, seed):
    """a with a seventh of its entries set to 0.0 and another seventh to -0.0 (in place)."""
    where = np.random.default_rng(seed).integers(0, 7, a.shape)
    a[where == 0], a[where == 1] = 0.0, -0.0
    return a


def one_line_error(path, exc=ValueError):
    """The message of the `exc` that load_weights(path) raises: one line naming the file."""
    with pytest.raises(exc) as info:
        tr.weights.load_weights(path)
    msg = str(info.value)
    assert '\n' not in msg and str(path) in msg
    return msg


def awkward_map(dtype, seed=11):
    """A (2, 5, 11, 14) feature map with what a max must get right: ties, a block of -inf (a bin
    of -inf still has a winner), NaNs (they win, as in np.max), -0.0 beside 0.0 (they tie)."""
    x = np.random.default_rng(seed).standard_normal((2, 5, 11, 14)).astype(dtype)
    x[0, 1] = np.round(x[0, 1])
    x[1, 2, 3:6, 4:9] = -np.inf
    x[1, 3, 2, 5] = x[0, 4, 7, 1] = np.nan
    x[0, 0, :4] = -0.0
    x[0, 0, 4:8] = 0.0
    return x


def shapes_set(root, num_train=6, num_test=2, seed=3):
    """A small synthetic training set and cheap proposals for it: (VOCDetection, proposals)."""
    from tinyrcnn.data import VOCDetection, make_shapes_voc
    ds = VOCDetection(make_shapes_voc(root, num_train, num_test, seed=seed), 'trainval')
    return ds, jittered_proposals(ds)


def small_cfg(**kw):
    """Fast R-CNN settings for a few seconds of training on vgg-tiny."""
    base = dict(trunk='vgg-tiny', freeze_stages=0, scales=(96,), max_size=160, rois_per_batch=32,
                lr=0.01, iterations=6, step_size=100, checkpoint_every=1000, source='tiny')
    base.update(kw)
    return tr.train.TrainConfig(**base)
