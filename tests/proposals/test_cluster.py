"""tinyrcnn/proposals/cluster.py: selective search on a Dask cluster (a LocalCluster of two worker
processes here) writes the very bytes of a local run, from the Python API and the CLI, and an
interrupted cluster run resumes; without dask.distributed, one clear error."""
import importlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tinyrcnn.data import VOCDetection, make_shapes_voc
from tinyrcnn.proposals import compute_dataset_proposals, dataset_proposals

cache = importlib.import_module('tinyrcnn.proposals.cache')
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODE, MAX = 'fast', 100
MISSING = "dask.distributed is not installed: pip install 'dask[distributed]'"


@pytest.fixture(scope='module')
def cluster():
    distributed = pytest.importorskip('distributed')
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as c:
        yield c


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """Eight small images and the file of a local one-process run: (root, its bytes)."""
    folder = tmp_path_factory.mktemp('cluster')
    root = make_shapes_voc(folder / 'data', 8, 0, seed=3, image_size=(48, 72))
    compute_dataset_proposals(VOCDetection(root, 'trainval'), folder / 'local.npz', MODE, MAX, workers=1)
    return root, (folder / 'local.npz').read_bytes()


def fresh_copy(data, tmp_path):
    """The data set in a folder of this test's own (the cluster's workers read it there)."""
    root = shutil.copytree(data[0], tmp_path / 'data')
    return VOCDetection(root, 'trainval')


def run_cli(*args):
    env = dict(os.environ, TINYRCNN_QUIET='1', PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, '-m', 'tinyrcnn', *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def test_a_cluster_writes_the_bytes_of_a_local_run(cluster, data, tmp_path):
    ds = fresh_copy(data, tmp_path)
    for chunk_size in (None, 1):
        path = tmp_path / f'dask{chunk_size}.npz'
        boxes = compute_dataset_proposals(ds, path, MODE, MAX, scheduler=cluster.scheduler_address,
                                          chunk_size=chunk_size)
        assert path.read_bytes() == data[1] and list(boxes) == ds.ids
        assert not os.path.exists(cache.parts_folder(path))


def test_the_cli_computes_on_a_scheduler(cluster, data, tmp_path):
    ds = fresh_copy(data, tmp_path)
    r = run_cli('proposals', '--data', ds.root, '--mode', MODE, '--max-proposals', str(MAX),
                '--scheduler', cluster.scheduler_address)
    assert r.returncode == 0, r.stderr
    assert '8 images' in r.stdout
    assert (tmp_path / 'data' / f'proposals_{MODE}_{MAX}.npz').read_bytes() == data[1]


def test_an_interrupted_cluster_run_resumes(cluster, data, tmp_path):
    """A corrupt image stops the run; the chunks that came back first are kept, and the rerun
    (through a Client object) sends only the missing images to the cluster."""
    distributed = pytest.importorskip('distributed')
    ds = fresh_copy(data, tmp_path)
    last = tmp_path / 'data' / 'JPEGImages' / (ds.ids[-1] + '.jpg')
    good = last.read_bytes()
    last.write_bytes(b'not a picture')
    with pytest.raises(ValueError):
        dataset_proposals(ds, ds.root, MODE, MAX, scheduler=cluster.scheduler_address)
    path = os.path.join(ds.root, f'proposals_{MODE}_{MAX}.npz')
    done = sorted(cache._read_parts(cache.parts_folder(path), MODE, MAX))
    assert not os.path.exists(path) and 1 <= len(done) <= len(ds) - 1 and ds.ids[-1] not in done
    last.write_bytes(good)
    with distributed.Client(cluster, set_as_default=False) as client:
        with distributed.get_task_stream(client) as tasks:
            compute_dataset_proposals(ds, path, MODE, MAX, scheduler=client, chunk_size=1)
        assert client.status == 'running'                 # a Client passed in is left open
    ran = [t for t in tasks.data if '_proposals_of_chunk' in str(t['key'])]
    assert len(ran) == len(ds) - len(done)
    assert (tmp_path / 'data' / f'proposals_{MODE}_{MAX}.npz').read_bytes() == data[1]


def test_without_dask_one_clear_error(tmp_path, monkeypatch):
    root = make_shapes_voc(tmp_path / 'data', 2, 0, seed=3, image_size=(48, 72))
    monkeypatch.setitem(sys.modules, 'distributed', None)          # import distributed fails
    with pytest.raises(ImportError, match=r"pip install 'dask\[distributed\]'"):
        dataset_proposals(VOCDetection(root, 'trainval'), root, MODE, MAX, scheduler='tcp://nowhere:8786')
    probe = ("import sys; sys.modules['distributed'] = None; from tinyrcnn.cli import main; "
             f"sys.exit(main(['proposals', '--data', {str(root)!r}, '--scheduler', 'tcp://nowhere:8786']))")
    env = dict(os.environ, TINYRCNN_QUIET='1', PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [f'error: {MISSING}'], r.stderr


def test_a_complete_cache_needs_no_cluster(data, tmp_path):
    ds = fresh_copy(data, tmp_path)
    path = tmp_path / 'done.npz'
    path.write_bytes(data[1])
    boxes = compute_dataset_proposals(ds, path, MODE, MAX, scheduler='tcp://nowhere:8786')
    assert sorted(boxes) == ds.ids and all(b.dtype == np.float32 for b in boxes.values())
