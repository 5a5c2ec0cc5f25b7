"""tinyrcnn/proposals/cache.py, resuming: finished chunks go to `<cache>.parts/` as they complete,
an interrupted run computes only what is missing, and the final file's bytes never depend on how
it was made (one process, two, interrupted, killed, splits in either order)."""
import importlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinyrcnn.data import VOCDetection, make_shapes_voc
from tinyrcnn.proposals import compute_dataset_proposals, selective_search

cache = importlib.import_module('tinyrcnn.proposals.cache')   # the module, not the function
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODE, MAX = 'fast', 100                   # about 0.07 s an image at 48..72 pixels


def small_voc(root, num_train=8, num_test=0):
    return make_shapes_voc(root, num_train, num_test, seed=3, image_size=(48, 72))


def reference(ds, path):
    """The file of a plain uninterrupted run: one process, in this one."""
    compute_dataset_proposals(ds, path, MODE, MAX, workers=1)
    return path.read_bytes()


def sidecar_ids(path):
    return sorted(cache._read_parts(cache.parts_folder(path), MODE, MAX))


def counting(monkeypatch, fail_after=None):
    """Replace the per-image selective search by one that counts its calls (and raises after
    `fail_after` of them: a run stopped half-way)."""
    calls = []

    def search(image, mode, n):
        if fail_after is not None and len(calls) >= fail_after:
            raise RuntimeError('stopped half-way')
        calls.append(1)
        return selective_search(image, mode, n)
    monkeypatch.setattr(cache, 'selective_search', search)
    return calls


def test_one_process_or_two_write_the_same_bytes(tmp_path):
    ds = VOCDetection(small_voc(tmp_path / 'data'), 'trainval')
    want = reference(ds, tmp_path / 'one.npz')
    for k, chunk_size in enumerate([None, 1, 3]):
        path = tmp_path / f'two{k}.npz'
        boxes = compute_dataset_proposals(ds, path, MODE, MAX, workers=2, chunk_size=chunk_size)
        assert path.read_bytes() == want, chunk_size
        assert list(boxes) == ds.ids and not os.path.exists(cache.parts_folder(path))
    with np.load(tmp_path / 'one.npz') as z:             # the documented order: settings, sorted ids
        assert z.files == ['__mode__', '__max_proposals__'] + sorted(ds.ids)


@pytest.mark.parametrize('chunk_size,fail_after,done', [(1, 3, 3), (2, 3, 2), (3, 7, 6)])
def test_an_interrupted_run_computes_only_the_missing_images(tmp_path, monkeypatch, chunk_size,
                                                             fail_after, done):
    ds = VOCDetection(small_voc(tmp_path / 'data'), 'trainval')
    want = reference(ds, tmp_path / 'whole.npz')
    path = tmp_path / 'cut.npz'
    counting(monkeypatch, fail_after)
    with pytest.raises(RuntimeError, match='half-way'):
        compute_dataset_proposals(ds, path, MODE, MAX, workers=1, chunk_size=chunk_size)
    assert not path.exists() and sidecar_ids(path) == ds.ids[:done]    # whole chunks only
    calls = counting(monkeypatch)
    compute_dataset_proposals(ds, path, MODE, MAX, workers=1, chunk_size=chunk_size)
    assert len(calls) == len(ds) - done
    assert path.read_bytes() == want and not os.path.exists(cache.parts_folder(path))


def test_an_interrupted_two_process_run_resumes(tmp_path, monkeypatch):
    """A bad image stops a 2-process run (fork: the children see the patch); whatever chunks
    finished are kept, and the rerun computes just the rest."""
    ds = VOCDetection(small_voc(tmp_path / 'data'), 'trainval')
    want = reference(ds, tmp_path / 'whole.npz')
    path = tmp_path / 'cut.npz'
    bad = ds[len(ds) - 1]['image']

    def search(image, mode, n):
        if np.array_equal(image, bad):
            time.sleep(0.3)                              # the other chunks finish first
            raise ValueError('a bad image')
        return selective_search(image, mode, n)
    monkeypatch.setattr(cache, 'selective_search', search)
    with pytest.raises(ValueError, match='a bad image'):
        compute_dataset_proposals(ds, path, MODE, MAX, workers=2, chunk_size=1)
    done = sidecar_ids(path)
    assert 1 <= len(done) <= len(ds) - 1 and ds.ids[-1] not in done
    calls = counting(monkeypatch)
    compute_dataset_proposals(ds, path, MODE, MAX, workers=1)
    assert len(calls) == len(ds) - len(done)
    assert path.read_bytes() == want


def test_a_killed_process_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    """SIGKILL to `python -m tinyrcnn proposals` (and its pool) once the sidecar has files."""
    data = small_voc(tmp_path / 'data', num_train=16)
    ds = VOCDetection(data, 'trainval')
    want = reference(ds, tmp_path / 'whole.npz')
    path = tmp_path / 'data' / f'proposals_{MODE}_{MAX}.npz'
    env = dict(os.environ, TINYRCNN_QUIET='1', PYTHONPATH=ROOT)
    cmd = [sys.executable, '-m', 'tinyrcnn', 'proposals', '--data', str(data), '--mode', MODE,
           '--max-proposals', str(MAX)]
    for attempt in range(3):                    # killed before the end (a fast machine may finish)
        victim = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 60
            while len(sidecar_ids(path)) < 2 and victim.poll() is None and time.time() < deadline:
                time.sleep(0.005)
        finally:
            os.killpg(victim.pid, signal.SIGKILL)         # the CLI and its worker processes
            victim.wait()
        if not path.exists():
            break
        path.unlink()
    assert not path.exists(), 'never caught the run before its end'
    done = sidecar_ids(path)
    assert 2 <= len(done) < len(ds)
    with open(os.path.join(cache.parts_folder(path), '.x.npz.tmp'), 'wb') as f:
        f.write(b'half a wri')                             # a write that was killed
    calls = counting(monkeypatch)
    compute_dataset_proposals(ds, path, MODE, MAX, workers=1)     # one process: calls counted here
    assert len(calls) == len(ds) - len(done)
    assert path.read_bytes() == want and not os.path.exists(cache.parts_folder(path))


def test_a_sidecar_of_finished_chunks_is_assembled_without_computing(tmp_path, monkeypatch):
    """Killed after the last chunk but before the final write; parts of other settings ignored."""
    ds = VOCDetection(small_voc(tmp_path / 'data', num_train=4), 'trainval')
    want = reference(ds, tmp_path / 'whole.npz')
    path = tmp_path / 'cut.npz'
    boxes = compute_dataset_proposals(ds, tmp_path / 'whole.npz', MODE, MAX)
    parts = cache.parts_folder(path)
    for image_id, b in boxes.items():
        cache._write_part(parts, {image_id: b}, MODE, MAX)
    cache._write_part(parts, {'999999': np.zeros((1, 4), np.float32)}, 'single', MAX)
    calls = counting(monkeypatch)
    compute_dataset_proposals(ds, path, MODE, MAX)
    assert calls == [] and path.read_bytes() == want and not os.path.exists(parts)


def test_other_splits_are_kept_and_the_order_of_runs_does_not_matter(tmp_path):
    root = small_voc(tmp_path / 'data', num_train=4, num_test=3)
    trainval, test = VOCDetection(root, 'trainval'), VOCDetection(root, 'test')
    a, b = tmp_path / 'a.npz', tmp_path / 'b.npz'
    compute_dataset_proposals(trainval, a, MODE, MAX, workers=1)
    compute_dataset_proposals(test, a, MODE, MAX, workers=2)
    compute_dataset_proposals(test, b, MODE, MAX, workers=1)
    compute_dataset_proposals(trainval, b, MODE, MAX, workers=2)
    assert a.read_bytes() == b.read_bytes()
    with np.load(a) as z:
        assert z.files[2:] == sorted(trainval.ids + test.ids)


def test_a_bad_chunk_size_is_refused_before_any_work(tmp_path):
    ds = VOCDetection(small_voc(tmp_path / 'data', num_train=2), 'trainval')
    with pytest.raises(ValueError, match='chunk_size'):
        compute_dataset_proposals(ds, tmp_path / 'p.npz', MODE, MAX, chunk_size=0)
