"""Turn the CuPy stand-in on and off: in this process (`standin()`), for a subprocess (`env()`),
and a fixture that gives a GPU test the real GPU where there is one, else the stand-in.

tinyrcnn imports CuPy lazily and caches the answer (`backend._cupy`, `cuda_available`,
`_module`): switching means changing sys.path and sys.modules and clearing those caches.
The stand-in is on only inside a GPU test, never for the whole session, so that everything
else (the demo's choice of device, "no GPU" errors) still sees the machine as it is.

    from cupy_standin.switch import standin
    with standin() as cupy:          # tr.cuda_available() is True in here
        ...
"""
import contextlib
import os
import shutil
import sys

import pytest

STANDIN = os.path.dirname(os.path.abspath(__file__))          # this folder holds cupy/, cupyx/
ROOT = os.path.dirname(os.path.dirname(STANDIN))


def _is_cupy_module(name):
    return name.split('.')[0] in ('cupy', 'cupyx', 'cupy_backends')


def _clear_caches():
    from tinyrcnn import backend
    for cached in (backend._cupy, backend.cuda_available, backend._module):
        cached.cache_clear()


def active():
    """True when `import cupy` gives the stand-in (switched on here or by PYTHONPATH)."""
    cupy = sys.modules.get('cupy')
    return cupy is not None and getattr(cupy, '__file__', '').startswith(STANDIN)


@contextlib.contextmanager
def _modules(replacement):
    """Within the block: sys.modules without any CuPy module but `replacement`'s (the caller
    may put the stand-in first on sys.path); tinyrcnn's caches cleared on both sides."""
    saved = {n: sys.modules.pop(n) for n in list(sys.modules) if _is_cupy_module(n)}
    sys.modules.update(replacement)
    _clear_caches()
    try:
        yield
    finally:
        for n in [n for n in sys.modules if _is_cupy_module(n)]:
            del sys.modules[n]
        sys.modules.update(saved)
        while STANDIN in sys.path:
            sys.path.remove(STANDIN)
        _clear_caches()


@contextlib.contextmanager
def standin():
    """The stand-in as `cupy` within the block (it yields the module)."""
    if active():
        import cupy
        yield cupy
        return
    with _modules({}):
        sys.path.insert(0, STANDIN)
        import cupy
        assert active(), cupy.__file__
        yield cupy


@contextlib.contextmanager
def without_cupy():
    """Within the block `import cupy` fails, as on a machine without CuPy."""
    with _modules({'cupy': None}):
        yield


def real_gpu():
    """True when the real CuPy imports and sees a GPU."""
    if active():
        return False
    from tinyrcnn import backend
    return backend.cuda_available()


def env(base=None):
    """Environment for a subprocess that imports the stand-in as cupy (and this checkout)."""
    env = dict(os.environ if base is None else base)
    env['PYTHONPATH'] = os.pathsep.join([STANDIN, ROOT] + [p for p in [env.get('PYTHONPATH')] if p])
    env.setdefault('TINYRCNN_QUIET', '1')
    return env


# The stand-in runs kernels through tinyrcnn/kernels/cpu.py, which compiles them with g++.
needs_compiler = pytest.mark.skipif(
    not os.environ.get('CXX') and not shutil.which('g++') and not shutil.which('c++'),
    reason='the CuPy stand-in builds the kernels with a C++ compiler, and there is none')


@pytest.fixture
def cuda_device():
    """'cupy' on a machine whose CuPy sees a GPU; else 'standin', switched on for this test."""
    if real_gpu():
        yield 'cupy'
        return
    if needs_compiler.args[0]:
        pytest.skip(needs_compiler.kwargs['reason'])
    with standin():
        yield 'standin'
