"""Execute every chapter notebook (notebooks/NN_name.py, jupytext percent scripts) on the CPU.

Each script is converted to a notebook in memory and run top to bottom by a fresh kernel on this
interpreter (so a fresh clone works after `make test`, without `ipykernel install`), in a scratch
working directory. A notebook passes when every cell runs without error, it shows at least one
figure and prints the package code it explains (`inspect.getsource`). Durations are printed,
not asserted: speed targets belong in `tinyrcnn bench`. A static check: no chapter assigns to
an attribute of the package (a module global or a class), so none switches a code path that way.

    .venv/bin/python -m pytest tests/test_notebooks.py -m notebooks
    .venv/bin/python -m pytest tests -m "not notebooks"        # everything else
"""
import ast
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


def _shows_package_code(nb):
    """Some code cell prints a function or class of tinyrcnn (its source starts with def/class)."""
    texts = [out.get('text', '') for cell in nb.cells if cell.cell_type == 'code'
             for out in cell.get('outputs', []) if out.get('name') == 'stdout']
    return any(line.startswith(('def ', 'class ', '    def ')) for t in texts for line in t.splitlines())


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
    assert _shows_package_code(nb), f'{path}: prints no package code (inspect.getsource)'


def package_names(tree):
    """Names bound by `import tinyrcnn...` or `from tinyrcnn... import ...` in a module."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split('.')[0] for a in node.names if a.name.startswith('tinyrcnn')}
        elif isinstance(node, ast.ImportFrom) and (node.module or '').startswith('tinyrcnn'):
            names |= {a.asname or a.name for a in node.names}
    return names


def assignments_to_the_package(source):
    """`x.attr = ...` (or +=) where x is a name imported from tinyrcnn: a patched global."""
    tree = ast.parse(source)
    names, found = package_names(tree), []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AugAssign) else [])
        for t in targets:
            root = t
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(t, ast.Attribute) and isinstance(root, ast.Name) and root.id in names:
                found.append(f'line {node.lineno}: {ast.unparse(t)}')
    return found


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_no_chapter_patches_the_package(path):
    assert not assignments_to_the_package(open(path).read()), path
    assert assignments_to_the_package('from tinyrcnn.speed import winograd\nwinograd.MIN = 1\n')
