"""COCO-format data (tinyrcnn/data/coco.py): the box, label and crowd conversions, the same items
as the VOC reader for the same data, one-line errors for broken files, and images with no
objects training as negatives in both models."""
import json

import numpy as np
import pytest

from tinyrcnn.data import COCODetection, VOCDetection, make_shapes_voc, write_coco_json
from tinyrcnn.fast_rcnn.minibatch import prepare_roidb, sample_rois
from tinyrcnn.faster_rcnn.anchor_targets import anchor_targets
from helpers import small_cfg


def write(tmp_path, data, name='ann.json'):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def small_coco(tmp_path):
    (tmp_path / 'img').mkdir(exist_ok=True)
    return dict(
        images=[dict(id=7, file_name='a.jpg', width=100, height=80),
                dict(id=3, file_name='b.jpg', width=50, height=50)],
        categories=[dict(id=5, name='dog'), dict(id=2, name='cat')],      # labels by id: cat, dog
        annotations=[dict(id=1, image_id=7, category_id=5, bbox=[10, 20, 30, 40], area=900.5, iscrowd=0),
                     dict(id=2, image_id=7, category_id=2, bbox=[90.5, 70, 30, 30], iscrowd=1),
                     dict(id=3, image_id=7, category_id=2, bbox=[5, 5, 0, 10]),     # no width
                     ])


def test_boxes_labels_and_crowds_convert_by_the_documented_rules(tmp_path):
    ds = COCODetection(tmp_path / 'img', write(tmp_path, small_coco(tmp_path)))
    assert ds.class_names == ('cat', 'dog') and ds.category_ids == [2, 5]
    assert ds.ids == ['7', '3'] and ds.image_ids == [7, 3] and len(ds) == 2 and ds.dropped == 1
    a = ds.annotation(0)
    np.testing.assert_array_equal(a['boxes'], [[10, 20, 39, 59],           # x + w - 1
                                               [90.5, 70, 99, 79]])        # clipped to 100 x 80
    assert a['labels'].tolist() == [2, 1] and a['iscrowd'].tolist() == [False, True]
    assert a['difficult'].tolist() == [False, True]                        # crowds: not trained on
    assert a['areas'].tolist() == [900.5, 900.0]                           # given, else w * h
    empty = ds.annotation(1)                                               # no objects: a negative
    assert empty['boxes'].shape == (0, 4) and empty['labels'].shape == (0,) and empty['id'] == '3'


def test_a_box_under_a_pixel_wide_is_one_pixel_as_in_py_faster_rcnn(tmp_path):
    data = small_coco(tmp_path)
    data['annotations'] = [dict(id=1, image_id=3, category_id=2, bbox=[10, 20, 0.6, 5])]
    ds = COCODetection(tmp_path / 'img', write(tmp_path, data))
    assert ds.dropped == 0 and ds.annotation(1)['boxes'].tolist() == [[10, 20, 10, 24]]


def test_the_same_items_as_the_voc_reader(tmp_path):
    voc = VOCDetection(make_shapes_voc(tmp_path / 'voc', 4, 0, seed=5), 'trainval')
    path = write_coco_json(voc, tmp_path / 'voc.json')
    coco = COCODetection(tmp_path / 'voc' / 'JPEGImages', path)
    assert coco.class_names == voc.class_names and len(coco) == len(voc)
    for i in range(len(voc)):
        a, b = voc[i], coco[i]
        for key in ('image', 'boxes', 'labels', 'difficult'):
            np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize('change, error', [
    (lambda d: '{"images": [', 'not JSON'),
    (lambda d: {'images': []}, 'expected a COCO object'),
    (lambda d: dict(d, categories=[]), 'no categories'),
    (lambda d: dict(d, categories=d['categories'] * 2), 'category id 5 is listed twice'),
    (lambda d: dict(d, images=d['images'] * 2), 'image id 7 is listed twice'),
    (lambda d: dict(d, annotations=[dict(d['annotations'][0], category_id=9)]), 'unknown category 9'),
    (lambda d: dict(d, annotations=[dict(d['annotations'][0], image_id=8)]), 'refers to image 8'),
    (lambda d: dict(d, annotations=[dict(d['annotations'][0], bbox=[1, 'a', 2, 3])]), 'finite number'),
    (lambda d: dict(d, annotations=[dict(d['annotations'][0], bbox=[1, 2, 3])]), 'bbox must be [x, y, w, h]'),
    (lambda d: dict(d, annotations=[{'bbox': [1, 2, 3, 4]}]), 'needs "image_id"'),
    (lambda d: dict(d, images=[{'id': 'x', 'file_name': 'a.jpg'}]), 'image 0 needs an integer "id"'),
    (lambda d: dict(d, annotations=[dict(d['annotations'][0], image_id=[7])]), 'refers to image [7]'),
    (lambda d: dict(d, annotations=[dict(d['annotations'][0], category_id=True)]), 'unknown category True'),
    (lambda d: dict(d, categories=[dict(id=True, name='x')]), 'category 0 needs an integer "id"'),
    (lambda d: dict(d, annotations=[dict(d['annotations'][0], iscrowd='0')]), 'iscrowd must be 0 or 1'),
])
def test_broken_files_are_one_error_naming_the_entry(tmp_path, change, error):
    data = change(small_coco(tmp_path))
    path = tmp_path / 'bad.json'
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(ValueError) as info:
        COCODetection(tmp_path / 'img', path)
    assert error in str(info.value) and str(path) in str(info.value) and '\n' not in str(info.value)


def test_missing_files_and_folders_name_themselves(tmp_path):
    path = write(tmp_path, small_coco(tmp_path))
    with pytest.raises(FileNotFoundError, match='image folder not found'):
        COCODetection(tmp_path / 'nowhere', path)
    with pytest.raises(FileNotFoundError, match='annotation file not found'):
        COCODetection(tmp_path / 'img', tmp_path / 'none.json')
    with pytest.raises(FileNotFoundError, match=r'a\.jpg: image file not found \(image id 7'):
        COCODetection(tmp_path / 'img', path)[0]


def test_images_without_objects_train_as_negatives(tmp_path):
    """Fast R-CNN: every proposal of an empty image is background (the [0.1, 0.5) rule needs
    objects); Faster R-CNN: every anchor inside the image may be sampled as negative."""
    data = small_coco(tmp_path)
    ds = COCODetection(tmp_path / 'img', write(tmp_path, data))
    cfg = small_cfg(rois_per_batch=16)
    rng = np.random.default_rng(0)
    far = np.array([[0, 0, 9, 9], [40, 0, 49, 9], [0, 40, 9, 49], [20, 20, 45, 45]], np.float32)
    roidb = prepare_roidb(ds, {'7': far, '3': far}, cfg)
    negative = [e for e in roidb if e['id'] == '3']
    assert len(negative) == 1 and negative[0]['gt_boxes'].shape == (0, 4)
    keep, labels = sample_rois(negative[0], 8, cfg, rng)
    assert sorted(keep.tolist()) == [0, 1, 2, 3] and not labels.any()
    anchors = np.array([[0, 0, 15, 15], [10, 10, 40, 40], [-8, -8, 20, 20]], np.float32)
    labels, targets = anchor_targets(anchors, np.zeros((0, 4)), (50, 50), rng)
    assert labels.tolist() == [0, 0, -1] and not targets.any()         # the border anchor: ignored
