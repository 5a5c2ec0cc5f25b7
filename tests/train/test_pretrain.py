"""Crop pretraining (tinyrcnn/train/pretrain.py): the CPU demos' stand-in for ImageNet."""
import numpy as np
import pytest

import tinyrcnn as tr
from tinyrcnn import speed
from tinyrcnn.data import VOCDetection, make_shapes_voc
from tinyrcnn.fast_rcnn.network import FastRCNN
from tinyrcnn.train.pretrain import RenderedShapes, object_crops, pretrain_on_crops, pretrain_vgg_tiny
from tinyrcnn.vgg import VGG, vgg_tiny


def test_object_crops_labels_and_overlaps(tmp_path):
    ds = VOCDetection(make_shapes_voc(tmp_path, 4, 0, seed=1), 'trainval')
    crops, labels = object_crops(ds, size=32, per_object=2, background_per_image=2, seed=0)
    assert crops.shape[1:] == (32, 32, 3) and crops.dtype == np.uint8
    assert len(crops) == len(labels)
    n_objects = sum(int((~ds.annotation(i)['difficult']).sum()) for i in range(len(ds)))
    assert (labels > 0).sum() == 2 * n_objects            # every object, twice
    assert (labels == 0).sum() == 2 * len(ds)
    assert set(labels[labels > 0]) <= set(range(1, ds.num_classes + 1))


@pytest.mark.parametrize('threads', [1, 2])
def test_pretraining_on_crops_learns(threads):
    tr.manual_seed(0)
    rng = np.random.default_rng(0)
    # two "classes" a small trunk can tell apart, also when flipped: bright top vs bottom half
    crops = rng.integers(0, 60, (40, 16, 16, 3)).astype(np.uint8)
    labels = np.arange(40) % 2 + 1
    crops[labels == 1, 8:, :] += 150
    crops[labels == 2, :8, :] += 150
    model = FastRCNN(VGG((4, 'M', 8, 'M', 8, 'M'), hidden=16, pool_size=2), 2, freeze_stages=0,
                     roi_size=(2, 2), spatial_scale=1 / 4)
    for m in model.classifier:
        if hasattr(m, 'p'):
            m.p = 0.0                                       # no dropout: a short, sure run
    opt = tr.optim.Adam([p for _, p in model.trainable_parameters()], lr=3e-3)
    with speed.enabled():                                   # threads=2: the parts on threads
        history = pretrain_on_crops(model, crops, labels, opt, iterations=60, batch=16,
                                    source='tiny', show_progress=False, threads=threads)
    assert np.mean([h[1] for h in history[:5]]) > np.mean([h[1] for h in history[-5:]]) * 2
    assert np.mean([h[2] for h in history[-10:]]) > 0.9


def test_pretrained_vgg_tiny_file_loads_into_the_trainers(tmp_path):
    data = RenderedShapes(3, seed=7)
    again = RenderedShapes(3, seed=7)
    assert len(data) == 3 and np.array_equal(data[2]['image'], again[2]['image'])
    assert data[0]['boxes'].shape == (len(data[0]['labels']), 4)
    path = str(tmp_path / 'pre.npz')
    history = pretrain_vgg_tiny(path, num_images=6, iterations=4, batch=8, crop=32, log=lambda s: None)
    assert len(history) == 4 and [h[0] for h in history] == [1, 2, 3, 4]
    with np.load(path) as z:
        assert all(z[k].dtype == np.float16 for k in z.files)      # stored small
    vgg = vgg_tiny(weights=path)
    assert vgg.classifier[6].weight.shape == (7, 256)                  # 6 shapes + background
    model = FastRCNN('vgg-tiny', 6, freeze_stages=0, weights=path)
    with np.load(path) as z:
        np.testing.assert_array_equal(model.features[0].weight.numpy(),
                                      z['features.0.weight'].astype(np.float32))


def test_pretraining_threads_stay_reproducible_with_dropout_and_tiny_batches():
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 255, (12, 16, 16, 3)).astype(np.uint8)
    labels = np.arange(12) % 3

    def run(batch, threads):
        tr.manual_seed(0)
        model = FastRCNN(VGG((4, 'M', 8, 'M', 8, 'M'), hidden=16, pool_size=2), 2,
                         freeze_stages=0, roi_size=(2, 2), spatial_scale=1 / 4)   # dropout 0.5
        opt = tr.optim.SGD([p for _, p in model.trainable_parameters()], lr=0.01)
        return pretrain_on_crops(model, crops, labels, opt, iterations=3, batch=batch,
                                 source='tiny', show_progress=False, threads=threads)
    # with dropout the parts run as one (one generator, one order of draws): same every time
    with speed.enabled():
        assert run(6, 2) == run(6, 2) == run(6, 1)
    assert len(run(1, 2)) == 3                      # fewer crops than threads: no empty part


def test_the_shipped_pretrained_trunk_classifies_unseen_shapes():
    # the demos' stand-in for ImageNet weights (tinyrcnn/demo.py, PRETRAINED): crops of images
    # rendered from a seed it was not trained on are classified far above chance (7 classes, a
    # quarter of the crops background; a fresh cls_score gets about 13%)
    from tinyrcnn.data.transforms import preprocess
    from tinyrcnn.demo import PRETRAINED
    from tinyrcnn.tensor import Tensor
    crops, labels = object_crops(RenderedShapes(24, seed=11), 48, seed=11)
    model = FastRCNN('vgg-tiny', 6, freeze_stages=0, weights=PRETRAINED)
    fc8 = vgg_tiny(weights=PRETRAINED).classifier[6]                   # the crop classifier's scores
    model.cls_score.weight.data, model.cls_score.bias.data = fc8.weight.data, fc8.bias.data
    model.eval()
    x = np.stack([preprocess(c, 'tiny') for c in crops])
    rois = np.zeros((len(crops), 5), np.float32)
    rois[:, 0], rois[:, 3:] = np.arange(len(crops)), 47
    scores, _ = model.head(model.features(Tensor(x)), rois)
    accuracy = np.mean(scores.numpy().argmax(axis=1) == labels)
    assert len(crops) > 150 and set(labels) == set(range(7))
    assert accuracy > 0.85, accuracy
