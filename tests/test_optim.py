import numpy as np
import pytest

import tinyrcnn as tr


def test_sgd_matches_hand_computed_momentum_and_decay():
    w = tr.nn.Parameter(np.array([1.0, -2.0]))
    opt = tr.optim.SGD([w], lr=0.1, momentum=0.9, weight_decay=0.01)
    v = np.zeros(2)
    ref = w.data.copy()
    for g in ([0.5, 0.5], [1.0, -1.0], [0.0, 2.0]):
        w.grad = np.array(g)
        opt.step()
        v = 0.9 * v + 0.1 * (np.array(g) + 0.01 * ref)   # Caffe's update
        ref = ref - v
        np.testing.assert_allclose(w.data, ref, rtol=1e-14)


def test_parameter_groups_lr_mult_and_no_decay():
    w, b = tr.nn.Parameter(np.array([1.0])), tr.nn.Parameter(np.array([1.0]))
    opt = tr.optim.SGD([{'params': [w]}, {'params': [b], 'lr_mult': 2.0, 'weight_decay': 0.0}],
                       lr=0.1, momentum=0.0, weight_decay=0.5)
    w.grad, b.grad = np.array([1.0]), np.array([1.0])
    opt.step()
    np.testing.assert_allclose(w.data, [1 - 0.1 * (1 + 0.5)])
    np.testing.assert_allclose(b.data, [1 - 0.2 * 1])
    with pytest.raises(ValueError, match='unknown parameter-group keys'):
        tr.optim.SGD([{'params': [w], 'lr_multiplier': 2}], lr=0.1)


def test_step_schedule_and_state_round_trip():
    w = tr.nn.Parameter(np.array([1.0]))
    opt = tr.optim.SGD([w], lr=1.0)
    sched = tr.optim.StepLR(opt, step_size=3, gamma=0.1)
    lrs = []
    for _ in range(7):
        lrs.append(opt.lr)
        sched.step()
    np.testing.assert_allclose(lrs, [1, 1, 1, 0.1, 0.1, 0.1, 0.01])
    m = tr.optim.StepLR(opt, milestones=[2, 5])
    assert [m.lr_at(i) for i in (0, 2, 4, 5)] == pytest.approx([0.01, 0.001, 0.001, 0.0001])
    w.grad = np.array([1.0])
    opt.step()
    state = opt.state_dict()
    w2 = tr.nn.Parameter(np.array([1.0]))
    opt2 = tr.optim.SGD([w2], lr=5.0)
    opt2.load_state_dict(state)
    assert opt2.lr == opt.lr
    np.testing.assert_array_equal(opt2.velocity[id(w2)], opt.velocity[id(w)])


def test_adam_matches_hand_computed_steps_and_state_round_trip():
    w = tr.nn.Parameter(np.array([1.0, -2.0]))
    opt = tr.optim.Adam([w], lr=0.1, betas=(0.9, 0.99), eps=1e-8)
    m = v = np.zeros(2)
    ref = w.data.copy()
    for t, g in enumerate(([0.5, 0.5], [1.0, -1.0], [0.0, 2.0]), start=1):
        w.grad = np.array(g)
        opt.step()
        m = 0.9 * m + 0.1 * np.array(g)
        v = 0.99 * v + 0.01 * np.array(g) ** 2
        ref = ref - 0.1 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.99 ** t)) + 1e-8)
        np.testing.assert_allclose(w.data, ref, rtol=1e-7)
    w2 = tr.nn.Parameter(w.data.copy())
    opt2 = tr.optim.Adam([w2], lr=0.1, betas=(0.9, 0.99))
    opt2.load_state_dict(opt.state_dict())
    w.grad = w2.grad = np.array([0.3, -0.1])
    opt.step()
    opt2.step()
    np.testing.assert_array_equal(w.data, w2.data)
