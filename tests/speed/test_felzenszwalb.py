"""The Felzenszwalb speed path (speed/felzenszwalb.py): the same label images as scikit-image's
felzenszwalb for every k from one sort, and selective search the same with and without it."""
import numpy as np
import pytest

from tinyrcnn import speed
from tinyrcnn.data.shapes import render_shapes_image
from tinyrcnn.kernels.cpu import compiler
from tinyrcnn.proposals import selective_search
from tinyrcnn.proposals.selective_search import SIGMA, colour_space
from tinyrcnn.speed.felzenszwalb import segment_scales, sorted_edges

needs_compiler = pytest.mark.skipif(compiler() is None, reason='needs a C++ compiler (g++)')


def photo(seed, H=97, W=131):
    """A rendered shapes image with noise: many segments, ties among the edge weights."""
    rng = np.random.default_rng(seed)
    image, _, _ = render_shapes_image(rng, H, W)
    noisy = image.astype(np.int64) + rng.integers(-12, 13, image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


@needs_compiler
@pytest.mark.parametrize('space', ['hsv', 'lab', 'rgi', 'h', 'i'])
@pytest.mark.parametrize('seed', [0, 1])
def test_the_same_segments_as_scikit_image_for_every_k(space, seed):
    from skimage.segmentation import felzenszwalb
    img = colour_space(photo(seed), space)
    scales = (50, 100, 150, 300)
    got = segment_scales(img, scales, SIGMA)
    for k, labels in zip(scales, got):
        want = felzenszwalb(img, scale=k, sigma=SIGMA, min_size=k, channel_axis=-1)
        np.testing.assert_array_equal(labels, want, err_msg=f'{space} k={k}')
    assert got[0].max() > got[-1].max() > 0            # larger k, fewer segments


@needs_compiler
def test_a_flat_image_and_a_min_size_larger_than_it():
    from skimage.segmentation import felzenszwalb
    flat = np.full((9, 12, 3), 0.5)
    ramp = np.linspace(0, 1, 3 * 40 * 30).reshape(40, 30, 3)
    for img in (flat, ramp):
        got = segment_scales(img, (50, 2000), SIGMA)
        for k, labels in zip((50, 2000), got):
            np.testing.assert_array_equal(
                labels, felzenszwalb(img, scale=k, sigma=SIGMA, min_size=k, channel_axis=-1))
    assert got[1].max() == 0                           # min_size above the pixel count: one segment


def test_sorted_edges_are_the_8_connected_graph_in_increasing_weight():
    img = colour_space(photo(2, 7, 9), 'lab')
    edges, costs = sorted_edges(img, SIGMA)
    assert edges.shape == (4 * 7 * 9 - 3 * 7 - 3 * 9 + 2, 2) and costs.shape == (len(edges),)
    assert np.all(np.diff(costs) >= 0)
    r, c = np.divmod(edges, 9)
    assert np.all(np.abs(r[:, 0] - r[:, 1]) <= 1) and np.all(np.abs(c[:, 0] - c[:, 1]) <= 1)
    assert len({tuple(sorted(e)) for e in edges.tolist()}) == len(edges)


@needs_compiler
@pytest.mark.parametrize('mode', ['single', 'fast'])
def test_selective_search_boxes_are_the_same_with_the_speed_path(mode):
    image = photo(3, 120, 160)
    assert segment_scales(colour_space(image, 'hsv'), (50,), SIGMA) is not None   # the path runs
    with speed.enabled(False):
        want = selective_search(image, mode)
    with speed.enabled():
        got = selective_search(image, mode)
    np.testing.assert_array_equal(got, want)
    assert len(got) > 5


@needs_compiler
def test_a_loop_that_does_not_compile_warns_once_and_leaves_the_reference(tmp_path, monkeypatch):
    from tinyrcnn.speed import native
    broken = tmp_path / 'felzenszwalb.cpp'
    broken.write_text('this is not C++\n')
    monkeypatch.setattr(native, '_HERE', str(tmp_path))
    monkeypatch.setattr(native, '_LIBRARIES', {})
    image = photo(4, 40, 50)
    with pytest.warns(RuntimeWarning, match='felzenszwalb speed path is off'):
        assert segment_scales(colour_space(image, 'hsv'), (50,), SIGMA) is None
    with speed.enabled():
        got = selective_search(image, 'single')          # no second warning: the answer is kept
    with speed.enabled(False):
        np.testing.assert_array_equal(got, selective_search(image, 'single'))
