"""Execute every chapter notebook (notebooks/NN_name.py, jupytext percent scripts) on the CPU.

Each script is converted to a notebook in memory and run top to bottom by a fresh kernel on this
interpreter (so a fresh clone works after `make test`, without `ipykernel install`), in a scratch
working directory. A notebook passes when every cell runs without error and it shows at least
one figure. Durations are printed, not asserted: speed targets belong in `tinyrcnn bench`.

    .venv/bin/python -m pytest tests/test_notebooks.py -m notebooks
    .venv/bin/python -m pytest tests -m "not notebooks"        # everything else
"""
import glob
import json
import os
import sys
import time

import jupytext
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, 'notebooks', '[0-9][0-9]_*.py')))
KERNEL = 'tinyrcnn-notebook-test'
CELL_TIMEOUT = 300  # seconds per cell: catches a hung cell, leaves room on a slow shared CI box

pytestmark = pytest.mark.notebooks


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 9, f'expected the chapter notebooks in notebooks/, found {NOTEBOOKS}'


@pytest.fixture(scope='module')
def kernel_dir(tmp_path_factory):
    """A kernelspec that runs ipykernel on *this* interpreter, whatever else is installed."""
    base = tmp_path_factory.mktemp('jupyter')
    spec = base / 'kernels' / KERNEL
    spec.mkdir(parents=True)
    (spec / 'kernel.json').write_text(json.dumps({
        'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
        'display_name': 'tinyrcnn tests', 'language': 'python'}))
    return str(base)


def _has_figure(nb):
    return any('image/png' in out.get('data', {})
               for cell in nb.cells if cell.cell_type == 'code' for out in cell.get('outputs', []))


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, kernel_dir, monkeypatch, capsys):
    monkeypatch.setenv('JUPYTER_PATH', kernel_dir)  # where the kernelspec above is looked up
    nb = jupytext.read(path, fmt='py:percent')
    assert nb.cells and nb.cells[0].cell_type == 'markdown', f'{path}: start with a markdown title'
    env = dict(os.environ, TINYRCNN_QUIET='1', TMPDIR=str(tmp_path),  # notebooks' scratch files too
               # figures must come back as PNG outputs: the inline backend renders with Agg
               MPLBACKEND='module://matplotlib_inline.backend_inline',
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL,
                            resources={'metadata': {'path': str(tmp_path)}})
    start = time.perf_counter()
    client.execute(env=env)  # raises CellExecutionError, with the cell's traceback, on failure
    seconds = time.perf_counter() - start
    with capsys.disabled():
        print(f'\n  {os.path.basename(path)}: executed in {seconds:.1f} s')
    assert _has_figure(nb), f'{path}: no figure (image/png output) was shown'
