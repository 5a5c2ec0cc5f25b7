"""tinyrcnn/weights.py: weights files read by content (.npz or torch.save), tinyrcnn's .npz
written atomically and byte-reproducibly, conversion."""
import os
import pickle

import numpy as np
import pytest

from tinyrcnn.weights import convert_weights, load_weights, save_npz
from helpers import FIXTURES as DATA, assert_same, expected, one_line_error


def test_npz_is_read_by_content_not_name(tmp_path):
    disguised = tmp_path / 'weights.pth'
    disguised.write_bytes(open(os.path.join(DATA, 'vgg_tiny.npz'), 'rb').read())
    assert_same(load_weights(disguised), expected('vgg_tiny.npz'))
    legacy_as_npz = tmp_path / 'legacy.npz'
    legacy_as_npz.write_bytes(open(os.path.join(DATA, 'vgg_tiny_legacy.pth'), 'rb').read())
    assert_same(load_weights(legacy_as_npz), expected('vgg_tiny.npz'))


def test_convert_and_save_npz_round_trip(tmp_path):
    out = tmp_path / 'sub' / 'vgg.npz'
    assert convert_weights(os.path.join(DATA, 'views_legacy.pth'), out) == 20
    assert_same(load_weights(out), expected('views.npz'))
    assert sorted(os.listdir(out.parent)) == ['vgg.npz']  # the temporary file is gone
    # names that np.savez(**kw) would take as its own arguments still round-trip
    sd = {'file': np.arange(3.0), 'allow_pickle': np.eye(2, dtype=np.int64), 'a.b': np.zeros(())}
    save_npz(sd, out)
    assert_same(load_weights(out), sd)


def test_save_npz_same_weights_same_bytes(tmp_path, monkeypatch):
    # no wall-clock time in the archive: the sha256 of a saved model witnesses its weights
    import time
    sd = {'w': np.arange(6, dtype=np.float32).reshape(2, 3), 'b': np.zeros(2)}
    save_npz(sd, tmp_path / 'a.npz')
    monkeypatch.setattr(time, 'time', lambda: 2e9)            # another day
    monkeypatch.setattr(time, 'localtime', lambda *a: (2033, 5, 18, 3, 33, 20, 2, 138, 0))
    save_npz(sd, tmp_path / 'b.npz')
    assert (tmp_path / 'a.npz').read_bytes() == (tmp_path / 'b.npz').read_bytes()


def test_save_npz_refuses_objects_and_keeps_old_file(tmp_path):
    out = tmp_path / 'w.npz'
    save_npz({'a': np.ones(2, np.float32)}, out)
    with pytest.raises(ValueError, match='numeric'):
        save_npz({'a': np.array([None, 1], dtype=object)}, out)
    assert_same(load_weights(out), {'a': np.ones(2, np.float32)})


@pytest.mark.parametrize('content', [
    np.random.default_rng(0).bytes(4096),
    b'\x80' + np.random.default_rng(1).bytes(100),  # looks like the start of a pickle
    b'conv1.weight 0.1 0.2\n' * 20,
    pickle.dumps({'w': [1.0, 2.0]}, protocol=2),  # a pickle, but not torch's
    b'',
])
def test_not_a_weights_file(tmp_path, content):
    path = tmp_path / 'bad.pth'
    path.write_bytes(content)
    msg = one_line_error(path)
    assert 'not a weights file' in msg and 'torch.save' in msg and '.npz' in msg


def test_missing_file(tmp_path):
    msg = one_line_error(tmp_path / 'nope.pth', FileNotFoundError)
    assert 'not found' in msg
