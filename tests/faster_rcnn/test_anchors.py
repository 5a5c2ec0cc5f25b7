"""Anchors (Faster R-CNN, Sec. 3.1.1): the released code's table and the (y, x, a) shift order."""
import numpy as np
import pytest

from tinyrcnn.faster_rcnn.anchors import generate_anchors, shift_anchors

# The 9 anchors of py-faster-rcnn's generate_anchors() (base 16, ratios 0.5/1/2, scales 8/16/32).
PY_FASTER_RCNN_ANCHORS = np.array([
    [-84., -40., 99., 55.],
    [-176., -88., 191., 103.],
    [-360., -184., 375., 199.],
    [-56., -56., 71., 71.],
    [-120., -120., 135., 135.],
    [-248., -248., 263., 263.],
    [-36., -80., 51., 95.],
    [-80., -168., 95., 183.],
    [-168., -344., 183., 359.]])


def test_default_anchors_are_the_released_table():
    a = generate_anchors()
    assert a.shape == (9, 4) and a.dtype == np.float32
    np.testing.assert_array_equal(a, PY_FASTER_RCNN_ANCHORS)


def test_anchor_geometry():
    a = generate_anchors(16, ratios=(0.5, 1, 2), scales=(2, 4, 8)).astype(np.float64)
    w, h = a[:, 2] - a[:, 0] + 1, a[:, 3] - a[:, 1] + 1
    np.testing.assert_allclose((a[:, 0] + a[:, 2]) / 2, 7.5)      # all centred on the first cell
    np.testing.assert_allclose((a[:, 1] + a[:, 3]) / 2, 7.5)
    # ratio 0.5: 23 x 12 cells (rounded), scaled; ratio 1: 16 x 16; ratio 2: 11 x 22
    np.testing.assert_array_equal(w, [46, 92, 184, 32, 64, 128, 22, 44, 88])
    np.testing.assert_array_equal(h, [24, 48, 96, 32, 64, 128, 44, 88, 176])
    np.testing.assert_array_equal(generate_anchors(16, (1,), (1,)), [[0, 0, 15, 15]])


def test_shift_order_is_y_x_a():
    base = generate_anchors(16, (0.5, 1, 2), (2, 4))          # A = 6
    A, H, W = len(base), 3, 5
    all_anchors = shift_anchors(base, H, W, stride=16)
    assert all_anchors.shape == (H * W * A, 4)
    for y in range(H):
        for x in range(W):
            for a in range(A):
                np.testing.assert_array_equal(all_anchors[(y * W + x) * A + a],
                                              base[a] + [16 * x, 16 * y, 16 * x, 16 * y])
    assert shift_anchors(base, 0, 4).shape == (0, 4)


@pytest.mark.parametrize('kwargs', [dict(ratios=()), dict(scales=(0, 1)), dict(base_size=0),
                                    dict(ratios=(-1,))])
def test_bad_anchor_settings(kwargs):
    with pytest.raises(ValueError):
        generate_anchors(**kwargs)
    with pytest.raises(ValueError):
        shift_anchors(np.zeros((3, 3)), 2, 2)
