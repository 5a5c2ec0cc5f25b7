"""Faster R-CNN's loss for one image (tinyrcnn/faster_rcnn/loss.py): both terms in joint
training, one at a time in the alternating steps, proposals treated as constants."""
import numpy as np
import pytest

import tinyrcnn as tr
from tinyrcnn.faster_rcnn.loss import faster_rcnn_losses
from tinyrcnn.faster_rcnn.network import FasterRCNN
from tinyrcnn.train import FasterTrainConfig

CFG = FasterTrainConfig(rpn_min_size=4)
GT = np.array([[8, 10, 47, 40], [50, 20, 90, 60]], np.float32)


def losses(stage='joint', proposals=None, seed=0):
    tr.manual_seed(0)
    model = FasterRCNN('vgg-tiny', 3, freeze_stages=0, anchor_scales=(1, 2, 4), rpn_min_size=4)
    image = tr.Tensor(np.random.default_rng(seed).standard_normal((1, 3, 64, 96)).astype(np.float32))
    out = faster_rcnn_losses(model.train(), image, (64, 96, 1.0), GT, [1, 3], CFG,
                             np.random.default_rng(seed), proposals, stage)
    return model, out


def test_joint_loss_is_the_sum_of_four_terms_and_reaches_every_part():
    model, out = losses()
    values = {k: v.item() for k, v in out.items()}
    assert all(v > 0 and np.isfinite(v) for v in values.values()), values
    assert np.isclose(values['loss'], values['rpn_cls'] + values['rpn_loc'] + values['cls']
                      + CFG.loss_lambda * values['loc'], rtol=1e-6)
    out['loss'].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and np.abs(p.grad).max() > 0, name


@pytest.mark.parametrize('stage, zero', [('rpn', ('cls', 'loc')), ('head', ('rpn_cls', 'rpn_loc'))])
def test_a_stage_keeps_only_its_part(stage, zero):
    model, out = losses(stage)
    assert all(out[k].item() == 0 for k in zero)
    assert all(out[k].item() > 0 for k in out if k not in zero)
    out['loss'].backward()
    untouched = 'rpn.' if stage == 'head' else ('cls_score', 'bbox_pred', 'classifier')
    for name, p in model.named_parameters():
        if name.startswith(untouched):
            assert p.grad is None or not p.grad.any(), name


def test_given_proposals_replace_the_rpns_and_bad_input_is_refused():
    _, out = losses('head', proposals=np.array([[0, 0, 40, 40], [45, 15, 95, 63]], np.float32))
    assert out['cls'].item() > 0
    with pytest.raises(ValueError, match='stage'):
        losses('both')
    model = FasterRCNN('vgg-tiny', 3)
    two = tr.Tensor(np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match='one image'):
        faster_rcnn_losses(model, two, (32, 32, 1.0), GT, [1, 3], CFG, np.random.default_rng(0))
