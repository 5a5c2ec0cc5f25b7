"""Hierarchical mini-batches (tinyrcnn/fast_rcnn/minibatch.py, Sec. 2.3): 25% foreground at
IoU >= 0.5, background at [0.1, 0.5), without replacement; targets in the class's columns;
flipped boxes stay valid."""
import numpy as np
import pytest

from tinyrcnn.fast_rcnn.minibatch import expand_targets, make_minibatch, prepare_roidb, sample_rois
from tinyrcnn.train import TrainConfig
from helpers import shapes_set, small_cfg


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    return shapes_set(tmp_path_factory.mktemp('shapes'))


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
