import json
import os

import numpy as np
import pytest

import tinyrcnn as tr
from tinyrcnn import boxes as bx
from tinyrcnn.data import VOCDetection, make_shapes_voc
from tinyrcnn.train import (TrainConfig, Trainer, expand_targets, load_model, make_minibatch,
                            prepare_roidb, sample_rois)


def jittered_proposals(ds, n=60, seed=0):
    """Cheap stand-in proposals: jittered ground-truth boxes plus random boxes."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(len(ds)):
        gt = ds.annotation(i)
        H, W = ds[i]['image'].shape[:2]
        g = np.repeat(gt['boxes'], 8, axis=0)
        wh = np.stack([g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]] * 2, axis=1)
        jit = g + rng.normal(0, 0.15, g.shape) * wh
        x1, y1 = rng.uniform(0, W - 20, n), rng.uniform(0, H - 20, n)
        rand = np.stack([x1, y1, x1 + rng.uniform(10, W / 2, n), y1 + rng.uniform(10, H / 2, n)], 1)
        out[gt['id']] = bx.clip_boxes(np.concatenate([jit, rand]), H, W).astype(np.float32)
    return out


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    root = make_shapes_voc(tmp_path_factory.mktemp('shapes'), 6, 2, seed=3)
    ds = VOCDetection(root, 'trainval')
    return ds, jittered_proposals(ds)


def small_cfg(**kw):
    base = dict(trunk='vgg-tiny', freeze_stages=0, scales=(96,), max_size=160, rois_per_batch=32,
                lr=0.01, iterations=6, step_size=100, checkpoint_every=1000, source='tiny')
    base.update(kw)
    return TrainConfig(**base)


def test_sampler_fraction_and_iou_ranges(shapes):
    ds, props = shapes
    cfg = TrainConfig()
    roidb = prepare_roidb(ds, props, cfg)
    rng = np.random.default_rng(0)
    for entry in roidb:
        keep, labels = sample_rois(entry, 64, cfg, rng)
        iou = entry['max_iou'][keep]
        fg = labels > 0
        assert fg.sum() <= 16                                   # 25% of 64
        assert (iou[fg] >= 0.5).all()
        assert ((iou[~fg] >= 0.1) & (iou[~fg] < 0.5)).all()
        assert len(np.unique(keep)) == len(keep)                # without replacement
        np.testing.assert_array_equal(labels[fg], entry['gt_labels'][entry['assignment'][keep[fg]]])
    # with plenty of candidates the fraction is exactly 25%
    entry = {'max_iou': np.r_[np.full(100, 0.8), np.full(300, 0.3)],
             'assignment': np.zeros(400, np.int64), 'gt_labels': np.array([2])}
    keep, labels = sample_rois(entry, 128, cfg, rng)
    assert (labels > 0).sum() == 32 and len(keep) == 128


def test_expand_targets_puts_four_numbers_in_the_class_columns():
    t = np.arange(8, dtype=np.float32).reshape(2, 4)
    full, w = expand_targets(t, np.array([2, 0]), num_classes=3)
    assert full.shape == (2, 16)
    np.testing.assert_array_equal(full[0, 8:12], t[0])
    assert full[0].sum() == t[0].sum() and full[1].sum() == 0
    np.testing.assert_array_equal(w[0], [0] * 8 + [1] * 4 + [0] * 4)
    assert w[1].sum() == 0


def test_minibatch_shapes_and_flipped_boxes_stay_valid(shapes):
    ds, props = shapes
    cfg = small_cfg(flip=True)
    roidb = prepare_roidb(ds, props, cfg)
    for seed in range(6):                      # flips happen with probability 0.5
        rng = np.random.default_rng(seed)
        images, rois, labels, targets, weights = make_minibatch(
            ds, roidb, [0, 1], cfg, ds.num_classes, np.zeros(4), np.ones(4), rng)
        N, _, H, W = images.shape
        assert N == 2 and rois.shape[1] == 5 and len(rois) <= 32
        assert set(np.unique(rois[:, 0])) <= {0.0, 1.0}
        assert (rois[:, 1] <= rois[:, 3]).all() and (rois[:, 2] <= rois[:, 4]).all()
        assert (rois[:, 1:] >= 0).all() and (rois[:, 3] < W).all() and (rois[:, 4] < H).all()
        assert targets.shape == weights.shape == (len(rois), 4 * (ds.num_classes + 1))


def test_a_few_iterations_lower_the_loss(shapes):
    ds, props = shapes
    trainer = Trainer(small_cfg(iterations=30, ims_per_batch=2), ds, props, out_dir=None)
    trainer.run(show_progress=False)
    losses = np.array([h[1] for h in trainer.history])
    assert np.isfinite(losses).all()
    assert losses[-5:].mean() < losses[:5].mean() * 0.85


def test_resume_after_interruption_matches_uninterrupted_run(shapes, tmp_path):
    ds, props = shapes
    cfg = small_cfg(iterations=6, checkpoint_every=3)
    full = Trainer(cfg, ds, props, str(tmp_path / 'a'))
    full.run(show_progress=False)

    class Killed(Exception):
        pass

    interrupted = Trainer(cfg, ds, props, str(tmp_path / 'b'))
    original_step = interrupted.step

    def dying_step():
        if interrupted.iteration == 4:          # dies after the checkpoint at 3, mid-run
            raise Killed
        return original_step()
    interrupted.step = dying_step
    with pytest.raises(Killed):
        interrupted.run(show_progress=False)
    resumed = Trainer(cfg, ds, props, str(tmp_path / 'b')).load_checkpoint()
    assert resumed.iteration == 3
    resumed.run(show_progress=False)
    for (name, p), (_, q) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    assert [h[1] for h in full.history] == [h[1] for h in resumed.history]
    assert os.path.exists(tmp_path / 'b' / 'loss.png')
    settings = json.loads((tmp_path / 'b' / 'settings.json').read_text())
    assert settings['iterations'] == 6


def test_export_folds_target_normalisation_into_bbox_pred(shapes, tmp_path):
    ds, props = shapes
    trainer = Trainer(small_cfg(iterations=2), ds, props, None)
    trainer.run(show_progress=False)
    trainer.means = np.array([0.01, -0.02, 0.03, 0.0], np.float32)
    trainer.stds = np.array([0.1, 0.1, 0.2, 0.2], np.float32)
    path = trainer.export(str(tmp_path / 'model'))
    model, info = load_model(path)
    assert info['class_names'] == list(ds.class_names)
    trainer.model.eval()
    x = tr.Tensor(np.random.default_rng(0).random((1, 3, 96, 128), dtype=np.float32))
    rois = np.array([[0, 4, 4, 60, 50], [0, 30, 10, 90, 80]], np.float32)
    with tr.no_grad():
        s0, d0 = trainer.model(x, rois)
        s1, d1 = model(x, rois)
    np.testing.assert_allclose(s1.data, s0.data, rtol=1e-5, atol=1e-6)
    K1 = ds.num_classes + 1
    raw = d0.data * np.tile(trainer.stds, K1) + np.tile(trainer.means, K1)
    np.testing.assert_allclose(d1.data, raw, rtol=1e-4, atol=1e-6)


def test_config_rejects_unknown_settings_and_missing_checkpoint(shapes, tmp_path):
    with pytest.raises(ValueError, match='unknown training settings'):
        TrainConfig.from_dict({'learning_rate': 0.1})
    ds, props = shapes
    with pytest.raises(FileNotFoundError, match='no checkpoint'):
        Trainer(small_cfg(), ds, props, str(tmp_path)).load_checkpoint()
    with pytest.raises(FileNotFoundError, match='model not found'):
        load_model(str(tmp_path / 'nothing'))


def test_threads_give_the_batched_gradient_and_the_same_result_every_time(tmp_path):
    # images of one size, so the batched blob has no padding: the per-image graphs on two
    # threads must then give the batched step's loss and gradients (up to float32 rounding)
    root = make_shapes_voc(tmp_path / 'same_size', 4, 0, seed=5, image_size=(80, 80))
    ds = VOCDetection(root, 'trainval')
    props = jittered_proposals(ds)
    grads, losses = {}, {}
    for threads in (1, 2):
        t = Trainer(small_cfg(threads=threads, scales=(80,), dropout=0.0), ds, props, None)
        assert t.parallel_images(2) == (threads == 2)
        losses[threads] = t.step()[1:]
        grads[threads] = {n: p.grad.copy() for n, p in t.model.trainable_parameters()}
    np.testing.assert_allclose(losses[2], losses[1], rtol=1e-5)
    for n in grads[1]:
        scale = np.abs(grads[1][n]).max() + 1e-12
        np.testing.assert_allclose(grads[2][n] / scale, grads[1][n] / scale, atol=2e-5, err_msg=n)
    # the sum runs in image order, so thread timing cannot change a single bit
    again = Trainer(small_cfg(threads=2, scales=(80,), dropout=0.0), ds, props, None)
    again.step()
    for n, p in again.model.trainable_parameters():
        np.testing.assert_array_equal(p.grad, grads[2][n])


def test_threads_fall_back_to_one_graph_with_dropout(shapes):
    ds, props = shapes
    t = Trainer(small_cfg(threads=2, dropout=0.5), ds, props, None)
    assert not t.parallel_images(2)            # shared dropout generator: stay sequential
    assert t.step()[1] > 0
