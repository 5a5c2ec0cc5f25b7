"""The chapter notebooks (notebooks/NN_name.py, jupytext percent scripts) and their executed copies.

`test_notebook_runs` (marked `notebooks`, the slow part of `make test`) executes every chapter on
the CPU with `notebooks/build.py`'s `execute`: a fresh kernel on this interpreter (so a fresh
clone works after `make test`, without `ipykernel install`), in a scratch working directory. A
chapter passes when every cell runs without error, it shows at least one figure and prints the
package code it explains (`inspect.getsource`). Durations are printed, not asserted: speed targets
belong in `tinyrcnn bench`.

The fast checks read files only. Every chapter ends with an "## Exercises" section whose check
cells run unanswered (`answer = None`); every chapter has its executed notebook
(notebooks/NN_name.ipynb, written by `make notebooks`) with the same cells, a figure, no machine
paths in its outputs, and under 1.5 MB; and no chapter assigns to an attribute of the package (a
module global or a class), so none switches a code path that way.

    .venv/bin/python -m pytest tests/test_notebooks.py -m notebooks       # execute the chapters
    .venv/bin/python -m pytest tests/test_notebooks.py -m "not notebooks" # the fast checks
"""
import ast
import importlib.util
import os

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location('notebook_build', os.path.join(ROOT, 'notebooks', 'build.py'))
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

NOTEBOOKS = build.chapters()
IDS = [os.path.basename(p) for p in NOTEBOOKS]
EXECUTED = sorted(p for p in os.listdir(os.path.join(ROOT, 'notebooks')) if p.endswith('.ipynb'))
REBUILD = 'rebuild it: `make notebooks CHAPTERS={}` (or .venv/bin/python notebooks/build.py {})'


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 9, f'expected the chapter notebooks in notebooks/, found {NOTEBOOKS}'


def _shows_package_code(nb):
    """Some code cell prints a function or class of tinyrcnn (its source starts with def/class)."""
    texts = [out.get('text', '') for cell in nb.cells if cell.cell_type == 'code'
             for out in cell.get('outputs', []) if out.get('name') == 'stdout']
    return any(line.startswith(('def ', 'class ', '    def ')) for t in texts for line in t.splitlines())


@pytest.mark.notebooks
@pytest.mark.parametrize('path', NOTEBOOKS, ids=IDS)
def test_notebook_runs(path, tmp_path, capsys):
    nb = build.read_chapter(path)
    assert nb.cells and nb.cells[0].cell_type == 'markdown', f'{path}: start with a markdown title'
    seconds = build.execute(nb, tmp_path)  # raises CellExecutionError, with the cell's traceback, on failure
    with capsys.disabled():
        print(f'\n  {os.path.basename(path)}: executed in {seconds:.1f} s')
    assert build.figures(nb), f'{path}: no figure (image/png output) was shown'
    assert _shows_package_code(nb), f'{path}: prints no package code (inspect.getsource)'


# ---- exercises --------------------------------------------------------------------------------

def exercise_checks(nb):
    """The check cells of the chapter's "## Exercises" section: code cells after its heading that
    set the reader's answer to None (`answer = None`), so that they run before it is given."""
    start = next((i for i, cell in enumerate(nb.cells) if cell.cell_type == 'markdown'
                  and cell.source.lstrip().startswith('## Exercises')), None)
    if start is None:
        return None
    checks = []
    for cell in nb.cells[start + 1:]:
        if cell.cell_type != 'code':
            continue
        tree = ast.parse(cell.source)
        if any(isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and node.value.value is None
               for node in tree.body):
            checks.append(cell)
    return checks


@pytest.mark.parametrize('path', NOTEBOOKS, ids=IDS)
def test_chapter_ends_with_exercises(path):
    checks = exercise_checks(build.read_chapter(path))
    assert checks is not None, f'{path}: no "## Exercises" section'
    assert len(checks) >= 2, (f'{path}: {len(checks)} exercise check cells; want at least 2 code cells after '
                              '"## Exercises" that start from `answer = None` and check the answer')


def test_exercise_checks_are_found():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('answer = None'),                           # before the section: not one
        nbformat.v4.new_markdown_cell('## Exercises\n\n1. Predict the shape.'),
        nbformat.v4.new_code_cell('answer = None  # your prediction\nprint("not yet")'),
        nbformat.v4.new_code_cell('print(1)'),
        nbformat.v4.new_code_cell('shape, count = None, None\nif shape is None:\n    print("hint")')])
    assert len(exercise_checks(nb)) == 1                                      # a tuple target is not a name
    nb.cells[-1].source = 'count = None\nif count is None:\n    print("hint")'
    assert len(exercise_checks(nb)) == 2
    assert exercise_checks(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell('# 1')])) is None


# ---- the executed notebooks (notebooks/NN_name.ipynb, from `make notebooks`) ---------------------

def test_every_chapter_has_its_executed_notebook():
    chapters = {os.path.basename(p)[:-3] for p in NOTEBOOKS}
    executed = {p[:-6] for p in EXECUTED}
    assert not executed - chapters, f'notebooks without a chapter .py (delete them): {sorted(executed - chapters)}'
    missing = sorted(chapters - executed)
    assert not missing, 'chapters without an executed notebook; ' + REBUILD.format(' '.join(missing), ' '.join(missing))


@pytest.mark.parametrize('path', NOTEBOOKS, ids=IDS)
def test_executed_notebook_matches_its_chapter(path):
    ipynb = path[:-3] + '.ipynb'
    name = os.path.basename(path)[:-3]
    if not os.path.exists(ipynb):
        pytest.fail(f'{ipynb} is missing; ' + REBUILD.format(name, name))
    size = os.path.getsize(ipynb)
    assert size < build.MAX_NOTEBOOK_BYTES, f'{ipynb}: {size / 1e6:.2f} MB, at most 1.5 MB'
    nb = nbformat.read(ipynb, as_version=4)
    nbformat.validate(nb)
    assert build.cells(nb) == build.cells(build.read_chapter(path)), \
        f'{ipynb} is stale: its cells differ from {os.path.basename(path)}; ' + REBUILD.format(name, name)
    code = [cell for cell in nb.cells if cell.cell_type == 'code']
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), \
        f'{ipynb}: not executed top to bottom in one run; ' + REBUILD.format(name, name)
    assert not [o for cell in code for o in cell.outputs if o.output_type == 'error'], f'{ipynb}: an error output'
    assert build.figures(nb), f'{ipynb}: no figure (image/png output)'
    assert not build.machine_paths(nb), f'{ipynb}: outputs name machine paths: {build.machine_paths(nb)[:3]}'
    assert nb.metadata.get('kernelspec', {}).get('name') == 'python3', f'{ipynb}: a machine-specific kernel'
    assert not any('execution' in cell.metadata for cell in nb.cells), f'{ipynb}: execution timings kept'
    for cell in exercise_checks(nb) or []:
        assert any(o.get('name') == 'stdout' and o.text.strip() for o in cell.outputs), \
            f'{ipynb}: an exercise check printed nothing when unanswered:\n{cell.source}'


def test_machine_paths_are_caught_and_scrubbed(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('print(1)')])
    nb.cells[0].outputs = [nbformat.v4.new_output('stream', name='stdout', text=(
        f'{tmp_path}/x.jpg {build.ROOT}/tinyrcnn/nn.py {os.path.expanduser("~")}/data <Module at 0x7f3a2b1c9d10>\n'))]
    assert build.machine_paths(nb)
    build.clean(nb, 'notebooks/00_x.py', str(tmp_path))
    text = nb.cells[0].outputs[0].text
    assert not build.machine_paths(nb), text
    assert text.startswith('<scratch>/x.jpg <repo>/tinyrcnn/nn.py') and '0x...' in text, text
    assert build.machine_paths(nbformat.from_dict({'cells': [{'cell_type': 'code', 'outputs': [
        {'output_type': 'stream', 'name': 'stderr', 'text': 'see /tmp/tinyrcnn-ch4-abc/x'}]}]}))


def test_figures_are_stored_losslessly():
    import base64
    import io

    import numpy as np
    from PIL import Image
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 4), dtype=np.uint8)
    for alpha, mode in ((255, 'RGB'), (128, 'RGBA')):                   # transparent figures keep alpha
        pixels[..., 3] = alpha
        png = io.BytesIO()
        Image.fromarray(pixels, 'RGBA').save(png, 'png')
        out = Image.open(io.BytesIO(base64.b64decode(build._opaque_png(base64.b64encode(png.getvalue()).decode()))))
        assert out.mode == mode and np.array_equal(np.asarray(out), pixels[..., :len(mode)])


# ---- a static check ---------------------------------------------------------------------------

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


@pytest.mark.parametrize('path', NOTEBOOKS, ids=IDS)
def test_no_chapter_patches_the_package(path):
    assert not assignments_to_the_package(open(path).read()), path
    assert assignments_to_the_package('from tinyrcnn.speed import winograd\nwinograd.MIN = 1\n')
