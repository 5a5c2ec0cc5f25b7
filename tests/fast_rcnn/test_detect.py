"""Fast R-CNN detection (Sec. 3) and pyramid testing (Sec. 2.4), mostly with a fake network whose
outputs each test sets exactly, so every number below is computed by hand."""
import math

import numpy as np
import pytest

import tinyrcnn as tr
from tinyrcnn.data import VOCDetection, make_shapes_voc
from tinyrcnn.fast_rcnn.detect import detect, evaluate, im_detect, postprocess, pyramid_levels
from tinyrcnn.fast_rcnn.network import FastRCNN
from helpers import gpu


class FakeModel:
    """Stands in for FastRCNN: features() passes the blob through, head() asks `rule(rois)` for
    (logits (R, K+1), deltas (R, 4(K+1))) and records what it saw."""

    def __init__(self, num_classes, rule):
        self.num_classes, self.rule = num_classes, rule
        self.training = True
        self.weight = tr.Tensor(np.zeros(1, np.float32))
        self.blobs, self.rois, self.modes = [], [], []

    def parameters(self):
        return [self.weight]

    def train(self, mode=True):
        self.training = mode
        return self

    def eval(self):
        return self.train(False)

    def features(self, images):
        self.blobs.append(images.numpy())
        return images

    def head(self, feats, rois):
        rois = np.asarray(tr.backend.to_device(rois, 'cpu'))
        self.rois.append(rois)
        self.modes.append(self.training)
        logits, deltas = self.rule(rois)
        return tr.Tensor(np.asarray(logits, np.float32)), tr.Tensor(np.asarray(deltas, np.float32))


def constant_rule(K, logits=None, deltas=None):
    """Every RoI gets the same logits (default: uniform) and deltas (default: zero)."""
    logits = np.zeros(K + 1) if logits is None else np.asarray(logits, np.float64)
    deltas = np.zeros(4 * (K + 1)) if deltas is None else np.asarray(deltas, np.float64)
    return lambda rois: (np.tile(logits, (len(rois), 1)), np.tile(deltas, (len(rois), 1)))


def logits_for(probs_row):
    """Logits whose softmax is the given probabilities."""
    return np.log(np.asarray(probs_row, np.float64))


IMAGE = np.full((100, 150, 3), 128, np.uint8)   # H=100, W=150; scale 200 -> factor 2


def test_zero_deltas_give_clipped_proposals_in_original_pixels():
    K = 2
    model = FakeModel(K, constant_rule(K))
    proposals = np.array([[10, 20, 59, 79], [-5, 90, 200, 130], [0, 0, 149, 99]], np.float32)
    scores, boxes, _ = im_detect(model, IMAGE, proposals, scales=(200,), max_size=1000)
    # the network saw one 200x300 image and the proposals at twice the size, batch index 0
    assert model.blobs[0].shape == (1, 3, 200, 300)
    np.testing.assert_array_equal(model.rois[0], np.c_[np.zeros(3), proposals * 2])
    assert scores.shape == (3, K + 1) and boxes.shape == (3, 4 * (K + 1))
    assert scores.dtype == boxes.dtype == np.float32
    np.testing.assert_allclose(scores, 1 / 3, rtol=1e-6)
    clipped = np.array([[10, 20, 59, 79], [0, 90, 149, 99], [0, 0, 149, 99]], np.float32)
    for k in range(K + 1):
        np.testing.assert_allclose(boxes[:, 4 * k:4 * k + 4], clipped, atol=1e-4)


def test_deltas_are_decoded_per_class_against_original_proposals():
    K = 2
    # class 1: shift right by half a width and double the width; class 2: half the height
    deltas = [0, 0, 0, 0, 0.5, 0, math.log(2), 0, 0, 0, 0, -math.log(2)]
    logits = [1.0, 2.0, 3.0]
    model = FakeModel(K, constant_rule(K, logits, deltas))
    proposals = np.array([[10, 10, 29, 29]], np.float32)    # w = h = 20, centre (20, 20)
    scores, boxes, _ = im_detect(model, IMAGE, proposals, scales=(200,))
    e = np.exp(logits)
    np.testing.assert_allclose(scores[0], e / e.sum(), rtol=1e-6)
    np.testing.assert_allclose(boxes[0, 0:4], [10, 10, 29, 29], atol=1e-4)
    np.testing.assert_allclose(boxes[0, 4:8], [10, 10, 49, 29], atol=1e-4)  # centre 30, w 40
    np.testing.assert_allclose(boxes[0, 8:12], [10, 15, 29, 24], atol=1e-4)  # h 10


def test_eval_mode_during_forward_and_restored():
    model = FakeModel(1, constant_rule(1))
    im_detect(model, IMAGE, [[0, 0, 9, 9]], scales=(100,))
    assert model.modes == [False] and model.training is True
    model.eval()
    im_detect(model, IMAGE, [[0, 0, 9, 9]], scales=(100,))
    assert model.modes == [False, False] and model.training is False

    def broken(rois):
        raise RuntimeError('boom')
    model = FakeModel(1, broken)
    with pytest.raises(RuntimeError):
        im_detect(model, IMAGE, [[0, 0, 9, 9]], scales=(100,))
    assert model.training is True


def test_score_threshold_keeps_strictly_above():
    K = 3
    # class probabilities: background .6, class 1 .3, class 2 .05 (not > .05), class 3 .05
    model = FakeModel(K, constant_rule(K, logits_for([0.6, 0.3, 0.05, 0.05])))
    dets = detect(model, IMAGE, [[5, 5, 40, 40]], scales=(100,))
    assert dets['labels'].tolist() == [1]
    np.testing.assert_allclose(dets['scores'], [0.3], rtol=1e-5)
    np.testing.assert_allclose(dets['boxes'], [[5, 5, 40, 40]], atol=1e-4)
    assert dets['boxes'].dtype == dets['scores'].dtype == np.float32 and dets['labels'].dtype == np.int64
    dets = detect(model, IMAGE, [[5, 5, 40, 40]], score_thresh=0.01, scales=(100,))
    assert sorted(dets['labels'].tolist()) == [1, 2, 3]


def test_nms_is_per_class():
    # two boxes with IoU 0.68 (> 0.3); proposal 0 is more confident than proposal 1
    proposals = np.array([[0, 0, 49, 49], [5, 5, 54, 54]], np.float32)

    def same_class(rois):
        return [[0, 5, -5], [0, 4, -5]], np.zeros((2, 12))
    dets = detect(FakeModel(2, same_class), IMAGE, proposals, scales=(100,))
    assert dets['labels'].tolist() == [1]
    np.testing.assert_allclose(dets['boxes'], proposals[:1], atol=1e-4)

    def two_classes(rois):
        return [[0, 5, -5], [0, -5, 4]], np.zeros((2, 12))
    dets = detect(FakeModel(2, two_classes), IMAGE, proposals, scales=(100,))
    assert dets['labels'].tolist() == [1, 2]
    np.testing.assert_allclose(dets['boxes'], proposals, atol=1e-4)
    # a looser threshold lets the overlapping same-class pair through, best first
    dets = detect(FakeModel(2, same_class), IMAGE, proposals, nms_thresh=0.7, scales=(100,))
    np.testing.assert_allclose(dets['boxes'], proposals, atol=1e-4)


def test_max_per_image_keeps_the_best_over_all_classes():
    # five disjoint boxes; box j has class 1 + j % 2 with a logit of j
    proposals = np.array([[20 * j, 0, 20 * j + 9, 9] for j in range(5)], np.float32)

    def rule(rois):
        logits = np.full((5, 3), -10.0)
        logits[:, 0] = 0
        logits[np.arange(5), 1 + np.arange(5) % 2] = np.arange(5)
        return logits, np.zeros((5, 12))
    dets = detect(FakeModel(2, rule), IMAGE, proposals, max_per_image=3, scales=(100,))
    np.testing.assert_allclose(dets['boxes'], proposals[[4, 3, 2]], atol=1e-4)
    assert dets['labels'].tolist() == [1, 2, 1]
    assert np.all(np.diff(dets['scores']) < 0)
    assert len(detect(FakeModel(2, rule), IMAGE, proposals, max_per_image=None, scales=(100,))['scores']) == 5


def test_empty_proposals_give_empty_detections():
    model = FakeModel(3, constant_rule(3))
    scores, boxes, _ = im_detect(model, IMAGE, np.zeros((0, 4)))
    assert scores.shape == (0, 4) and boxes.shape == (0, 16) and model.rois == []
    dets = detect(model, IMAGE, [])
    assert dets['boxes'].shape == (0, 4) and dets['scores'].shape == (0,) and dets['labels'].shape == (0,)
    assert dets['labels'].dtype == np.int64


def test_bad_inputs_raise_value_error():
    model = FakeModel(1, constant_rule(1))
    with pytest.raises(ValueError, match=r'\(P, 4\)'):
        im_detect(model, IMAGE, np.zeros((3, 5)))
    with pytest.raises(ValueError, match='uint8'):
        im_detect(model, IMAGE.astype(np.float32), [[0, 0, 9, 9]])
    with pytest.raises(ValueError, match=r'\(H, W, 3\)'):
        im_detect(model, IMAGE[:, :, 0], [[0, 0, 9, 9]])
    with pytest.raises(ValueError, match='finite'):
        im_detect(model, IMAGE, [[0, 0, np.nan, 9]])
    with pytest.raises(ValueError, match='max_per_image'):
        detect(model, IMAGE, [[0, 0, 9, 9]], max_per_image=0, scales=(100,))
    wrong = FakeModel(2, constant_rule(1))   # returns K+1 = 2 columns for a 2-class model
    with pytest.raises(ValueError, match='cls_score'):
        im_detect(wrong, IMAGE, [[0, 0, 9, 9]], scales=(100,))


def test_pyramid_levels_pick_the_scale_nearest_224():
    # factors 0.5 and 2: a 20x20 box is 40x40 at best -> the largest scale; a 200x200 box is
    # 100x100 or 400x400, and 100^2 is nearer 224^2 -> the smallest; 112x112 -> exactly 224 at 2
    boxes = np.array([[0, 0, 19, 19], [0, 0, 199, 199], [0, 0, 111, 111]], np.float32)
    assert pyramid_levels(boxes, [0.5, 2.0]).tolist() == [1, 0, 1]
    assert pyramid_levels(boxes, [2.0, 0.5]).tolist() == [0, 1, 0]


def test_multiscale_batch_and_batch_index():
    image = np.full((200, 200, 3), 200, np.uint8)
    model = FakeModel(1, constant_rule(1))
    proposals = np.array([[10, 10, 29, 29], [0, 0, 199, 199], [50, 60, 161, 171]], np.float32)
    scores, boxes, _ = im_detect(model, image, proposals, scales=(100, 400), max_size=1000)
    blob = model.blobs[0]
    assert blob.shape == (2, 3, 400, 400)       # both levels in one padded batch
    assert np.all(blob[0, :, 100:, :] == 0) and np.all(blob[0, :, :, 100:] == 0)
    assert np.all(blob[0, :, :100, :100] != 0)
    rois = model.rois[0]
    np.testing.assert_array_equal(rois[:, 0], [1, 0, 1])   # small -> large scale, big -> small
    np.testing.assert_allclose(rois[:, 1:], proposals * np.array([[2], [0.5], [2]]), rtol=1e-6)
    np.testing.assert_allclose(boxes[:, 4:8], proposals, atol=1e-4)  # back in original pixels


def test_real_network_outputs_and_dedup():
    tr.manual_seed(0)
    model = FastRCNN('vgg-tiny', num_classes=3, freeze_stages=0)
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    # proposals 1 and 2 differ by less than a feature cell: they pool the same features
    proposals = np.array([[0, 0, 31, 31], [8, 8, 47, 40], [8.2, 8.1, 47.3, 40.2], [0, 0, 63, 47]],
                         np.float32)
    seen, head = [], model.head
    model.head = lambda feats, rois: (seen.append(len(rois)), head(feats, rois))[1]
    scores, boxes, _ = im_detect(model, image, proposals, scales=(64,), max_size=200)
    assert model.training is True
    np.testing.assert_allclose(scores.sum(axis=1), 1, rtol=1e-5)
    assert boxes.min() >= 0 and boxes[:, 0::2].max() <= 63 and boxes[:, 1::2].max() <= 47
    np.testing.assert_allclose(scores[1], scores[2], rtol=1e-6)
    scores2, boxes2, _ = im_detect(model, image, proposals, scales=(64,), max_size=200, dedup=False)
    assert seen == [3, 4]     # the head ran once per distinct RoI, then once per proposal
    np.testing.assert_allclose(scores2, scores, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(boxes2, boxes, rtol=1e-5, atol=1e-4)
    # the same numbers as the model's own forward pass on the rescaled (x 64/48) image
    from tinyrcnn.data.transforms import preprocess, rescale
    resized, _, f = rescale(image, None, 64, 200)
    model.eval()
    with tr.no_grad():
        cls, _ = model(tr.Tensor(preprocess(resized)[None]), np.c_[np.zeros(4), proposals * f].astype(np.float32))
    logits = cls.numpy()
    e = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(scores, e / e.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)


@gpu
def test_gpu_matches_cpu():
    tr.manual_seed(0)
    model = FastRCNN('vgg-tiny', num_classes=3, freeze_stages=0)
    image = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    proposals = np.array([[0, 0, 31, 31], [8, 8, 47, 40], [0, 0, 63, 47]], np.float32)
    cpu = im_detect(model, image, proposals, scales=(64, 96), max_size=200)
    model.to('cuda')
    gpu_out = im_detect(model, image, proposals, scales=(64, 96), max_size=200)
    for a, b in zip(cpu, gpu_out):
        assert isinstance(b, np.ndarray)
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


class Oracle:
    """Proposals are the ground truth; the fake network names each one's class (shifted by
    `offset` to make it wrong), with zero deltas."""

    def __init__(self, dataset, offset=0):
        K = dataset.num_classes
        self.proposals = {dataset.ids[i]: dataset.annotation(i)['boxes'] for i in range(len(dataset))}
        self.labels = [(dataset.annotation(i)['labels'] - 1 + offset) % K + 1 for i in range(len(dataset))]

        def rule(rois):
            labels = self.labels.pop(0)   # images come in data-set order, one forward each
            logits = np.zeros((len(rois), K + 1))
            logits[np.arange(len(rois)), labels] = 12.0
            return logits, np.zeros((len(rois), 4 * (K + 1)))
        self.model = FakeModel(K, rule)


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    root = make_shapes_voc(tmp_path_factory.mktemp('shapes'), 2, 3, seed=0)
    return VOCDetection(root, 'test')


def test_evaluate_oracle_and_wrong_class(shapes):
    oracle = Oracle(shapes)
    result, dets, seconds = evaluate(oracle.model, shapes, oracle.proposals, scales=(200,))
    assert result['map'] == pytest.approx(1.0, abs=1e-12) and len(dets) == 3 and seconds > 0
    for i, d in enumerate(dets):
        gt = shapes.annotation(i)
        order = np.lexsort(gt['boxes'].T[::-1])
        got = np.lexsort(d['boxes'].T[::-1])
        np.testing.assert_allclose(d['boxes'][got], gt['boxes'][order], atol=1e-3)
        assert d['labels'][got].tolist() == gt['labels'][order].tolist()
    wrong = Oracle(shapes, offset=1)
    result, dets, _ = evaluate(wrong.model, shapes, wrong.proposals, scales=(200,))
    assert result['map'] == 0.0 and all(len(d['scores']) for d in dets)


def test_evaluate_callable_proposals_limit_and_errors(shapes):
    seen = []

    def whole_image(image):
        seen.append(image.shape)
        return np.array([[0, 0, image.shape[1] - 1, image.shape[0] - 1]], np.float32)
    K = shapes.num_classes
    model = FakeModel(K, constant_rule(K, [0] + [-20] * (K - 1) + [5]))
    result, dets, _ = evaluate(model, shapes, whole_image, scales=(100,), limit=2)
    assert len(dets) == 2 and len(seen) == 2 and all(s[2] == 3 for s in seen)
    assert all(d['labels'].tolist() == [K] for d in dets)
    with pytest.raises(ValueError, match='no proposals for image id'):
        evaluate(model, shapes, {}, scales=(100,))
    with pytest.raises(ValueError, match='classes'):
        evaluate(FakeModel(2, constant_rule(2)), shapes, whole_image)


def test_postprocess_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    P, K = 60, 3
    logits = rng.normal(0, 2, (P, K + 1))
    scores = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    base = tr.boxes.random_clustered_boxes(P, num_objects=4, height=100, width=150, seed=1)[0]
    boxes = np.tile(base, (1, K + 1)) + rng.normal(0, 2, (P, 4 * (K + 1))).astype(np.float32)
    dets = postprocess(scores, boxes, 0.05, 0.3, 10)
    # the original test_net: a loop over classes, threshold, NMS, then the overall top scores
    expected = []
    for k in range(1, K + 1):
        idx = np.flatnonzero(scores[:, k] > 0.05)
        b, s = boxes[idx, 4 * k:4 * k + 4], scores[idx, k]
        expected += [(s[j], k, tuple(b[j])) for j in tr.boxes.nms(b, s, 0.3)]
    expected.sort(key=lambda t: -t[0])
    expected = expected[:10]
    np.testing.assert_allclose(dets['scores'], [t[0] for t in expected])
    assert dets['labels'].tolist() == [t[1] for t in expected]
    np.testing.assert_allclose(dets['boxes'], [t[2] for t in expected])


def test_no_proposals_needs_a_model_with_an_rpn():
    model = FakeModel(2, constant_rule(2))
    with pytest.raises(ValueError, match='no RPN'):
        im_detect(model, IMAGE)
    with pytest.raises(ValueError, match='no RPN'):
        detect(model, IMAGE, None)
