"""One array-module switch: NumPy on the CPU, CuPy on the GPU.

CuPy is imported lazily, only when a GPU is asked for or a CuPy array is met, so a machine
without it never notices. Kernel-backed ops load their `.cu` sources through `kernel()`, which
compiles a source once per dtype with CuPy's RawModule and caches it.
"""
import contextlib
import functools
import os
import threading

import numpy as np

KERNEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'kernels')


@functools.lru_cache(maxsize=None)
def _cupy():
    """The cupy module, or None when it cannot be imported."""
    try:
        import cupy
        return cupy
    except Exception:  # ImportError, or a broken CUDA install raising at import
        return None


@functools.lru_cache(maxsize=None)
def cuda_available():
    """True only when CuPy imports and sees at least one GPU."""
    cp = _cupy()
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def is_cupy_array(a):
    return type(a).__module__.split('.')[0] == 'cupy'


def get_array_module(*arrays):
    """`xp` for the given arrays: cupy if any of them lives on the GPU, else numpy."""
    for a in arrays:
        data = getattr(a, 'data', a) if hasattr(a, '_ctx') else a  # unwrap a Tensor
        if is_cupy_array(data):
            return _cupy()
    return np


def device_of(array):
    return 'cuda' if is_cupy_array(array) else 'cpu'


def check_device(device):
    if device not in ('cpu', 'cuda'):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == 'cuda' and not cuda_available():
        raise RuntimeError("device 'cuda' was asked for, but no GPU is available: CuPy is not "
                           "installed or sees no CUDA device (tr.cuda_available() is False)")
    return device


def to_device(array, device):
    """Copy `array` to 'cpu' (NumPy) or 'cuda' (CuPy); no copy when it is already there."""
    check_device(device)
    if device == 'cpu':
        return array.get() if is_cupy_array(array) else np.asarray(array)
    cp = _cupy()
    return array if is_cupy_array(array) else cp.asarray(array)


def scatter_add(xp, target, index, values):
    """target[index] += values with repeated indices accumulated (NumPy's add.at)."""
    if xp is np:
        np.add.at(target, index, values)
    else:
        import cupyx
        cupyx.scatter_add(target, index, values)


def matmul(a, b):
    """a @ b for 2-D arrays, in the orientation OpenBLAS runs fastest.

    When one operand is row-major and the other a transposed view (the products of linear and
    conv backward), OpenBLAS on a few cores is several times faster when the output has at least
    as many rows as columns (measured: fc6 forward 24 ms -> 3 ms). Then (b^T a^T)^T, the same
    numbers, is computed instead. CuPy (cuBLAS) is left alone.
    """
    if not isinstance(a, np.ndarray) or a.ndim != 2 or b.ndim != 2:
        return a @ b
    mixed = a.flags.c_contiguous != b.flags.c_contiguous
    if mixed and a.shape[0] < b.shape[1]:
        return (b.T @ a.T).T
    return a @ b


@functools.lru_cache(maxsize=None)
def keep_freed_memory():
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the OS.

    A training step allocates and frees the same large arrays (im2col columns, activations)
    every iteration. By default each array above a few MB is a fresh mmap whose pages the
    kernel must fault in and zero on first touch; with a high mmap threshold and no trimming
    they are recycled from the heap. Measured on the 2-core machine, VGG16 trunk forward +
    backward: 800 -> 690 ms (`python -m tinyrcnn bench --only vgg`). The process keeps its peak
    memory. The command line calls this; a program using the library may call it too. Returns
    True where it took effect (Linux with glibc), False elsewhere.
    """
    if os.environ.get('TINYRCNN_DEFAULT_MALLOC'):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL('libc.so.6')
        M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3   # from <malloc.h>
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
                    and libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1) and libc.mallopt(M_TOP_PAD, 1 << 28))
    except (OSError, AttributeError):       # no glibc (macOS, Windows, musl): leave malloc alone
        return False


def _openblas_function(name):
    """The function `name` of the OpenBLAS that NumPy has loaded (found in /proc/self/maps),
    or None: no /proc (macOS, Windows), another BLAS, an older OpenBLAS, an odd library."""
    try:
        import ctypes
        with open('/proc/self/maps', errors='replace') as f:
            paths = {line.split()[-1] for line in f if 'openblas' in line.lower() and '/' in line}
        numpy_dir = os.path.dirname(os.path.dirname(np.__file__))
        for path in sorted(paths, key=lambda p: (not p.startswith(numpy_dir), 'numpy' not in p, p)):
            lib = ctypes.CDLL(path)
            if hasattr(lib, name):
                return getattr(lib, name)
    except Exception:
        pass
    return None


@functools.lru_cache(maxsize=None)
def _openblas_threads_setter():
    """OpenBLAS's `openblas_set_num_threads_local` (OpenBLAS >= 0.3.27), or None. Despite its
    name it sets the number of threads for every caller in the process and returns the
    previous number, which is what lets `blas_threads` restore it."""
    fn = _openblas_function('openblas_set_num_threads_local')
    if fn is not None:
        import ctypes
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    return fn


@functools.lru_cache(maxsize=None)
def blas_idle_sleeps():
    """True when NumPy's BLAS is OpenBLAS with OPENBLAS_THREAD_TIMEOUT set (read once, when it
    is loaded), so that its idle threads sleep soon after a product. `parallel.split_work` runs
    its second thread only then; with another BLAS (MKL's threads also spin by default) or none
    found, it stays on one."""
    fn = _openblas_function('openblas_thread_timeout')
    return fn is not None and 0 < fn() <= 20


_blas_lock = threading.Lock()
_blas_users = [0, None]                     # blocks inside blas_threads, the number to restore


@contextlib.contextmanager
def blas_threads(n):
    """Within the block, matrix products use `n` threads (OpenBLAS only; elsewhere a no-op);
    the previous number is restored on exit. The setting is process-wide: used around work
    that runs its own threads (`parallel.backward_parts`, `parallel.matmul_stack`), so that two
    workers share two cores instead of starting four BLAS threads, and the products after the
    block get every core back. Blocks entered by several threads at once share the setting of
    the first; the last one out restores. Yields True where the setting took effect."""
    fn = _openblas_threads_setter()
    if fn is None:
        yield False
        return
    with _blas_lock:
        if _blas_users[0] == 0:
            _blas_users[1] = fn(int(n))
        _blas_users[0] += 1
    try:
        yield True
    finally:
        with _blas_lock:
            _blas_users[0] -= 1
            if _blas_users[0] == 0:
                fn(_blas_users[1])


# ---------------------------------------------------------------------------------------------
# CUDA kernels
# ---------------------------------------------------------------------------------------------
_CTYPE = {np.dtype(np.float32): 'float', np.dtype(np.float64): 'double'}


@functools.lru_cache(maxsize=None)
def _module(filename, ctype):
    cp = _cupy()
    with open(os.path.join(KERNEL_DIR, filename)) as f:
        source = f.read()
    return cp.RawModule(code=source, options=('-std=c++14', f'-Dscalar_t={ctype}',
                                              f'-I{KERNEL_DIR}'))


def kernel(filename, name, dtype):
    """The compiled kernel `name` from `kernels/filename`, with `scalar_t` set to `dtype`."""
    dtype = np.dtype(dtype)
    if dtype not in _CTYPE:
        raise ValueError(f'CUDA kernels support float32 and float64, got {dtype}')
    return _module(filename, _CTYPE[dtype]).get_function(name)


def launch(kern, n, args, dtype, block=256):
    """Launch a grid-stride kernel over `n` work items (see kernels/common.cuh).

    Python ints are passed as `long long` (index_t) and Python floats as scalar_t, the same
    convention as kernels/cpu.py, so one argument list serves both builds."""
    cargs = []
    for a in args:
        if isinstance(a, (bool, int, np.integer)):
            cargs.append(np.int64(a))
        elif isinstance(a, (float, np.floating)):
            cargs.append(np.dtype(dtype).type(a))
        else:
            cargs.append(a)
    grid = max(1, min((n + block - 1) // block, 65535 * 8))
    kern((grid,), (block,), tuple(cargs))
