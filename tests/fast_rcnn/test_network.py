"""The Fast R-CNN network (tinyrcnn/fast_rcnn/network.py): the surgery on VGG (Sec. 2.2), the
initialisation of the new layers, gradients through trunk, RoI pooling and both heads, frozen
stages."""
import numpy as np
import pytest

import tinyrcnn as tr
from tinyrcnn import nn
from tinyrcnn.fast_rcnn.network import FastRCNN
from tinyrcnn.vgg import VGG
from helpers import distinct


def tiny_fast_rcnn(num_classes=2):
    trunk = VGG((3, 'M', 4, 'M', 4, 'M'), num_classes=10, hidden=6, pool_size=2)
    return FastRCNN(trunk, num_classes, freeze_stages=0, roi_size=(2, 2), spatial_scale=1 / 4)


def test_fast_rcnn_structure_and_init():
    tr.manual_seed(0)
    model = FastRCNN('vgg-tiny', num_classes=20)
    assert not any(isinstance(m, nn.MaxPool2d) for m in [model.features[-1]])
    assert model.cls_score.weight.shape == (21, 256) and model.bbox_pred.weight.shape == (84, 256)
    assert abs(model.cls_score.weight.data.std() - 0.01) < 0.002
    assert abs(model.bbox_pred.weight.data.std() - 0.001) < 0.0002
    assert (model.cls_score.bias.data == 0).all()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ['features.0.weight', 'features.0.bias', 'features.3.weight', 'features.3.bias']
    with pytest.raises(ValueError, match='unknown trunk'):
        FastRCNN('resnet', 3)


def test_fast_rcnn_gradcheck_through_trunk_roi_pool_and_both_heads():
    tr.manual_seed(1)
    model = tiny_fast_rcnn().to(dtype=np.float64).eval()
    x = tr.Tensor(distinct((2, 3, 12, 12), 1), requires_grad=True)
    rois = np.array([[0, 0, 0, 11, 11], [1, 2, 3, 9, 10], [0, 4, 0, 11, 7]], np.float64)

    def fn(x, *params):
        scores, deltas = model(x, rois)
        return tr.concat([scores, deltas], axis=1)
    assert tr.gradcheck(fn, [x] + model.parameters())


def test_frozen_stages_get_no_gradient():
    model = FastRCNN(VGG((3, 'M', 4, 'M', 4, 'M'), hidden=6, pool_size=2), 2, freeze_stages=1,
                     roi_size=(2, 2), spatial_scale=1 / 4)
    x = tr.Tensor(np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32))
    s, d = model(x, np.array([[0, 0, 0, 15, 15]], np.float32))
    (s.sum() + d.sum()).backward()
    assert model.features[0].weight.grad is None
    assert model.features[3].weight.grad is not None
