"""Selective search (tinyrcnn/proposals/selective_search.py): recall on real photographs with
hand-drawn boxes, hand-computed grouping on toy label images, output invariants, the cache."""
import importlib

import numpy as np
import pytest
from skimage import data
from skimage.transform import resize

from tinyrcnn.proposals import selective_search

ss = importlib.import_module('tinyrcnn.proposals.selective_search')   # the module, not the function


def _resized(image, height, width):
    return (resize(image, (height, width), anti_aliasing=True) * 255).round().astype(np.uint8)


def _iou(gt, boxes):
    """IoU of one (4,) box with (P, 4) boxes, inclusive pixel corners (+1 widths, as VOC)."""
    iw = np.minimum(gt[2], boxes[:, 2]) - np.maximum(gt[0], boxes[:, 0]) + 1
    ih = np.minimum(gt[3], boxes[:, 3]) - np.maximum(gt[1], boxes[:, 1]) + 1
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    return inter / (area(gt) + area(boxes) - inter)


# Photographs bundled with scikit-image (no download), boxes drawn by hand on the images
# (inclusive [x1, y1, x2, y2] in the pixels of the image as used here).
PHOTOS = {
    'astronaut': (lambda: data.astronaut(), [                     # 512 x 512
        [18, 15, 365, 511],      # the astronaut, hair to bottom edge
        [152, 15, 300, 172],     # her head
        [275, 345, 510, 511],    # the helmet, bottom right
        [355, 0, 475, 280],      # the space-shuttle model, top right
        [133, 355, 207, 430],    # the round mission patch
        [278, 345, 330, 385],    # the name tag
    ]),
    'coffee': (lambda: _resized(data.coffee(), 375, 562), [
        [160, 17, 383, 290],     # the cup with its handle
        [70, 68, 450, 365],      # the saucer
        [303, 62, 397, 305],     # the spoon
    ]),
    'chelsea': (lambda: data.chelsea(), [                          # 300 x 451
        [0, 0, 400, 299],        # the cat
        [133, 83, 203, 145],     # its left eye (image left)
        [298, 107, 343, 163],    # its right eye
        [232, 222, 290, 265],    # its nose
    ]),
    'rocket': (lambda: _resized(data.rocket(), 375, 562), [
        [270, 110, 308, 360],    # the rocket
        [0, 0, 78, 374],         # the left launch tower
        [490, 0, 561, 374],      # the right launch tower
        [150, 108, 185, 374],    # the inner left lightning mast
        [385, 108, 420, 374],    # the inner right lightning mast
        [235, 355, 340, 374],    # the launch platform
    ]),
    'motorcycle': (lambda: _resized(data.stereo_motorcycle()[0], 375, 541), [
        [68, 57, 498, 337],      # the motorcycle
        [88, 180, 208, 300],     # its rear wheel
        [372, 222, 494, 337],    # its front wheel
        [373, 93, 406, 140],     # its headlight
        [385, 18, 430, 62],      # the cardboard box on the top shelf
        [430, 50, 465, 75],      # the small box beside it
        [380, 135, 450, 190],    # the red crate behind the fork
    ]),
}


@pytest.fixture(scope='module')
def photo_proposals():
    out = {}
    for name, (load, gt) in PHOTOS.items():
        image = load()
        out[name] = (image, np.array(gt, dtype=np.float64), selective_search(image, 'fast', 2000))
    return out


def test_recall_on_photographs(photo_proposals):
    best = np.concatenate([[_iou(g, boxes).max() for g in gt]
                           for _, gt, boxes in photo_proposals.values()])
    recall = (best >= 0.5).mean()
    assert len(best) == 26 and recall >= 0.9, (recall, np.round(best, 2))
    # a stricter look: 2000 uniformly random boxes reach a mean best overlap of about 0.64 here
    assert best.mean() >= 0.78, best.mean()


def test_output_is_valid(photo_proposals):
    for image, _, boxes in photo_proposals.values():
        H, W = image.shape[:2]
        assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
        assert 500 <= len(boxes) <= 2000
        assert np.array_equal(boxes, np.round(boxes))                       # whole pixels
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= W - 1).all() and (boxes[:, 3] <= H - 1).all()
        assert (boxes[:, 2] - boxes[:, 0] + 1 >= 2).all() and (boxes[:, 3] - boxes[:, 1] + 1 >= 2).all()
        assert len(np.unique(boxes, axis=0)) == len(boxes)                   # no duplicates
        assert ([0, 0, W - 1, H - 1] == boxes).all(axis=1).any()             # the top of every hierarchy


def test_ranking_is_seeded_and_truncation_keeps_the_best():
    image = _resized(data.coffee(), 150, 225)
    a = selective_search(image, 'single')
    assert np.array_equal(a, selective_search(image, 'single', seed=0))
    b = selective_search(image, 'single', seed=1)
    assert not np.array_equal(a, b)                                          # the order is random ...
    assert np.array_equal(np.unique(a, axis=0), np.unique(b, axis=0))        # ... the set is not
    assert np.array_equal(selective_search(image, 'single', max_proposals=20), a[:20])


def test_scales_replace_the_modes_k_values(monkeypatch):
    # scales=(150, 300) is 'fast' with OpenCV's k: the same as a mode defined with them
    image = _resized(data.coffee(), 150, 225)
    spaces, _, measures = ss.MODES['fast']
    monkeypatch.setitem(ss.MODES, 'fast_k150', (spaces, (150, 300), measures))
    larger = selective_search(image, 'fast', scales=(150, 300))
    assert np.array_equal(larger, selective_search(image, 'fast_k150'))
    assert np.array_equal(selective_search(image, 'fast', scales=(50, 100)), selective_search(image, 'fast'))
    assert len(larger) < len(selective_search(image, 'fast'))       # larger k: fewer, larger segments


def test_flat_rectangles_are_found():
    image = np.full((120, 160, 3), 128, np.uint8)
    rects = [[10, 20, 49, 69], [80, 30, 139, 99], [100, 50, 119, 69]]   # red, blue, yellow inside blue
    for (x1, y1, x2, y2), rgb in zip(rects, [(220, 30, 30), (30, 40, 200), (240, 230, 40)]):
        image[y1:y2 + 1, x1:x2 + 1] = rgb
    boxes = selective_search(image, 'fast')
    for r in rects:
        assert _iou(np.array(r, float), boxes).max() >= 0.95, r


def test_initial_regions_match_direct_counts():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.repeat(rng.integers(0, 5, (4, 5)), 3, axis=0), 4, axis=1)   # (12, 20)
    labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)           # 0..n-1
    image = rng.integers(0, 256, (12, 20, 3)).astype(np.uint8)
    img = ss.colour_space(image, 'hsv')
    size, boxes, colour, texture, pairs = ss.initial_regions(labels, ss._colour_bins(img), ss._texture_bins(img))
    n = labels.max() + 1
    for r in range(n):
        ys, xs = np.nonzero(labels == r)
        assert size[r] == len(ys)
        assert boxes[r].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
        direct = np.concatenate([np.histogram(img[labels == r][:, c], 25, (0, 1))[0] for c in range(3)])
        np.testing.assert_allclose(colour[r], direct / direct.sum())
    np.testing.assert_allclose(texture.sum(axis=1), 1)
    assert texture.shape == (n, 3 * 8 * 10) and (texture >= 0).all()
    touching = {tuple(sorted((labels[y, x], labels[y + dy, x + dx])))
                for y in range(12) for x in range(20) for dy, dx in ((0, 1), (1, 0))
                if y + dy < 12 and x + dx < 20 and labels[y, x] != labels[y + dy, x + dx]}
    assert {tuple(p) for p in pairs.tolist()} == touching


def test_grouping_merges_the_most_similar_neighbours_first():
    # a 1 x 6 strip of regions 0 | 1 | 2 with sizes 3, 1, 2. With size similarity only, the
    # smallest neighbouring pair (1, 2) merges first, then 0 joins the new region 3.
    size = np.array([3., 1., 2.])
    boxes = np.array([[0, 0, 2, 0], [3, 0, 3, 0], [4, 0, 5, 0]], float)
    pairs = np.array([[0, 1], [1, 2]])
    hist = np.eye(3)
    out = ss.group(size, boxes, hist, hist, pairs, 'S', 6)
    assert out.tolist() == [[0, 0, 2, 0], [3, 0, 3, 0], [4, 0, 5, 0], [3, 0, 5, 0], [0, 0, 5, 0]]
    # regions 0 and 2 have identical colours but do not touch: colour similarity can only merge
    # a neighbouring pair, and all candidate pairs score 0, the tie going to the smaller index
    colour = np.array([[1., 0.], [0., 1.], [1., 0.]])
    out = ss.group(size, boxes, colour, colour, pairs, 'C', 6)
    assert out[3].tolist() == [0, 0, 3, 0] and out[4].tolist() == [0, 0, 5, 0]


def test_bad_input_raises():
    image = np.zeros((20, 30, 3), np.uint8)
    with pytest.raises(ValueError, match='mode'):
        selective_search(image, mode='slow')
    with pytest.raises(ValueError, match='uint8'):
        selective_search(image.astype(np.float32))
    with pytest.raises(ValueError, match='H, W, 3'):
        selective_search(image[..., 0])
    with pytest.raises(ValueError, match='max_proposals'):
        selective_search(image, max_proposals=0)
    for scales in ((), (0, 100), ('50',)):
        with pytest.raises(ValueError, match='scales must be positive'):
            selective_search(image, scales=scales)
