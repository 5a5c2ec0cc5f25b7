"""One array-module switch: NumPy on the CPU, CuPy on the GPU.

CuPy is imported lazily, only when a GPU is asked for or a CuPy array is met, so a machine
without it never notices. Kernel-backed ops load their `.cu` sources through `kernel()`, which
compiles a source once per dtype with CuPy's RawModule and caches it. `fast_cpu()` is where an
op looks for the opt-in CPU speed path of `tinyrcnn.speed` (off unless enabled).
"""
import functools
import os

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


# ---------------------------------------------------------------------------------------------
# The CPU speed paths: one hook per op
# ---------------------------------------------------------------------------------------------
_FAST_CPU = {}


def fast_cpu(name, x):
    """The faster CPU implementation registered under `name` by `tinyrcnn.speed.enable()`, when
    `x` (an array or a Tensor) lives on the CPU and one is registered; else None, and the
    caller runs its reference.

    Each op asks once, in its public function (`fast_cpu('roi_pool', x) or RoIPool`). What is
    registered must equal the reference: bit for bit, or to float rounding where the speed
    package says so (tests/speed/ checks every one)."""
    x = x.data if hasattr(x, '_ctx') else x                  # a Tensor's array
    return _FAST_CPU.get(name) if isinstance(x, np.ndarray) else None


def fast_cpu_paths():
    """A copy of the registered CPU speed paths (name -> implementation)."""
    return dict(_FAST_CPU)


def set_fast_cpu(paths):
    """Replace the registered CPU speed paths by the dict `paths` (name -> implementation);
    `{}` turns them all off. Called by `tinyrcnn.speed.enable()` and `disable()`."""
    _FAST_CPU.clear()
    _FAST_CPU.update(paths)


def scatter_add(xp, target, index, values):
    """target[index] += values with repeated indices accumulated (NumPy's add.at).

    CuPy spells it `cupy.add.at` too (since v12); cupyx.scatter_add goes through
    ndarray.scatter_add, which newer CuPy deprecates in favour of add.at, so it is only the
    fallback for an older CuPy. On a GPU both add with atomics: floats that land on the same
    index sum in an order that may change from run to run."""
    if hasattr(xp.add, 'at'):
        xp.add.at(target, index, values)
    else:
        import cupyx
        cupyx.scatter_add(target, index, values)


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
