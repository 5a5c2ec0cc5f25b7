"""The synthetic shapes set: VOC layout, loadable, deterministic, sensible annotations."""
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from tinyrcnn.data.shapes import (SHAPES_CLASSES, MIN_VISIBLE, DIFFICULT_OCCLUDED, make_shapes_voc,
                                  render_shapes_image, _mask, _shape_parts)
from tinyrcnn.data.voc import VOCDetection


@pytest.fixture(scope='module')
def shapes_root(tmp_path_factory):
    return make_shapes_voc(tmp_path_factory.mktemp('shapes') / 'voc', num_train=30, num_test=10, seed=0)


def _files(root):
    out = {}
    for folder, _, names in os.walk(root):
        for n in names:
            path = os.path.join(folder, n)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def test_layout(shapes_root):
    root = shapes_root
    assert isinstance(root, str)
    split = {s: open(os.path.join(root, 'ImageSets', 'Main', s + '.txt')).read().split()
             for s in ('train', 'val', 'trainval', 'test')}
    assert len(split['trainval']) == 30 and len(split['test']) == 10
    assert split['train'] + split['val'] == split['trainval'] and len(split['val']) == 6
    assert not set(split['trainval']) & set(split['test'])
    for i in split['trainval'] + split['test']:
        assert os.path.exists(os.path.join(root, 'JPEGImages', i + '.jpg'))
        assert os.path.exists(os.path.join(root, 'Annotations', i + '.xml'))
    assert open(os.path.join(root, 'classes.txt')).read().split() == list(SHAPES_CLASSES)
    # the devkit's tags, 1-based inclusive pixel coordinates inside 1..W, 1..H
    xml = ET.parse(os.path.join(root, 'Annotations', split['test'][0] + '.xml')).getroot()
    W, H = int(xml.findtext('size/width')), int(xml.findtext('size/height'))
    assert xml.findtext('filename') == split['test'][0] + '.jpg' and xml.findtext('size/depth') == '3'
    for obj in xml.findall('object'):
        assert obj.findtext('name') in SHAPES_CLASSES and obj.findtext('difficult') in ('0', '1')
        assert obj.findtext('truncated') in ('0', '1')
        x1, y1, x2, y2 = (int(obj.findtext('bndbox/' + t)) for t in ('xmin', 'ymin', 'xmax', 'ymax'))
        assert 1 <= x1 <= x2 <= W and 1 <= y1 <= y2 <= H


def test_loadable_and_varied(shapes_root):
    ds = VOCDetection(shapes_root, 'trainval')
    assert ds.class_names == SHAPES_CLASSES and ds.num_classes == 6
    sizes, labels, difficult, truncated, counts = set(), [], [], [], []
    for i in range(len(ds)):
        s = ds[i]
        H, W, _ = s['image'].shape
        assert 160 <= H <= 256 and 160 <= W <= 256 and s['image'].dtype == np.uint8
        b = s['boxes']
        assert (b[:, :2] >= 0).all() and (b[:, 2] <= W - 1).all() and (b[:, 3] <= H - 1).all()
        w, h = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
        assert (np.maximum(w, h) >= 0.05 * min(H, W)).all() and (np.maximum(w, h) <= min(H, W)).all()
        sizes.add((H, W))
        counts.append(len(b))
        labels += list(s['labels'])
        difficult += list(s['difficult'])
        truncated += list(s['truncated'])
    assert len(sizes) > 20  # varied aspect ratios
    assert min(counts) >= 1 and max(counts) <= 4 and len(set(counts)) >= 3
    assert set(labels) == set(range(1, 7))  # every class appears in 30 images
    assert 0 < np.mean(difficult) < 0.4 and 0 < np.mean(truncated) < 0.5


def test_deterministic(shapes_root, tmp_path):
    again = make_shapes_voc(tmp_path / 'again', num_train=30, num_test=10, seed=0)
    assert _files(again) == _files(shapes_root)  # same bytes, images and annotations
    other = make_shapes_voc(tmp_path / 'other', num_train=3, num_test=0, seed=1)
    a, b = _files(other), _files(shapes_root)
    assert a['JPEGImages/000001.jpg'] != b['JPEGImages/000001.jpg']
    # only the test split: the very same test files, no training images
    test_only = _files(make_shapes_voc(tmp_path / 'test_only', 30, 10, seed=0, only_test=True))
    expected = {k: v for k, v in b.items() if k.startswith(('JPEGImages/', 'Annotations/'))
                and int(k.split('/')[1][:6]) > 30}
    assert {k: v for k, v in test_only.items() if k in expected} == expected
    assert not any(k in test_only for k in b if k.endswith('000001.jpg'))
    assert test_only['ImageSets/Main/test.txt'] == b['ImageSets/Main/test.txt']
    assert test_only['ImageSets/Main/trainval.txt'] == b''


def test_boxes_bound_the_visible_pixels():
    """VOC boxes bound what is visible: each box is the tight box of the pixels its object shows,
    and objects marked difficult are small or hidden by more than half."""
    occluded = []
    for i in range(12):
        image, objects, owner = render_shapes_image(np.random.default_rng([7, i]), 150, 190)
        assert image.shape == (150, 190, 3) and owner.shape == (150, 190)
        assert len(objects) == owner.max() + 1 and (owner == -1).any()
        for k, o in enumerate(objects):
            rr, cc = np.nonzero(owner == k)
            assert o['box'] == (cc.min(), rr.min(), cc.max(), rr.max())
            w, h = o['box'][2] - o['box'][0] + 1, o['box'][3] - o['box'][1] + 1
            if not o['difficult'] and not o['truncated']:
                assert max(w, h) >= 0.13 * 150
            assert o['occluded'] <= 1 - MIN_VISIBLE + 1e-9
            assert o['difficult'] or o['occluded'] <= DIFFICULT_OCCLUDED
            occluded.append(o['occluded'])
    assert max(occluded) > 0.1  # shapes do overlap


def test_shape_masks():
    """Rasterised geometry: a circle of radius 10 covers the
    19 pixels strictly inside it; one cut by the border
    reports the pixels it lost (truncated); the ring has a hole."""
    parts = _shape_parts('circle', 50, 40, 10, 0.0)
    m, full = _mask(parts, 50, 40, (100, 120))
    rr, cc = np.nonzero(m)
    assert (cc.min(), cc.max(), rr.min(), rr.max()) == (41, 59, 31, 49) and full == m.sum()
    m, full = _mask(_shape_parts('circle', 0, 40, 10, 0.0), 0, 40, (100, 120))
    assert np.nonzero(m)[1].max() == 9 and full > m.sum() > 0.4 * full
    m, _ = _mask(_shape_parts('ring', 50, 40, 10, 0.0), 50, 40, (100, 120))
    assert not m[40, 50] and m[40, 59]
    with pytest.raises(ValueError, match='circle'):
        _shape_parts('hexagon', 0, 0, 1, 0)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='image_size'):
        make_shapes_voc(tmp_path, 1, 1, image_size=(10, 5))
    with pytest.raises(ValueError, match='num_train'):
        make_shapes_voc(tmp_path, -1, 1)
