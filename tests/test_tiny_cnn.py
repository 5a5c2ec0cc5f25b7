"""A first end-to-end proof: a tiny CNN made of tinyrcnn's parts learns a small task on the CPU."""
import numpy as np

import tinyrcnn as tr
import tinyrcnn.functional as F
from helpers import gpu


def make_task(n, rng):
    """16x16 single-channel images holding a bright horizontal bar (class 0), vertical bar
    (class 1) or square (class 2) at a random place, on noise."""
    x = rng.normal(0, 0.3, (n, 1, 16, 16)).astype(np.float32)
    y = rng.integers(0, 3, n)
    for i in range(n):
        r, c = rng.integers(2, 10, 2)
        if y[i] == 0:
            x[i, 0, r, c:c + 6] += 1.5
        elif y[i] == 1:
            x[i, 0, r:r + 6, c] += 1.5
        else:
            x[i, 0, r:r + 3, c:c + 3] += 1.5
    return x, y


def tiny_cnn():
    return tr.nn.Sequential(
        tr.nn.Conv2d(1, 8, 3, padding=1), tr.nn.ReLU(), tr.nn.MaxPool2d(2),
        tr.nn.Conv2d(8, 16, 3, padding=1), tr.nn.ReLU(), tr.nn.MaxPool2d(2),
        tr.nn.Flatten(), tr.nn.Linear(16 * 4 * 4, 32), tr.nn.ReLU(), tr.nn.Linear(32, 3))


def train(steps=150, seed=0):
    tr.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = tiny_cnn()
    weights = [p for n, p in net.named_parameters() if n.endswith('weight')]
    biases = [p for n, p in net.named_parameters() if n.endswith('bias')]
    opt = tr.optim.SGD([{'params': weights}, {'params': biases, 'lr_mult': 2, 'weight_decay': 0}],
                       lr=0.05, momentum=0.9, weight_decay=1e-4)
    sched = tr.optim.StepLR(opt, step_size=100, gamma=0.1)
    losses = []
    for _ in range(steps):
        x, y = make_task(32, rng)
        loss = F.cross_entropy(net(tr.Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return net, losses


def test_tiny_cnn_learns_synthetic_classification():
    net, losses = train()
    x, y = make_task(500, np.random.default_rng(123))
    with tr.no_grad():
        pred = net.eval()(tr.Tensor(x)).numpy().argmax(axis=1)
    accuracy = (pred == y).mean()
    assert np.mean(losses[:10]) > 0.9            # starts near log(3) = 1.10
    assert np.mean(losses[-10:]) < 0.2
    assert accuracy >= 0.95, accuracy


def test_training_is_deterministic_for_a_seed():
    _, a = train(steps=5, seed=1)
    _, b = train(steps=5, seed=1)
    assert a == b


@gpu
def test_tiny_cnn_step_on_gpu_equals_cpu():
    """One SGD step of the tiny CNN on CuPy gives the NumPy step's loss and parameters."""
    x, y = make_task(16, np.random.default_rng(5))
    results = {}
    for device in ('cpu', 'cuda'):
        tr.manual_seed(0)
        net = tiny_cnn().to(device)
        opt = tr.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        loss = F.cross_entropy(net(tr.Tensor(x).to(device)), tr.Tensor(y).to(device).data)
        opt.zero_grad()
        loss.backward()
        opt.step()
        results[device] = loss.item(), [p.numpy() for p in net.parameters()]
    assert abs(results['cpu'][0] - results['cuda'][0]) < 1e-5
    for a, b in zip(results['cpu'][1], results['cuda'][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
