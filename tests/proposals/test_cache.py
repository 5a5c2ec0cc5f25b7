"""tinyrcnn/proposals/cache.py: a data set's selective-search boxes computed once, cached by
image id and settings, recomputed only where missing."""
import importlib

import numpy as np
import pytest

from tinyrcnn.proposals import compute_dataset_proposals, dataset_proposals, selective_search

cache = importlib.import_module('tinyrcnn.proposals.cache')   # the module, not the function


class _Toy:
    """A tiny dataset: three 40 x 60 images of coloured blocks."""

    def __init__(self, n=3, with_ids=True):
        rng = np.random.default_rng(1)
        self.items = [{'image': np.kron(rng.integers(0, 256, (4, 6, 3)), np.ones((10, 10, 1))).astype(np.uint8),
                       'id': f'{i:06d}'} for i in range(n)]
        if with_ids:
            self.ids = [item['id'] for item in self.items]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_dataset_proposals_are_cached(tmp_path, monkeypatch):
    path = tmp_path / 'proposals.npz'
    ds = _Toy(with_ids=False)
    first = compute_dataset_proposals(ds, path, mode='single', max_proposals=50, workers=2)   # two processes
    assert path.exists() and sorted(first) == ['000000', '000001', '000002']
    for item in ds.items:
        assert np.array_equal(first[item['id']], selective_search(item['image'], 'single', 50))

    def refuse(*args, **kwargs):
        raise AssertionError('recomputed a cached image')
    monkeypatch.setattr(cache, 'selective_search', refuse)
    again = compute_dataset_proposals(_Toy(), path, mode='single', max_proposals=50)
    assert all(np.array_equal(again[k], first[k]) and again[k].dtype == np.float32 for k in first)

    calls = []
    monkeypatch.setattr(cache, 'selective_search', lambda image, mode, n: calls.append(mode) or np.zeros((1, 4), np.float32))
    compute_dataset_proposals(_Toy(4), path, mode='single', max_proposals=50, workers=1)    # one new image
    assert len(calls) == 1
    compute_dataset_proposals(_Toy(4), path, mode='single', max_proposals=20, workers=1)    # other settings
    assert len(calls) == 5


def test_unreadable_cache_names_the_file(tmp_path):
    path = tmp_path / 'broken.npz'
    path.write_bytes(b'not a zip file')
    with pytest.raises(ValueError, match='broken.npz'):
        compute_dataset_proposals(_Toy(), path, mode='single')


def test_dataset_proposals_keeps_its_cache_in_the_data_folder(tmp_path):
    boxes = dataset_proposals(_Toy(2), tmp_path, mode='single', max_proposals=30)
    assert (tmp_path / 'proposals_single_30.npz').exists() and sorted(boxes) == ['000000', '000001']
    assert all(len(b) <= 30 for b in boxes.values())
