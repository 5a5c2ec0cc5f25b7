"""A step's gradient as a weighted sum over parts (tinyrcnn/train/parts.py): the parts' graphs
give the one-graph gradient, the weighted losses, and old gradients are replaced."""
import numpy as np

import tinyrcnn as tr
import tinyrcnn.functional as F
from tinyrcnn import nn
from tinyrcnn.train.parts import backward_parts, usable_threads


def model_and_data():
    tr.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    model.to(dtype=np.float64)
    rng = np.random.default_rng(0)
    return model, rng.standard_normal((7, 5)), rng.integers(0, 3, 7)


def run(model, part):
    x, labels = part
    loss = F.cross_entropy(model(tr.Tensor(x)), labels)
    return [loss, loss * 10.0], len(labels) / 7


def test_parts_weighted_by_their_rows_give_the_whole_batch():
    model, x, labels = model_and_data()
    whole = F.cross_entropy(model(tr.Tensor(x)), labels)
    whole.backward()
    expected = [p.grad.copy() for p in model.parameters()]
    model[0].weight.grad = np.full((4, 5), 7.0)                   # stale: must not be added to
    parts = [(x[:3], labels[:3]), (x[3:4], labels[3:4]), (x[4:], labels[4:])]
    values = backward_parts(run, parts, model)
    assert np.isclose(values[0], whole.item()) and np.isclose(values[1], 10 * whole.item())
    for p, g in zip(model.parameters(), expected):
        np.testing.assert_allclose(p.grad, g, rtol=1e-12, atol=1e-14)


def test_usable_threads():
    model, _, _ = model_and_data()
    assert usable_threads(model, 2, 4) == 2 and usable_threads(model, 4, 3) == 3
    assert usable_threads(model, 2, 4, device='cuda') == 1 and usable_threads(model, 0, 4) == 1
    dropped = nn.Sequential(model, nn.Dropout(0.5))
    assert usable_threads(dropped, 2, 4) == 1
    dropped[1].p = 0.0
    assert usable_threads(dropped, 2, 4) == 2
