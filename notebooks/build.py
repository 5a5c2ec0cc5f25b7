"""Build the executed chapters: notebooks/NN_name.ipynb, with outputs, from notebooks/NN_name.py.

The .py files (jupytext percent scripts) are the source; the .ipynb files are what a reader
opens on GitHub to read a chapter without running it. Each chapter is converted with jupytext,
run top to bottom on the CPU by a fresh kernel on this interpreter (a kernelspec written into a
scratch directory, so nothing is installed), in a scratch working directory, then cleaned so that
a rebuild diffs only where the results moved:

* figures are PNGs at FIGURE_DPI (a matplotlibrc in the scratch directory, not a notebook cell),
  stored without their alpha channel when it is opaque (lossless, about 15 % smaller);
* cell ids come from the cells' contents, not at random; execution times, kernel and jupytext
  metadata are dropped; stdout and stderr are coalesced into one output each;
* machine paths (the scratch directory, the temporary directory, the repository, the home
  directory) are replaced by placeholders, object addresses (0x7f...) by 0x..., and a text
  output longer than MAX_OUTPUT_CHARS is cut.

    .venv/bin/python notebooks/build.py                  # every chapter (5-8 minutes)
    .venv/bin/python notebooks/build.py 02 06_detection  # only some: a number, a name or a path

tests/test_notebooks.py executes the chapters with the same `execute` and checks that every
.ipynb matches its .py (`make notebooks` rebuilds them).
"""
import argparse
import base64
import contextlib
import glob
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time

import jupytext
import nbformat
import numpy as np
from nbclient import NotebookClient
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
KERNEL = 'tinyrcnn-notebooks'
CELL_TIMEOUT = 300            # seconds per cell: catches a hung cell, leaves room on a slow shared box
FIGURE_DPI = 80               # PNG figures: legible, and a chapter stays well below MAX_NOTEBOOK_BYTES
MAX_OUTPUT_CHARS = 20_000     # one text output; more is cut (a chapter should print summaries)
MAX_NOTEBOOK_BYTES = 1_500_000
# what a machine path looks like in an output (checked after cleaning, by the build and the test)
MACHINE_PATH = re.compile(r'(/work/|/tmp/|/home/|/root/|/Users/|/private/var/|/var/folders/|[A-Za-z]:\\)')
ADDRESS = re.compile(r'\b0x[0-9a-fA-F]{6,}\b')


def chapters(names=()):
    """The chapter sources notebooks/NN_name.py, all of them or those named ('02', '02_roi_pooling',
    'roi_pooling', 'notebooks/02_roi_pooling.py')."""
    paths = sorted(glob.glob(os.path.join(HERE, '[0-9][0-9]_*.py')))
    if not names:
        return paths
    chosen = []
    for name in names:
        stem = os.path.splitext(os.path.basename(name))[0]
        found = [p for p in paths if os.path.basename(p)[:-3] == stem or os.path.basename(p)[:2] == stem
                 or os.path.basename(p)[3:-3] == stem]
        if len(found) != 1:
            raise SystemExit(f'no single chapter matches {name!r}; chapters: '
                             + ', '.join(os.path.basename(p) for p in paths))
        chosen += [p for p in found if p not in chosen]
    return chosen


def read_chapter(path):
    """The chapter as an nbformat notebook, without outputs (jupytext's conversion)."""
    return jupytext.read(path, fmt='py:percent')


def cells(nb):
    """(cell type, source) of every cell: what a .py and its .ipynb must share."""
    return [(cell.cell_type, cell.source) for cell in nb.cells]


@contextlib.contextmanager
def _kernelspec(base):
    """A kernelspec that runs ipykernel on *this* interpreter, whatever else is installed, found
    through JUPYTER_PATH while the block runs."""
    spec = os.path.join(base, 'jupyter', 'kernels', KERNEL)
    os.makedirs(spec, exist_ok=True)
    with open(os.path.join(spec, 'kernel.json'), 'w') as f:
        json.dump({'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}',
                            '--IPKernelApp.log_level=ERROR'],   # no TCP warning on every run
                   'display_name': 'tinyrcnn chapters', 'language': 'python'}, f)
    old = os.environ.get('JUPYTER_PATH')
    os.environ['JUPYTER_PATH'] = os.pathsep.join([os.path.join(base, 'jupyter')] + ([old] if old else []))
    try:
        yield
    finally:
        if old is None:
            del os.environ['JUPYTER_PATH']
        else:
            os.environ['JUPYTER_PATH'] = old


def execute(nb, workdir):
    """Run every cell of `nb` in place, in `workdir` (scratch: the chapters' temporary files go
    there too). Returns the seconds it took; raises CellExecutionError, with the cell's
    traceback, when a cell fails."""
    workdir = os.path.abspath(workdir)
    rc = os.path.join(workdir, 'matplotlibrc')        # read by the kernel's matplotlib, not part of the notebook
    with open(rc, 'w') as f:
        f.write(f'figure.dpi: {FIGURE_DPI}\nsavefig.dpi: {FIGURE_DPI}\n')
    tmp = os.path.join(workdir, 'tmp')
    os.makedirs(tmp, exist_ok=True)
    env = dict(os.environ, TINYRCNN_QUIET='1', TMPDIR=tmp, MATPLOTLIBRC=rc,
               # figures must come back as PNG outputs: the inline backend renders with Agg
               MPLBACKEND='module://matplotlib_inline.backend_inline',
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL, record_timing=False,
                            coalesce_streams=True, resources={'metadata': {'path': workdir}})
    with _kernelspec(workdir):
        start = time.perf_counter()
        client.execute(env=env)
    return time.perf_counter() - start


def _places(workdir):
    """(path, placeholder), longest first, for every spelling of the machine's paths."""
    places = {}
    for path, name in ((workdir, '<scratch>'), (tempfile.gettempdir(), '<tmp>'), (ROOT, '<repo>'),
                       (sys.prefix, '<python>'), (os.path.expanduser('~'), '~')):
        if path and len(path) > 1:
            for spelling in {path, os.path.realpath(path)}:
                places.setdefault(spelling.rstrip(os.sep), name)
    return sorted(places.items(), key=lambda kv: -len(kv[0]))


def _scrub(text, places):
    for path, name in places:
        text = text.replace(path, name)
    text = ADDRESS.sub('0x...', text)
    if len(text) > MAX_OUTPUT_CHARS:
        cut = len(text) - MAX_OUTPUT_CHARS
        text = text[:MAX_OUTPUT_CHARS] + f'\n... ({cut} more characters cut by notebooks/build.py)\n'
    return text


def _opaque_png(data):
    """A base64 PNG without its alpha channel when every pixel is opaque (matplotlib's Agg always
    writes RGBA), re-compressed; the pixels are unchanged."""
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    if image.mode != 'RGBA' or np.asarray(image)[..., 3].min() < 255:
        return data
    out = io.BytesIO()
    image.convert('RGB').save(out, 'png', optimize=True)
    return base64.b64encode(out.getvalue()).decode('ascii')


def clean(nb, source, workdir):
    """Make an executed notebook reproducible and free of this machine: see the module docstring."""
    places = _places(os.path.abspath(workdir))
    nb.metadata = nbformat.NotebookNode({
        'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'},
        'language_info': {'name': 'python'},
        'tinyrcnn': {'source': f'notebooks/{os.path.basename(source)}',
                     'built_by': 'notebooks/build.py (make notebooks): edit the .py, not this file'}})
    seen = set()
    for cell in nb.cells:
        digest = hashlib.sha1(f'{cell.cell_type}\n{cell.source}'.encode()).hexdigest()[:12]
        cell_id, n = digest, 1
        while cell_id in seen:                           # two identical cells
            n += 1
            cell_id = f'{digest}-{n}'
        seen.add(cell_id)
        cell.id = cell_id
        cell.metadata = nbformat.NotebookNode({k: v for k, v in cell.metadata.items() if k == 'tags'})
        for output in cell.get('outputs', []):
            if 'text' in output:
                output.text = _scrub(output.text, places)
            if 'traceback' in output:
                output.traceback = [_scrub(line, places) for line in output.traceback]
            for mime, value in output.get('data', {}).items():
                if mime == 'image/png':
                    output.data[mime] = _opaque_png(value)
                elif mime.startswith('text/') and isinstance(value, str):
                    output.data[mime] = _scrub(value, places)
    return nb


def texts(nb):
    """Every text of every output (streams, text/* data, tracebacks)."""
    for cell in nb.cells:
        for output in cell.get('outputs', []):
            if 'text' in output:
                yield output.text
            yield from output.get('traceback', [])
            yield from (v for m, v in output.get('data', {}).items() if m.startswith('text/') and isinstance(v, str))


def machine_paths(nb):
    """The output lines that still name a place on this machine (empty when the notebook is clean)."""
    return [line.strip() for text in texts(nb) for line in text.splitlines() if MACHINE_PATH.search(line)]


def figures(nb):
    """How many PNG figures the outputs hold."""
    return sum('image/png' in out.get('data', {}) for cell in nb.cells for out in cell.get('outputs', []))


def build(path):
    """Execute one chapter in a scratch directory and write its .ipynb beside it; returns
    (the .ipynb's path, seconds, bytes)."""
    nb = read_chapter(path)
    workdir = tempfile.mkdtemp(prefix='tinyrcnn-build-')
    try:
        seconds = execute(nb, workdir)
        clean(nb, path, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    nbformat.validate(nb)
    text = nbformat.writes(nb) + '\n'
    leaks = machine_paths(nb)
    if leaks:
        raise RuntimeError(f'{path}: outputs name machine paths, e.g. {leaks[:3]}')
    if not figures(nb):
        raise RuntimeError(f'{path}: no figure (image/png output)')
    out = os.path.splitext(path)[0] + '.ipynb'
    size = len(text.encode())
    if size > MAX_NOTEBOOK_BYTES:
        raise RuntimeError(f'{path}: the executed notebook would be {size / 1e6:.2f} MB '
                           f'(at most {MAX_NOTEBOOK_BYTES / 1e6:.1f} MB): fewer or smaller figures, shorter prints')
    with open(out, 'w', encoding='utf-8') as f:
        f.write(text)
    return out, seconds, size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('chapters', nargs='*',
                        help="chapters to rebuild ('02', '02_roi_pooling', a path); default: all")
    args = parser.parse_args(argv)
    failed = []
    for path in chapters(args.chapters):
        name = os.path.basename(path)
        print(f'{name:28s} ', end='', flush=True)
        try:
            out, seconds, size = build(path)
        except Exception as e:                            # report it, build the others, fail at the end
            print(f'FAILED\n{e}', flush=True)
            failed.append(name)
            continue
        print(f'{seconds:6.1f} s  {size / 1e3:7.0f} kB  -> notebooks/{os.path.basename(out)}', flush=True)
    if failed:
        raise SystemExit(f'failed: {", ".join(failed)}')


if __name__ == '__main__':
    main()
