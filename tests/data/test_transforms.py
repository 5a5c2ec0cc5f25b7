"""Fast R-CNN input transforms: rescale, flip, normalisation, pyramid, blob."""
import numpy as np
import pytest

from tinyrcnn.data.transforms import (PREPROCESS, preprocess, deprocess, rescale, hflip,
                                      image_pyramid, im_list_to_blob)


def test_rescale_shorter_side_to_scale():
    image = np.full((375, 500, 3), 77, np.uint8)
    boxes = np.array([[0, 0, 499, 374], [10, 20, 30, 40]], np.float32)
    out, out_boxes, factor = rescale(image, boxes, scale=600, max_size=1000)
    assert factor == pytest.approx(1.6)
    assert out.shape == (600, 800, 3) and out.dtype == np.uint8
    assert (out == 77).all()  # a constant image stays constant (no ringing, no rounding drift)
    np.testing.assert_allclose(out_boxes, boxes * 1.6, rtol=1e-6)
    assert out_boxes.dtype == np.float32


def test_rescale_limited_by_max_size():
    image = np.zeros((100, 1000, 3), np.uint8)
    out, _, factor = rescale(image, None, scale=600, max_size=1000)
    assert factor == 1.0 and out.shape == (100, 1000, 3)  # min(600/100, 1000/1000)
    out, boxes, factor = rescale(np.zeros((100, 2000, 3), np.float32), [[0, 0, 1999, 99]], 600, 1000)
    assert factor == 0.5 and out.shape == (50, 1000, 3) and out.dtype == np.float32
    np.testing.assert_allclose(boxes, [[0, 0, 999.5, 49.5]])


def test_rescale_is_bilinear():
    """Doubling a horizontal ramp keeps it a ramp: interior pixels interpolate their neighbours."""
    ramp = np.tile(np.arange(0, 200, 20, dtype=np.float32)[None, :, None], (4, 1, 3))  # (4, 10, 3)
    out, _, _ = rescale(ramp, None, scale=8, max_size=100)
    assert out.shape == (8, 20, 3)
    np.testing.assert_allclose(np.diff(out[0, 1:-1, 0]), 10.0, atol=1e-4)


def test_hflip_boxes_at_edges():
    W = 100
    image = np.zeros((80, W, 3), np.uint8)
    boxes = np.array([[0, 2, 9, 5], [90, 0, 99, 79], [0, 0, 99, 79], [40, 10, 41, 11]], np.uint16)
    flipped, fboxes = hflip(image, boxes)
    assert fboxes.dtype == np.float32  # uint16 wrapped W - 1 - x2 to 65535 in the original code
    np.testing.assert_array_equal(fboxes, [[90, 2, 99, 5], [0, 0, 9, 79], [0, 0, 99, 79], [58, 10, 59, 11]])
    assert (fboxes[:, 0] >= 0).all() and (fboxes[:, 2] <= W - 1).all()
    assert (fboxes[:, 2] >= fboxes[:, 0]).all()


def test_hflip_moves_pixels_with_boxes_and_is_an_involution():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 200, (30, 40, 3), dtype=np.uint8)
    box = np.array([[0, 5, 6, 12]], np.float32)
    image[5:13, 0:7] = 255  # paint the box
    flipped, fbox = hflip(image, box)
    x1, y1, x2, y2 = fbox[0].astype(int)
    assert (flipped[y1:y2 + 1, x1:x2 + 1] == 255).all()
    assert (flipped == 255).all(-1).sum() == 8 * 7  # nothing else painted
    back, bbox = hflip(flipped, fbox)
    np.testing.assert_array_equal(back, image)
    np.testing.assert_array_equal(bbox, box)
    assert hflip(image)[1] is None


def test_preprocess_values_both_sources():
    image = np.array([[[255, 128, 0]]], np.uint8)  # one RGB pixel, (1, 1, 3)
    x = preprocess(image, 'torchvision')
    assert x.shape == (3, 1, 1) and x.dtype == np.float32
    expected = [(1 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (0 - 0.406) / 0.225]
    np.testing.assert_allclose(x[:, 0, 0], expected, rtol=1e-5)
    x = preprocess(image, 'caffe')  # BGR, 0..255, means in BGR order
    np.testing.assert_allclose(x[:, 0, 0], [0 - 102.9801, 128 - 115.9465, 255 - 122.7717], rtol=1e-5)
    np.testing.assert_array_equal(preprocess(image, 'tiny'), preprocess(image, 'torchvision'))
    assert set(PREPROCESS) >= {'torchvision', 'caffe'}
    with pytest.raises(ValueError, match='caffe'):
        preprocess(image, 'nope')
    with pytest.raises(ValueError, match=r'\(H, W, 3\)'):
        preprocess(np.zeros((3, 4, 4), np.uint8))


@pytest.mark.parametrize('source', ['torchvision', 'caffe'])
def test_deprocess_inverts_preprocess(source):
    image = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    x = preprocess(image, source)
    assert x.shape == (3, 5, 7)
    np.testing.assert_array_equal(deprocess(x, source), image)


def test_image_pyramid_scales():
    image = np.zeros((75, 100, 3), np.uint8)
    pyramid = image_pyramid(image, scales=(150, 300, 600), max_size=500)
    assert [im.shape for im, _ in pyramid] == [(150, 200, 3), (300, 400, 3), (375, 500, 3)]
    assert [f for _, f in pyramid] == [2.0, 4.0, 5.0]  # the last one limited by max_size


def test_im_list_to_blob_pads_bottom_right():
    a = np.arange(18, dtype=np.float32).reshape(3, 2, 3) + 1
    b = np.arange(12, dtype=np.float32).reshape(3, 4, 1) + 100
    blob = im_list_to_blob([a, b])
    assert blob.shape == (2, 3, 4, 3) and blob.dtype == np.float32
    np.testing.assert_array_equal(blob[0, :, :2, :3], a)
    np.testing.assert_array_equal(blob[1, :, :4, :1], b)
    assert (blob[0, :, 2:, :] == 0).all() and (blob[1, :, :, 1:] == 0).all()
    with pytest.raises(ValueError):
        im_list_to_blob([])
    with pytest.raises(ValueError, match='C=3'):
        im_list_to_blob([a, np.zeros((1, 2, 2), np.float32)])


@pytest.mark.parametrize('shape,size', [((40, 50, 3), (31, 77)), ((7, 9), (3, 20)), ((5, 6, 3), (5, 6))])
def test_resize_bilinear_equals_skimage(shape, size):
    import skimage.transform
    from tinyrcnn.data.transforms import resize_bilinear
    image = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    ref = skimage.transform.resize(image, size, order=1, mode='edge', anti_aliasing=False,
                                   preserve_range=True)
    out = resize_bilinear(image, size)
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-3)
