"""Training Faster R-CNN (tinyrcnn/train/faster_rcnn.py, alternating.py): the loss goes down,
a resumed run equals an uninterrupted one, the 4-step schedule trains the right parts, crop
pretraining, two images per iteration on threads."""
import os

import numpy as np
import pytest

import tinyrcnn as tr
from tinyrcnn import speed
from tinyrcnn.data import VOCDetection, make_shapes_voc
from tinyrcnn.data.transforms import rescale
from tinyrcnn.faster_rcnn.loss import faster_rcnn_losses
from tinyrcnn.train import FasterRCNNTrainer, FasterTrainConfig, alternating

TINY = dict(trunk='vgg-tiny', freeze_stages=0, scales=(96,), max_size=160, lr=0.01,
            source='tiny', anchor_scales=(1, 2, 4), rpn_min_size=4, checkpoint_every=1000)


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    root = make_shapes_voc(tmp_path_factory.mktemp('shapes'), 4, 2)
    return VOCDetection(root, 'trainval'), VOCDetection(root, 'test')


def _fixed_loss(trainer):
    """Mean losses over the training images with fixed sampling and dropout masks."""
    total = np.zeros(5)
    for i, e in enumerate(trainer.roidb):
        tr.manual_seed(100 + i)
        image, gt, factor = rescale(trainer.dataset[e['index']]['image'], e['gt_boxes'], 96, 160)
        with tr.no_grad():
            losses = faster_rcnn_losses(trainer.model, trainer.blob(image), (*image.shape[:2], factor),
                                        gt, e['gt_labels'], trainer.cfg, np.random.default_rng(i))
        total += [losses[k].item() for k in ('loss', 'rpn_cls', 'rpn_loc', 'cls', 'loc')]
    return total / len(trainer.roidb)


def test_joint_training_lowers_the_loss(shapes):
    train_set, _ = shapes
    cfg = FasterTrainConfig(**TINY, iterations=16, step_size=1000)
    trainer = FasterRCNNTrainer(cfg, train_set, None)
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
    whole = FasterRCNNTrainer(cfg, train_set, str(tmp_path / 'whole'))
    whole.run(show_progress=False)
    first = FasterRCNNTrainer(cfg, train_set, str(tmp_path / 'parts'))
    first.run(iterations=stop, show_progress=False)        # "killed" after `stop` iterations
    resumed = FasterRCNNTrainer(cfg, train_set, str(tmp_path / 'parts')).load_checkpoint()
    assert resumed.iteration == stop
    resumed.run(show_progress=False)
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(whole.history, resumed.history)


def test_alternating_steps_train_their_parts(shapes, tmp_path):
    train_set, _ = shapes
    cfg = FasterTrainConfig(**TINY, iterations=6, step_size=100, schedule='alternating')
    t = FasterRCNNTrainer(cfg, train_set, str(tmp_path))
    assert alternating.boundaries(cfg) == [0, 2, 3, 5, 6]
    assert [alternating.stage_at(cfg, i) for i in range(6)] == [(0, 'rpn'), (0, 'rpn'), (1, 'head'), (2, 'rpn'),
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


def test_crop_pretraining_runs_before_faster_training(shapes, tmp_path):
    # FasterRCNNTrainer.run pretrains on object crops first (Trainer.pretrain), through the same
    # trunk and head, and only when starting from iteration 0
    train_set, _ = shapes
    cfg = FasterTrainConfig(**dict(TINY, dropout=0.0), iterations=2, step_size=100,
                            pretrain_iterations=3, pretrain_batch=8, pretrain_crop=32)
    t = FasterRCNNTrainer(cfg, train_set, str(tmp_path))
    before = t.model.state_dict()
    t.run(show_progress=False)
    assert len(t.pretrain_history) == 3 and t.iteration == 2
    after = t.model.state_dict()
    assert not np.array_equal(before['classifier.0.weight'], after['classifier.0.weight'])
    resumed = FasterRCNNTrainer(cfg, train_set, str(tmp_path)).load_checkpoint()
    resumed.run(iterations=3, show_progress=False)
    assert resumed.pretrain_history is None                  # no second pretraining on resume

    # a trainer whose pretraining ran on its own (the demo times it apart) does not repeat it
    fresh = FasterRCNNTrainer(cfg, train_set, None)
    fresh.pretrain(show_progress=False)
    first = fresh.pretrain_history
    fresh.run(iterations=1, show_progress=False)
    assert fresh.pretrain_history is first and fresh.iteration == 1


def test_two_images_per_iteration_on_threads_are_reproducible(shapes, tmp_path):
    # N = 2 images: the loss is their mean. Two threaded runs agree bit for bit (each image has
    # its own generator; gradients add in image order); one after the other on the main thread
    # agrees to rounding (OpenBLAS there may use two threads, which sums in another order)
    train_set, _ = shapes
    states = []
    for threads in (1, 2, 2):
        cfg = FasterTrainConfig(**dict(TINY, dropout=0.0), ims_per_batch=2, threads=threads,
                                iterations=3, step_size=100)
        t = FasterRCNNTrainer(cfg, train_set, None)
        with speed.enabled():
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
    t = FasterRCNNTrainer(cfg, train_set, str(tmp_path))
    initial = t.initial_state['features.0.weight'].copy()
    t.run(iterations=1, show_progress=False)               # pretraining, then step 1 begins
    pretrained = t.initial_state['features.0.weight']
    assert not np.array_equal(pretrained, initial)          # the state step 2 restarts from ...
    resumed = FasterRCNNTrainer(cfg, train_set, str(tmp_path)).load_checkpoint()
    np.testing.assert_array_equal(resumed.initial_state['features.0.weight'], pretrained)
    resumed.run(iterations=2, show_progress=False)          # step 1 trains the trunk on, then
    assert not np.array_equal(resumed.model.features[0].weight.numpy(), pretrained)
    alternating.enter_step(resumed, 1)                      # step 2 puts the pretrained one back
    np.testing.assert_array_equal(resumed.model.features[0].weight.numpy(), pretrained)


def test_two_images_with_dropout_stay_on_one_thread_and_reproducible(shapes):
    # dropout draws its masks from one shared generator: threads would interleave the draws,
    # so with dropout the parts run one after the other, and runs repeat exactly
    train_set, _ = shapes
    histories = []
    for _ in range(2):
        cfg = FasterTrainConfig(**dict(TINY, dropout=0.5), ims_per_batch=2, threads=2,
                                iterations=2, step_size=100)
        t = FasterRCNNTrainer(cfg, train_set, None)
        with speed.enabled():
            t.run(show_progress=False)
        histories.append(np.array(t.history))
    np.testing.assert_array_equal(histories[0], histories[1])
