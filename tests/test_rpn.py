"""The Region Proposal Network (Faster R-CNN, Sec. 3.1): head, anchor targets, loss, proposal layer."""
import numpy as np
import pytest

import tinyrcnn as tr
from tinyrcnn import boxes as bx
from tinyrcnn.models.anchors import generate_anchors, shift_anchors
from tinyrcnn.models.rpn import (RPNHead, anchor_targets, flatten_outputs, proposal_layer,
                                 rpn_loss)


def _smooth_l1(d, sigma):
    s2 = sigma * sigma
    return np.where(np.abs(d) < 1 / s2, 0.5 * s2 * d * d, np.abs(d) - 0.5 / s2)


# ---------------------------------------------------------------------------------------------
# Head and output layout
# ---------------------------------------------------------------------------------------------
def test_head_shapes_and_init():
    tr.manual_seed(0)
    head = RPNHead(64, 128, num_anchors=9)
    logits, deltas = head(tr.Tensor(np.random.default_rng(0).random((1, 64, 5, 7), np.float32)))
    assert logits.shape == (1, 18, 5, 7) and deltas.shape == (1, 36, 5, 7)
    for layer in (head.conv, head.cls_score, head.bbox_pred):     # N(0, 0.01), zero biases
        w = layer.weight.numpy()
        assert abs(w.std() - 0.01) < 0.001 and abs(w.mean()) < 0.001
        assert not layer.bias.numpy().any()


def test_flatten_matches_anchor_order():
    A, H, W = 3, 2, 4
    logits = np.arange(2 * A * H * W, dtype=np.float64).reshape(1, 2 * A, H, W)
    deltas = np.arange(4 * A * H * W, dtype=np.float64).reshape(1, 4 * A, H, W)
    scores, offsets = flatten_outputs(logits, deltas)
    for y in range(H):
        for x in range(W):
            for a in range(A):
                r = (y * W + x) * A + a                        # the row of shift_anchors
                assert scores[r].tolist() == [logits[0, a, y, x], logits[0, A + a, y, x]]
                assert offsets[r].tolist() == deltas[0, 4 * a:4 * a + 4, y, x].tolist()
    with pytest.raises(ValueError):
        flatten_outputs(logits, deltas[:, :4])


# ---------------------------------------------------------------------------------------------
# Anchor targets on hand-made cases (Sec. 3.1.2)
# ---------------------------------------------------------------------------------------------
def _targets(anchors, gt, im_size=(100, 100), **kw):
    return anchor_targets(np.array(anchors, np.float32), np.array(gt, np.float32), im_size,
                          np.random.default_rng(0), **kw)


def test_assignment_rules():
    gt = [[0, 0, 59, 59]]                            # 60 x 60
    anchors = [[10, 10, 49, 49],                     # IoU 1600/3600 = 0.44: below 0.7 but the best
               [0, 0, 29, 29],                       # IoU 0.25 < 0.3: negative
               [0, 0, 34, 34],                       # IoU 0.34: neither, ignored
               [60, 60, 99, 99],                     # no overlap: negative
               [-2, -2, 57, 57],                     # IoU 0.93 but crosses the border: ignored
               [50, 50, 109, 109]]                   # crosses the right/bottom border: ignored
    labels, targets = _targets(anchors, gt)
    assert labels.tolist() == [1, 0, -1, 0, -1, -1]
    np.testing.assert_allclose(targets[0], bx.encode(np.array(anchors[:1], np.float32),
                                                     np.array(gt, np.float32))[0], rtol=1e-6)
    assert not targets[4:].any()                     # outside anchors get no target
    # allowed_border makes the crossing anchors count again: the 0.93 one is now the best, so
    # the 0.44 one falls back to "neither"
    labels, _ = _targets(anchors, gt, allowed_border=10)
    assert labels.tolist() == [-1, 0, -1, 0, 1, 0]


def test_ties_and_high_iou_are_all_positive():
    gt = [[20, 20, 59, 59]]
    # two anchors tie for best at IoU 0.6; both positive
    labels, _ = _targets([[10, 20, 49, 59], [30, 20, 69, 59], [0, 0, 9, 9]], gt)
    assert labels.tolist() == [1, 1, 0]
    # IoU 1.0 and 0.83: both >= 0.7, both positive, though only one is the best
    labels, _ = _targets([[20, 20, 59, 59], [20, 20, 59, 52], [70, 70, 89, 89]], gt)
    assert labels.tolist() == [1, 1, 0]


def test_unreachable_ground_truth_and_no_ground_truth():
    far = [[50, 50, 89, 89], [60, 60, 99, 99]]
    # a ground truth no inside anchor touches gets no positive (not every IoU-0 anchor)
    labels, _ = _targets(far, [[0, 0, 9, 9]])
    assert labels.tolist() == [0, 0]
    labels, targets = _targets(far + [[-5, 0, 20, 20]], np.zeros((0, 4)))
    assert labels.tolist() == [0, 0, -1] and not targets.any()


def test_sampling_caps():
    gt = [[0, 0, 39, 39]]
    pos = [[0, 0, 39, 39]] * 300
    neg = [[60, 60, 99, 99]] * 500
    labels, _ = _targets(pos + neg, gt)              # too many of both: 128 + 128
    assert (labels[:300] == 1).sum() == 128 and (labels[300:] == 0).sum() == 128
    assert (labels[:300] != 0).all() and (labels[300:] != 1).all()
    labels, _ = _targets(pos[:10] + neg, gt)         # few positives: the rest negatives
    assert (labels == 1).sum() == 10 and (labels == 0).sum() == 246
    labels, _ = _targets(pos[:10] + neg[:50], gt)    # fewer than 256 in all: all kept
    assert (labels == 1).sum() == 10 and (labels == 0).sum() == 50
    labels, _ = _targets(pos + neg, gt, batch_size=64, fg_fraction=0.25)
    assert (labels == 1).sum() == 16 and (labels == 0).sum() == 48


# ---------------------------------------------------------------------------------------------
# Loss: value and gradients
# ---------------------------------------------------------------------------------------------
def _tiny_problem(seed=0):
    """A 3 x 4 map with 3 anchors per position (scales 1: 16 x 16 cells), two objects."""
    rng = np.random.default_rng(seed)
    A, H, W = 3, 3, 4
    anchors = shift_anchors(generate_anchors(16, (0.5, 1, 2), (1.5,)), H, W)
    gt = np.array([[4, 2, 30, 27], [30, 14, 60, 45]], np.float32)
    labels, targets = anchor_targets(anchors, gt, (48, 64), rng, batch_size=20)
    assert (labels == 1).any() and (labels == 0).any() and (labels == -1).any()
    logits = rng.standard_normal((1, 2 * A, H, W))
    deltas = rng.standard_normal((1, 4 * A, H, W)) * 0.3
    return logits, deltas, labels, targets.astype(np.float64)


def test_rpn_loss_value_and_normalisation():
    logits, deltas, labels, targets = _tiny_problem()
    loss_cls, loss_reg = rpn_loss(tr.Tensor(logits), tr.Tensor(deltas), labels, targets, sigma=3.0)
    scores, offsets = flatten_outputs(logits, deltas)
    s = labels >= 0
    log_p = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
    expected_cls = -log_p[s, labels[s]].mean()
    pos = labels == 1
    expected_reg = _smooth_l1(offsets[pos] - targets[pos], 3.0).sum() / s.sum()
    np.testing.assert_allclose(loss_cls.item(), expected_cls, rtol=1e-12)
    np.testing.assert_allclose(loss_reg.item(), expected_reg, rtol=1e-12)


def test_rpn_loss_gradcheck():
    logits, deltas, labels, targets = _tiny_problem(1)
    fn = lambda lg, dl: sum(rpn_loss(lg, dl, labels, targets, sigma=3.0), tr.Tensor(0.0))  # noqa: E731
    assert tr.gradcheck(fn, [tr.Tensor(logits, requires_grad=True),
                             tr.Tensor(deltas, requires_grad=True)])


def test_rpn_head_gradcheck():
    tr.manual_seed(3)
    _, _, labels, targets = _tiny_problem(2)
    head = RPNHead(3, 4, num_anchors=3).to(dtype=np.float64)
    for layer in (head.conv, head.cls_score, head.bbox_pred):     # larger weights: a real test
        layer.weight.data = layer.weight.data * 30
        layer.bias.data = np.random.default_rng(1).standard_normal(layer.bias.shape) * 0.1
    feats = tr.Tensor(np.random.default_rng(4).standard_normal((1, 3, 3, 4)), requires_grad=True)
    params = [p for _, p in head.named_parameters()]

    def fn(x, *unused):                  # the parameters are perturbed in place by gradcheck
        loss_cls, loss_reg = rpn_loss(*head(x), labels, targets, sigma=3.0)
        return loss_cls + loss_reg
    assert tr.gradcheck(fn, [feats] + params)


def test_rpn_loss_with_nothing_sampled_is_zero():
    logits, deltas, labels, targets = _tiny_problem()
    lg = tr.Tensor(logits, requires_grad=True)
    loss_cls, loss_reg = rpn_loss(lg, tr.Tensor(deltas), np.full_like(labels, -1), targets)
    (loss_cls + loss_reg).backward()
    assert loss_cls.item() == 0 and not lg.grad.any()


# ---------------------------------------------------------------------------------------------
# Proposal layer (Sec. 3.3)
# ---------------------------------------------------------------------------------------------
def _propose(anchors, scores, deltas=None, im_size=(100, 100), **kw):
    anchors = np.array(anchors, np.float32)
    deltas = np.zeros_like(anchors) if deltas is None else np.array(deltas, np.float32)
    return proposal_layer(np.array(scores, np.float32), deltas, anchors, im_size, **kw)


def test_proposals_decoded_clipped_and_sorted():
    anchors = [[-10, -10, 20, 20], [0, 0, 15, 15], [60, 70, 119, 109]]
    deltas = [[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0, 0, 0]]      # the second moves 8 px right
    boxes, scores = _propose(anchors, [0.2, 0.9, 0.5], deltas, min_size=1)
    np.testing.assert_allclose(boxes, [[8, 0, 23, 15], [60, 70, 99, 99], [0, 0, 20, 20]])
    np.testing.assert_allclose(scores, [0.9, 0.5, 0.2])
    assert boxes.dtype == np.float32


def test_min_size_in_original_pixels():
    anchors = [[0, 0, 3, 3], [20, 20, 59, 59]]                  # 4 px and 40 px wide
    boxes, _ = _propose(anchors, [0.9, 0.1], min_size=5, scale=1.0)
    np.testing.assert_array_equal(boxes, [[20, 20, 59, 59]])
    boxes, _ = _propose(anchors, [0.9, 0.1], min_size=5, scale=0.5)   # 5 original px = 2.5 here
    assert len(boxes) == 2


def test_nms_and_top_n():
    A, B, C = [0, 0, 19, 19], [1, 0, 20, 19], [50, 50, 69, 69]    # IoU(A, B) = 0.905
    boxes, scores = _propose([B, A, C], [0.8, 0.9, 0.7], min_size=1)
    np.testing.assert_array_equal(boxes, [A, C])                   # B suppressed at 0.7
    boxes, _ = _propose([B, A, C], [0.8, 0.9, 0.7], min_size=1, nms_thresh=0.95)
    assert len(boxes) == 3                                         # 0.905 < 0.95: all kept
    boxes, _ = _propose([B, A, C], [0.8, 0.9, 0.7], min_size=1, pre_nms_top_n=2)
    np.testing.assert_array_equal(boxes, [A])                      # C never reached NMS
    boxes, _ = _propose([B, A, C], [0.8, 0.9, 0.7], min_size=1, post_nms_top_n=1)
    np.testing.assert_array_equal(boxes, [A])
    many = [[10 * i, 0, 10 * i + 8, 8] for i in range(9)]          # disjoint boxes
    boxes, scores = _propose(many, np.arange(9) / 10, min_size=1, pre_nms_top_n=-1, post_nms_top_n=-1)
    assert len(boxes) == 9 and (np.diff(scores) < 0).all()


def test_proposal_layer_shapes_checked():
    with pytest.raises(ValueError):
        proposal_layer(np.zeros(3, np.float32), np.zeros((2, 4), np.float32),
                       np.zeros((3, 4), np.float32), (10, 10))
