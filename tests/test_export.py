"""A trained detector on disk (tinyrcnn/export.py): one export and one load for both networks,
keyed by the architecture; the target normalisation folded into bbox_pred."""
import json

import numpy as np
import pytest

import tinyrcnn as tr
from tinyrcnn.export import export_model, load_model
from tinyrcnn.fast_rcnn.network import FastRCNN
from tinyrcnn.faster_rcnn.network import FasterRCNN
from tinyrcnn.train import FasterTrainConfig, TrainConfig

NAMES = ('circle', 'square', 'triangle')
MEANS = np.array([0.01, -0.02, 0.03, 0.0], np.float32)
STDS = np.array([0.1, 0.1, 0.2, 0.2], np.float32)
SETTINGS = dict(trunk='vgg-tiny', source='tiny', scales=(96,), max_size=160, freeze_stages=0)


def test_fast_rcnn_round_trip_predicts_raw_offsets(tmp_path):
    tr.manual_seed(0)
    trained = FastRCNN('vgg-tiny', len(NAMES), freeze_stages=0)
    path = export_model(trained, str(tmp_path / 'model'), NAMES, MEANS, STDS, TrainConfig(**SETTINGS))
    assert path == str(tmp_path / 'model.npz')
    model, info = load_model(str(tmp_path / 'model.json'))          # any of the three names
    assert type(model) is FastRCNN and not model.training
    assert info['architecture'] == 'fast_rcnn' and info['class_names'] == list(NAMES)
    assert info['scales'] == [96] and info['source'] == 'tiny'
    x = tr.Tensor(np.random.default_rng(0).random((1, 3, 96, 128), dtype=np.float32))
    rois = np.array([[0, 4, 4, 60, 50], [0, 30, 10, 90, 80]], np.float32)
    with tr.no_grad():
        s0, d0 = trained.eval()(x, rois)
        s1, d1 = model(x, rois)
    np.testing.assert_allclose(s1.data, s0.data, rtol=1e-5, atol=1e-6)
    raw = d0.data * np.tile(STDS, len(NAMES) + 1) + np.tile(MEANS, len(NAMES) + 1)
    np.testing.assert_allclose(d1.data, raw, rtol=1e-4, atol=1e-6)


def test_faster_rcnn_round_trip_keeps_anchors_and_proposal_settings(tmp_path):
    tr.manual_seed(1)
    cfg = FasterTrainConfig(**SETTINGS, anchor_scales=(1, 2, 4), rpn_channels=32,
                            test_post_nms_top_n=50, schedule='alternating')
    trained = FasterRCNN('vgg-tiny', len(NAMES), 0, **cfg.model_settings())
    export_model(trained, tmp_path / 'faster', NAMES, MEANS, STDS, cfg)
    model, info = load_model(tmp_path / 'faster.npz')
    assert type(model) is FasterRCNN and info['architecture'] == 'faster_rcnn'
    assert info['anchor_scales'] == [1, 2, 4] and info['schedule'] == 'alternating'
    assert model.settings == trained.settings and model.rpn_channels == 32
    x = tr.Tensor(np.random.default_rng(0).standard_normal((1, 3, 96, 128)).astype(np.float32))
    with tr.no_grad():
        p0, c0, b0 = trained.eval()(x, (96, 128, 1.0))
        p1, c1, b1 = model(x, (96, 128, 1.0))
    np.testing.assert_array_equal(p0, p1)                          # the RPN is unchanged
    np.testing.assert_allclose(c1.numpy(), c0.numpy(), rtol=1e-5, atol=1e-6)
    raw = b0.numpy() * np.tile(STDS, len(NAMES) + 1) + np.tile(MEANS, len(NAMES) + 1)
    np.testing.assert_allclose(b1.numpy(), raw, rtol=1e-4, atol=1e-6)


def test_a_faster_model_exported_with_fast_settings_records_joint_training(tmp_path):
    tr.manual_seed(2)
    export_model(FasterRCNN('vgg-tiny', 1, 0), tmp_path / 'f', ['a'], MEANS, STDS, TrainConfig(**SETTINGS))
    assert load_model(tmp_path / 'f')[1]['schedule'] == 'joint'


def test_what_is_not_a_saved_model_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='model not found'):
        load_model(str(tmp_path / 'nothing'))
    tr.manual_seed(0)
    export_model(FastRCNN('vgg-tiny', 1, 0), tmp_path / 'm', ['a'], MEANS, STDS, TrainConfig(**SETTINGS))
    info = json.loads((tmp_path / 'm.json').read_text())
    (tmp_path / 'm.json').write_text('{not json')
    with pytest.raises(ValueError, match='not JSON'):
        load_model(tmp_path / 'm')
    for change, message in [({'architecture': 'yolo'}, "architecture='yolo': expected one of"),
                            ({'trunk': 3}, "trunk=3: expected one of 'vgg16', 'vgg-tiny'"),
                            ({'scales': 'big'}, "scales='big': expected a non-empty list"),
                            ({'num_classes': 2}, 'class_names'), ({'roi_size': [7]}, 'roi_size'),
                            ({'spatial_scale': -1}, 'spatial_scale=-1: expected a number > 0')]:
        (tmp_path / 'm.json').write_text(json.dumps(dict(info, **change)))
        with pytest.raises(ValueError, match=message):
            load_model(tmp_path / 'm')
    (tmp_path / 'm.json').write_text(json.dumps({k: v for k, v in info.items() if k != 'source'}))
    with pytest.raises(ValueError, match="'source' is missing"):
        load_model(tmp_path / 'm')
    (tmp_path / 'm.json').write_text('[1, 2]')
    with pytest.raises(ValueError, match='JSON object'):
        load_model(tmp_path / 'm')
