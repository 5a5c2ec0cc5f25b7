"""The Region Proposal Network's head and loss (tinyrcnn/faster_rcnn/rpn.py, Sec. 3.1, 3.1.2)."""
import numpy as np
import pytest

import tinyrcnn as tr
from tinyrcnn.faster_rcnn.anchor_targets import anchor_targets
from tinyrcnn.faster_rcnn.anchors import generate_anchors, shift_anchors
from tinyrcnn.faster_rcnn.rpn import RPNHead, flatten_outputs, rpn_loss


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
