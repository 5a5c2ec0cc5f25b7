import numpy as np
import pytest

import tinyrcnn as tr
from helpers import distinct


def small_net():
    return tr.nn.Sequential(tr.nn.Conv2d(2, 3, 3, padding=1), tr.nn.ReLU(), tr.nn.MaxPool2d(2),
                            tr.nn.Flatten(), tr.nn.Dropout(0.5), tr.nn.Linear(12, 4))


def test_parameter_names_follow_pytorch():
    net = small_net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ['0.weight', '0.bias', '5.weight', '5.bias']
    assert net.num_parameters() == 3 * 2 * 9 + 3 + 12 * 4 + 4
    assert isinstance(net[0], tr.nn.Conv2d) and len(net) == 6


def test_state_dict_round_trip_and_errors():
    a, b = small_net(), small_net()
    b.load_state_dict(a.state_dict())
    for (_, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data)
    sd = a.state_dict()
    sd['0.weight'][...] = 7                      # state dicts are copies
    assert not (a[0].weight.data == 7).any()
    bad = dict(a.state_dict())
    del bad['0.bias']
    bad['extra.weight'] = np.zeros(1)
    bad['5.weight'] = np.zeros((4, 13))
    with pytest.raises(ValueError) as e:
        b.load_state_dict(bad)
    msg = str(e.value)
    assert 'missing: 0.bias (3,)' in msg and 'unexpected: extra.weight (1,)' in msg
    assert '5.weight: expected (4, 12), given (4, 13)' in msg
    partial = {'0.weight': np.ones((3, 2, 3, 3))}
    b.load_state_dict(partial, strict=False)
    assert (b[0].weight.data == 1).all() and b[0].weight.dtype == np.float32


def test_train_eval_toggle_dropout_and_dtype_cast():
    net = small_net().to(dtype=np.float64)
    x = tr.Tensor(distinct((2, 2, 4, 4), 1))
    net.eval()
    assert not net[4].training
    np.testing.assert_array_equal(net(x).data, net(x).data)     # deterministic without dropout
    net.train()
    assert net[4].training and net(x).dtype == np.float64


def test_whole_network_gradcheck():
    net = small_net().to(dtype=np.float64).eval()
    x = tr.Tensor(distinct((2, 2, 4, 4), 2), requires_grad=True)
    params = net.parameters()

    def fn(x, *ps):
        return net(x)
    assert tr.gradcheck(fn, [x] + params)


def test_module_repr_lists_layers():
    text = repr(small_net())
    assert 'Conv2d(2, 3, kernel_size=(3, 3)' in text and 'Linear(in_features=12' in text


def test_check_state_dict_lists_every_problem():
    expected_shapes = {'features.0.weight': (64, 3, 3, 3), 'features.0.bias': (64,),
                       'classifier.6.weight': (21, 4096), 'classifier.6.bias': (21,)}
    given = {'features.0.weight': np.zeros((64, 3, 3, 3)), 'features.0.bias': np.zeros(32),
             'classifier.6.weight': np.zeros((1000, 4096)), 'fc.extra': np.zeros((2, 2))}
    with pytest.raises(ValueError) as info:
        tr.nn.check_state_dict(expected_shapes, given)
    assert str(info.value).splitlines() == [
        'state dict does not fit the model: 1 missing, 1 unexpected, 2 with the wrong shape',
        '  missing: classifier.6.bias (21,)',
        '  unexpected: fc.extra (2, 2)',
        '  wrong shape: features.0.bias: expected (64,), given (32,)',
        '  wrong shape: classifier.6.weight: expected (21, 4096), given (1000, 4096)',
    ]
    assert tr.nn.check_state_dict({'a': (2,), 'b': ()}, {'b': np.float32(1), 'a': np.ones(2)}) is None
