"""The Faster R-CNN network (tinyrcnn/faster_rcnn/network.py): a FastRCNN with an RPN on its
trunk; detection with its own proposals (`fast_rcnn.detect` given none)."""
import numpy as np
import pytest

import tinyrcnn as tr
from tinyrcnn.fast_rcnn.detect import detect, im_detect
from tinyrcnn.faster_rcnn.network import FasterRCNN


def test_model_parts_and_inference_outputs():
    tr.manual_seed(0)
    model = FasterRCNN('vgg-tiny', 3, freeze_stages=0, anchor_scales=(2, 4)).eval()
    names = [n for n, _ in model.named_parameters()]
    assert {'features.0.weight', 'rpn.conv.weight', 'rpn.cls_score.bias', 'rpn.bbox_pred.weight',
            'cls_score.weight', 'bbox_pred.bias'} <= set(names)
    assert model.base_anchors.shape == (6, 4) and model.rpn_channels == 128   # the trunk's width
    assert model.rpn.cls_score.weight.shape == (12, 128, 1, 1)
    assert FasterRCNN('vgg-tiny', 3, rpn_channels=32).rpn.conv.weight.shape == (32, 128, 3, 3)
    image = tr.Tensor(np.random.default_rng(0).standard_normal((1, 3, 64, 96)).astype(np.float32))
    with tr.no_grad():
        proposals, cls_score, bbox_pred = model(image, (64, 96, 1.0))
    P = len(proposals)
    assert 0 < P <= model.settings['test_post_nms_top_n']
    assert cls_score.shape == (P, 4) and bbox_pred.shape == (P, 16)
    assert proposals[:, [0, 1]].min() >= 0 and proposals[:, 2].max() <= 95 and proposals[:, 3].max() <= 63
    with pytest.raises(ValueError):
        FasterRCNN('vgg-tiny', 3, rpn_pre_nms=5)


def test_detection_with_the_rpns_own_proposals():
    tr.manual_seed(0)
    model = FasterRCNN('vgg-tiny', 3, freeze_stages=0, anchor_scales=(2, 4)).train()
    image = np.random.default_rng(1).integers(0, 256, (80, 120, 3)).astype(np.uint8)
    scores, boxes, proposals = im_detect(model, image, None, scales=(96,), max_size=160, source='tiny')
    assert model.training                                   # eval inside, restored after
    P = len(proposals)
    assert 0 < P <= model.settings['test_post_nms_top_n']
    assert scores.shape == (P, 4) and boxes.shape == (P, 16) and proposals.dtype == np.float32
    np.testing.assert_allclose(scores.sum(axis=1), 1, rtol=1e-5)
    # in original pixels: clipped to the 96 x 144 input, divided by its factor 1.2
    assert proposals[:, 2].max() <= 143 / 1.2 + 1e-4 and proposals[:, 3].max() <= 95 / 1.2 + 1e-4
    # the same proposals given from outside give the same numbers (Fast R-CNN's path)
    s2, b2, _ = im_detect(model, image, proposals, scales=(96,), max_size=160, source='tiny',
                          dedup=False)
    np.testing.assert_allclose(s2, scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b2, boxes, rtol=1e-4, atol=1e-3)
    dets = detect(model, image, None, score_thresh=0.0, scales=(96,), max_size=160, source='tiny')
    assert len(dets['boxes']) == len(dets['scores']) <= 100 and (np.diff(dets['scores']) <= 0).all()
    with pytest.raises(ValueError, match='one scale'):
        im_detect(model, image, None, scales=(96, 128))
