"""Build a tinyrcnn `.cu` file for the CPU and call its kernels through ctypes.

The compatibility header (`compat.h`) turns a launch into a single thread that walks every
work item (see `common.cuh`), so the very source CuPy compiles for the GPU is exercised by the
CPU test suite. Used by the tests and by the RoI-pooling notebook; needs a C++ compiler (g++).
"""
import os
import ctypes
import hashlib
import shutil
import subprocess
import tempfile
import numpy as np

from ..backend import KERNEL_DIR

_CACHE = {}


def compiler():
    """The C++ compiler used for CPU builds, or None."""
    return os.environ.get('CXX') or shutil.which('g++') or shutil.which('c++')


def build(filename, dtype=np.float64):
    """Compile `kernels/filename` with scalar_t = dtype; return the loaded ctypes library."""
    ctype = {np.dtype(np.float32): 'float', np.dtype(np.float64): 'double'}[np.dtype(dtype)]
    path = os.path.join(KERNEL_DIR, filename)
    with open(path, 'rb') as f:
        source = f.read()
    with open(os.path.join(KERNEL_DIR, 'compat.h'), 'rb') as f:
        compat = f.read()
    with open(os.path.join(KERNEL_DIR, 'common.cuh'), 'rb') as f:
        common = f.read()
    key = hashlib.sha1(source + compat + common + ctype.encode()).hexdigest()[:16]
    if key in _CACHE:
        return _CACHE[key]
    cxx = compiler()
    if cxx is None:
        raise RuntimeError('no C++ compiler found (set CXX or install g++)')
    out_dir = os.path.join(tempfile.gettempdir(), 'tinyrcnn-cpu-kernels')
    os.makedirs(out_dir, exist_ok=True)
    lib_path = os.path.join(out_dir, f'{os.path.splitext(filename)[0]}-{ctype}-{key}.so')
    if not os.path.exists(lib_path):
        tmp = lib_path + f'.{os.getpid()}.tmp'
        cmd = [cxx, '-O2', '-std=c++14', '-shared', '-fPIC', '-x', 'c++',
               '-include', os.path.join(KERNEL_DIR, 'compat.h'), f'-Dscalar_t={ctype}',
               f'-I{KERNEL_DIR}', path, '-o', tmp]
        subprocess.run(cmd, check=True, capture_output=True)
        os.replace(tmp, lib_path)
    lib = ctypes.CDLL(lib_path)
    _CACHE[key] = lib
    return lib


def call(lib, name, *args, dtype=np.float64):
    """Call kernel `name`: arrays are passed as pointers (they must be C-contiguous and of the
    kernel's types), Python ints as `long long`, Python floats as scalar_t."""
    cargs = []
    for a in args:
        if isinstance(a, np.ndarray):
            if not a.flags.c_contiguous:
                raise ValueError(f'{name}: arrays passed to a kernel must be C-contiguous')
            cargs.append(ctypes.c_void_p(a.ctypes.data))
        elif isinstance(a, (bool, int, np.integer)):
            cargs.append(ctypes.c_longlong(int(a)))
        elif isinstance(a, (float, np.floating)):
            cargs.append(ctypes.c_double(a) if np.dtype(dtype) == np.float64 else ctypes.c_float(a))
        else:
            raise TypeError(f'{name}: cannot pass {type(a).__name__} to a kernel')
    fn = getattr(lib, name)
    fn.restype = None
    fn(*cargs)
