"""Truncated SVD of the fc layers (tinyrcnn/fast_rcnn/svd.py, Sec. 3.1)."""
import numpy as np
import pytest

import tinyrcnn as tr
from tinyrcnn.fast_rcnn.network import FastRCNN
from tinyrcnn.vgg import VGG
from helpers import distinct


def tiny_fast_rcnn(num_classes=2):
    trunk = VGG((3, 'M', 4, 'M', 4, 'M'), num_classes=10, hidden=6, pool_size=2)
    return FastRCNN(trunk, num_classes, freeze_stages=0, roi_size=(2, 2), spatial_scale=1 / 4)


def test_truncated_svd_counts_and_accuracy():
    tr.manual_seed(2)
    model = tiny_fast_rcnn().to(dtype=np.float64).eval()
    x = tr.Tensor(distinct((1, 3, 12, 12), 3))
    rois = np.array([[0, 0, 0, 11, 11], [0, 2, 3, 9, 10]], np.float64)
    with tr.no_grad():
        before = model(x, rois)[0].numpy()
    fc6, fc7 = model.classifier[0], model.classifier[3]
    counts = model.compress(fc6_rank=min(fc6.weight.shape), fc7_rank=min(fc7.weight.shape))
    with tr.no_grad():
        after = model(x, rois)[0].numpy()
    np.testing.assert_allclose(after, before, atol=1e-10)       # full rank: the same function
    u, v = fc6.weight.shape
    t = min(u, v)
    assert counts['parameters_after'] - counts['parameters_before'] == (t * (u + v) - u * v) + (
        min(fc7.weight.shape) * sum(fc7.weight.shape) - fc7.weight.size)
    with pytest.raises(ValueError, match='already compressed'):
        model.compress()
    low = tiny_fast_rcnn().to(dtype=np.float64).eval()
    low.load_state_dict({k: v for k, v in tiny_fast_rcnn().state_dict().items()}, strict=False)
    with pytest.raises(ValueError, match='SVD rank'):
        low.compress(fc6_rank=10_000)
