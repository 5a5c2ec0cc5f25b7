"""Faster R-CNN: the model, proposal targets, training (joint and 4-step), resume, export, detect."""
import json
import os

import numpy as np
import pytest

import tinyrcnn as tr
from tinyrcnn import boxes as bx
from tinyrcnn.data import VOCDetection, make_shapes_voc
from tinyrcnn.models.faster_rcnn import FasterRCNN, detect, proposal_targets
from tinyrcnn.train_faster import FasterTrainConfig, FasterTrainer, load_faster_model

TINY = dict(trunk='vgg-tiny', freeze_stages=0, scales=(96,), max_size=160, lr=0.01,
            source='tiny', anchor_scales=(1, 2, 4), rpn_min_size=4, checkpoint_every=1000)


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    root = make_shapes_voc(tmp_path_factory.mktemp('shapes'), 4, 2)
    return VOCDetection(root, 'trainval'), VOCDetection(root, 'test')


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


def test_proposal_targets():
    cfg = FasterTrainConfig()
    gt = np.array([[10, 10, 49, 49], [60, 20, 99, 79]], np.float32)
    labels_gt = np.array([2, 5])
    # no proposals at all: the ground truth itself is the foreground
    rois, labels, targets, weights = proposal_targets(np.zeros((0, 4)), gt, labels_gt, 6, cfg,
                                                      np.random.default_rng(0))
    np.testing.assert_array_equal(rois, gt)
    assert labels.tolist() == [2, 5] and not targets.any() and weights.sum() == 8
    # many proposals: at most 25% of 128 foreground, the rest background at IoU [0, 0.5)
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 80, (500, 2))
    props = np.hstack([xy, xy + rng.uniform(10, 60, (500, 2))]).astype(np.float32)
    rois, labels, targets, weights = proposal_targets(props, gt, labels_gt, 6, cfg, rng)
    iou = bx.box_iou(rois, gt).max(axis=1)
    fg = labels > 0
    assert len(rois) == 128 and 0 < fg.sum() <= 32
    assert (iou[fg] >= 0.5).all() and (iou[~fg] < 0.5).all()
    # targets: encode / (0.1, 0.1, 0.2, 0.2) in the columns of the RoI's class
    r = int(np.flatnonzero(fg)[0])
    g = gt[bx.box_iou(rois[r:r + 1], gt).argmax()]
    c = 4 * labels[r]
    np.testing.assert_allclose(targets[r, c:c + 4],
                               bx.encode(rois[r:r + 1], g[None])[0] / [0.1, 0.1, 0.2, 0.2], rtol=1e-5)
    assert weights[r].sum() == 4 and weights[r, c:c + 4].all() and not weights[~fg].any()


def _fixed_loss(trainer):
    """Mean losses over the training images with fixed sampling and dropout masks."""
    from tinyrcnn.data.transforms import rescale
    total = np.zeros(5)
    for i, e in enumerate(trainer.roidb):
        tr.manual_seed(100 + i)
        image, gt, factor = rescale(trainer.dataset[e['index']]['image'], e['gt_boxes'], 96, 160)
        with tr.no_grad():
            losses = trainer.model(trainer._blob(image), (*image.shape[:2], factor), gt,
                                   e['gt_labels'], trainer.cfg, np.random.default_rng(i))
        total += [losses[k].item() for k in ('loss', 'rpn_cls', 'rpn_loc', 'cls', 'loc')]
    return total / len(trainer.roidb)


def test_joint_training_lowers_the_loss(shapes):
    train_set, _ = shapes
    cfg = FasterTrainConfig(**TINY, iterations=16, step_size=1000)
    trainer = FasterTrainer(cfg, train_set, None)
    before = _fixed_loss(trainer)
    history = trainer.run(show_progress=False)
    after = _fixed_loss(trainer)
    assert len(history) == 16 and len(history[0]) == 6 and np.isfinite(np.array(history)).all()
    assert after[0] < 0.7 * before[0], (before, after)        # the summed loss ...
    assert after[1] < 0.9 * before[1], (before, after)        # ... and the RPN's objectness


@pytest.mark.parametrize('schedule, total, stop', [('joint', 6, 3), ('alternating', 12, 5)])
def test_resume_matches_uninterrupted_run(shapes, tmp_path, schedule, total, stop):
    train_set, _ = shapes
    cfg = FasterTrainConfig(**TINY, iterations=total, step_size=4, schedule=schedule)
    whole = FasterTrainer(cfg, train_set, str(tmp_path / 'whole'))
    whole.run(show_progress=False)
    first = FasterTrainer(cfg, train_set, str(tmp_path / 'parts'))
    first.run(iterations=stop, show_progress=False)        # "killed" after `stop` iterations
    resumed = FasterTrainer(cfg, train_set, str(tmp_path / 'parts')).load_checkpoint()
    assert resumed.iteration == stop
    resumed.run(show_progress=False)
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(whole.history, resumed.history)


def test_alternating_steps_train_their_parts(shapes, tmp_path):
    train_set, _ = shapes
    cfg = FasterTrainConfig(**TINY, iterations=6, step_size=100, schedule='alternating')
    t = FasterTrainer(cfg, train_set, str(tmp_path))
    assert t.boundaries() == [0, 2, 3, 5, 6]
    assert [t.stage_at(i) for i in range(6)] == [(0, 'rpn'), (0, 'rpn'), (1, 'head'), (2, 'rpn'),
                                                 (2, 'rpn'), (3, 'head')]
    s0 = t.model.state_dict()
    t.run(iterations=2, show_progress=False)                # step 1: trunk + RPN
    s1 = t.model.state_dict()
    assert not all(np.array_equal(s0[k], s1[k]) for k in s0 if k.startswith('rpn.'))
    assert all(np.array_equal(s0[k], s1[k]) for k in s0 if k.startswith(('classifier', 'cls_score')))
    t.run(iterations=3, show_progress=False)                # step 2: a fresh trunk + the head
    s2 = t.model.state_dict()
    assert set(t.step1_proposals) == {str(e['index']) for e in t.roidb}
    assert os.path.exists(os.path.join(str(tmp_path), 'step1_proposals.npz'))
    assert all(np.array_equal(s1[k], s2[k]) for k in s1 if k.startswith('rpn.'))
    assert not all(np.array_equal(s1[k], s2[k]) for k in s1 if k.startswith('cls_score'))
    t.run(iterations=5, show_progress=False)                # step 3: the RPN alone
    s3 = t.model.state_dict()
    assert all(np.array_equal(s2[k], s3[k]) for k in s2 if not k.startswith('rpn.'))
    assert not all(np.array_equal(s2[k], s3[k]) for k in s2 if k.startswith('rpn.'))
    t.run(show_progress=False)                              # step 4: the head alone
    s4 = t.model.state_dict()
    head = ('classifier', 'cls_score', 'bbox_pred')
    assert all(np.array_equal(s3[k], s4[k]) for k in s3 if not k.startswith(head))
    assert not all(np.array_equal(s3[k], s4[k]) for k in s3 if k.startswith(head))


def test_export_load_and_detect(shapes, tmp_path):
    train_set, test_set = shapes
    cfg = FasterTrainConfig(**TINY, iterations=2, step_size=100)
    trainer = FasterTrainer(cfg, train_set, str(tmp_path / 'run'))
    trainer.run(show_progress=False)
    path = trainer.export(str(tmp_path / 'model'))
    with open(str(tmp_path / 'model.json')) as f:
        info = json.load(f)
    assert info['architecture'] == 'faster_rcnn' and info['anchor_scales'] == [1, 2, 4]
    model, info = load_faster_model(path)
    assert not model.training and model.settings == trainer.model.settings
    # the saved bbox_pred predicts raw offsets: the trained one's times the fixed stds
    image = tr.Tensor(np.random.default_rng(0).standard_normal((1, 3, 96, 128)).astype(np.float32))
    trainer.model.eval()
    with tr.no_grad():
        p1, c1, b1 = trainer.model(image, (96, 128, 1.0))
        p2, c2, b2 = model(image, (96, 128, 1.0))
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_allclose(c1.numpy(), c2.numpy(), rtol=1e-5, atol=1e-6)
    stds = np.tile([0.1, 0.1, 0.2, 0.2], 7)
    np.testing.assert_allclose(b1.numpy() * stds, b2.numpy(), rtol=1e-4, atol=1e-6)

    item = test_set[0]
    dets = detect(model, item['image'], scale=96, max_size=160, source='tiny', score_thresh=0.0)
    assert dets['boxes'].dtype == np.float32 and dets['labels'].dtype == np.int64
    assert len(dets['boxes']) == len(dets['scores']) <= 100 and (np.diff(dets['scores']) <= 0).all()
    H, W = item['image'].shape[:2]
    assert (dets['boxes'][:, 2] <= W - 1).all() and (dets['boxes'][:, 3] <= H - 1).all()
    with pytest.raises(ValueError):
        detect(model, np.zeros((10, 10), np.uint8))

    from tinyrcnn.train import export_model
    export_model(trainer.model, str(tmp_path / 'fast'), train_set.class_names, np.zeros(4),
                 np.ones(4), cfg)
    with pytest.raises(ValueError, match='not a Faster R-CNN'):
        load_faster_model(str(tmp_path / 'fast'))
    with pytest.raises(FileNotFoundError):
        load_faster_model(str(tmp_path / 'missing'))


def test_crop_pretraining_runs_before_faster_training(shapes, tmp_path):
    # FasterTrainer.run pretrains on object crops first (Trainer.pretrain), through the same
    # trunk and head, and only when starting from iteration 0
    train_set, _ = shapes
    cfg = FasterTrainConfig(**dict(TINY, dropout=0.0), iterations=2, step_size=100,
                            pretrain_iterations=3, pretrain_batch=8, pretrain_crop=32)
    t = FasterTrainer(cfg, train_set, str(tmp_path))
    before = t.model.state_dict()
    t.run(show_progress=False)
    assert len(t.pretrain_history) == 3 and t.iteration == 2
    after = t.model.state_dict()
    assert not np.array_equal(before['classifier.0.weight'], after['classifier.0.weight'])
    resumed = FasterTrainer(cfg, train_set, str(tmp_path)).load_checkpoint()
    resumed.run(iterations=3, show_progress=False)
    assert not hasattr(resumed, 'pretrain_history')          # no second pretraining on resume


def test_two_images_per_iteration_on_threads_are_reproducible(shapes, tmp_path):
    # N = 2 images: the loss is their mean. Two threaded runs agree bit for bit (each image has
    # its own generator; gradients add in image order); one after the other on the main thread
    # agrees to rounding (OpenBLAS there uses two threads, which sums in another order)
    train_set, _ = shapes
    states = []
    for threads in (1, 2, 2):
        cfg = FasterTrainConfig(**dict(TINY, dropout=0.0), ims_per_batch=2, threads=threads,
                                iterations=3, step_size=100)
        t = FasterTrainer(cfg, train_set, None)
        assert t.parallel_images(2) == (threads == 2)
        t.run(show_progress=False)
        assert np.isfinite(np.array(t.history)).all()
        states.append((t.model.state_dict(), np.array(t.history)))
    np.testing.assert_array_equal(states[2][1], states[1][1])
    assert all(np.array_equal(states[2][0][k], states[1][0][k]) for k in states[1][0])
    np.testing.assert_allclose(states[1][1], states[0][1], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match='ims_per_batch'):
        FasterTrainConfig(ims_per_batch=0)


def test_alternating_step_two_restarts_from_the_pretrained_trunk(shapes, tmp_path):
    train_set, _ = shapes
    cfg = FasterTrainConfig(**dict(TINY, dropout=0.0), iterations=6, step_size=100,
                            schedule='alternating', pretrain_iterations=2, pretrain_batch=4,
                            pretrain_crop=32)
    t = FasterTrainer(cfg, train_set, str(tmp_path))
    initial = t.initial_state['features.0.weight'].copy()
    t.run(iterations=1, show_progress=False)               # pretraining, then step 1 begins
    pretrained = t.initial_state['features.0.weight']
    assert not np.array_equal(pretrained, initial)          # the state step 2 restarts from ...
    resumed = FasterTrainer(cfg, train_set, str(tmp_path)).load_checkpoint()
    np.testing.assert_array_equal(resumed.initial_state['features.0.weight'], pretrained)
    resumed.run(iterations=2, show_progress=False)          # step 1 trains the trunk on, then
    assert not np.array_equal(resumed.model.features[0].weight.numpy(), pretrained)
    resumed._enter_step(1)                                  # step 2 puts the pretrained one back
    np.testing.assert_array_equal(resumed.model.features[0].weight.numpy(), pretrained)
