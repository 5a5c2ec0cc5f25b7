"""The package's structure: layers that point down, no import cycle, small files, and an import
that changes nothing. Imports are read with `ast` from the source, function-level ones too."""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, 'tinyrcnn')

# Lowest first. A module may import from its own layer and the ones before it. '' is the
# package's own __init__ (a lazy facade over everything).
LAYERS = [
    ('engine', ['backend', 'tensor', 'seed', 'ops', 'kernels', 'functional', 'nn', 'optim',
                'gradient_check']),
    ('shared', ['utils', 'checks', 'boxes', 'eval', 'viz', 'weights', 'torch_format', 'vgg',
                'data', 'proposals']),
    ('Fast R-CNN', ['fast_rcnn']),
    ('Faster R-CNN', ['faster_rcnn']),
    ('detector files', ['export']),
    ('training', ['train']),
    ('CPU speed paths', ['speed']),
    ('apps', ['cli', 'batch', 'demo', 'bench', 'gpucheck', 'models', '__main__', '']),
]
MAX_LINES = 350


def modules():
    """{'tinyrcnn.x.y': path} for every .py file of the package."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith('.py'):
                rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].split(os.sep)
                if rel[-1] == '__init__':
                    rel = rel[:-1]
                out['.'.join(rel)] = os.path.join(folder, f)
    return out


def imports(name, path, known):
    """The package modules that `name` imports anywhere in its source (inside functions too),
    plus the packages whose __init__ such an import runs first."""
    tree = ast.parse(open(path).read(), path)
    is_package = path.endswith('__init__.py')
    here = name.split('.') if is_package else name.split('.')[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (here[:len(here) - node.level + 1] if node.level else [])
            base = '.'.join(base + ([node.module] if node.module else []))
            targets = [f'{base}.{a.name}' if f'{base}.{a.name}' in known else base for a in node.names]
        else:
            continue
        for t in targets:
            if not t.startswith('tinyrcnn'):
                continue
            parts = t.split('.')
            for k in range(2, len(parts) + 1):       # a.b.c runs a.b's __init__ first
                parent = '.'.join(parts[:k])
                if parent in known and not name.startswith(parent + '.') and parent != name:
                    found.add(parent)
    return found


def layer_of(name):
    rest = name.split('.')[1:]
    top = rest[0] if rest else ''
    for rank, (_, tops) in enumerate(LAYERS):
        if top in tops:
            return rank
    raise AssertionError(f'{name} belongs to no layer: add it to LAYERS in {__file__}')


def graph():
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_every_import_points_down_or_sideways():
    wrong = [f'{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})'
             for a, targets in graph().items() for b in sorted(targets) if layer_of(b) > layer_of(a)]
    assert not wrong, 'upward imports:\n' + '\n'.join(wrong)


def test_no_import_cycle():
    edges = graph()
    cycles, state = [], {}

    def visit(node, path):                   # depth-first search for a back edge
        state[node] = 'open'
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 'open':
                cycles.append(' -> '.join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 'done'
    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, 'import cycles:\n' + '\n'.join(cycles)


def test_the_check_sees_function_level_imports(tmp_path):
    src = tmp_path / 'm.py'
    src.write_text('def f():\n    from ..train import loop\n    import tinyrcnn.demo\n')
    known = {'tinyrcnn.train', 'tinyrcnn.train.loop', 'tinyrcnn.demo', 'tinyrcnn.fast_rcnn.m'}
    assert imports('tinyrcnn.fast_rcnn.m', str(src), known) == {
        'tinyrcnn.train', 'tinyrcnn.train.loop', 'tinyrcnn.demo'}
    assert layer_of('tinyrcnn.train.loop') > layer_of('tinyrcnn.fast_rcnn.m')


def test_no_module_is_longer_than_a_sitting():
    long = {name: n for name, path in modules().items()
            if (n := sum(1 for _ in open(path))) > MAX_LINES}
    assert not long, f'modules over {MAX_LINES} lines: {long}'


@pytest.mark.parametrize('first', ['', 'import numpy; '])
def test_import_tinyrcnn_changes_nothing(first):
    """No environment variable, no allocator setting, not even NumPy: names load on use."""
    probe = (f'import os, sys; {first}e = dict(os.environ); import tinyrcnn as tr; '
             'assert e == dict(os.environ); '
             "assert not any(m.startswith(('tinyrcnn.', 'matplotlib', 'skimage')) for m in sys.modules); "
             "print('numpy' in sys.modules); tr.Tensor; tr.models.vgg16; "
             "assert 'tinyrcnn.speed' not in sys.modules and e == dict(os.environ)")
    out = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(bool(first))
