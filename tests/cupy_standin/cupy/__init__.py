"""A strict CuPy stand-in for the tests: tinyrcnn's GPU path, run on NumPy, without a GPU.

Put this folder first on sys.path (`tests/cupy_standin/switch.py` does it in-process,
`switch.env()` for a subprocess) and `import cupy` gives this module. It models CuPy 13/14:

  * device arrays are their own type (`cupy.ndarray`, module 'cupy'); NumPy refuses to
    convert them implicitly (`np.asarray` raises TypeError, as CuPy does), and NumPy arrays
    are no operands of device operations (TypeError), so every host <-> device crossing in
    tinyrcnn has to be written out, as a GPU requires (`_core.py`, `_functions.py`);
  * `RawModule` reads each kernel's C signature and checks every launch against it, then runs
    the kernel's own source on the CPU through `tinyrcnn.kernels.cpu` (`_kernels.py`);
  * every blocking sync and every copy is counted by call site (`cupy._standin.counting()`),
    which is how the tests hold training to its sync budget (`_standin.py`);
  * `cupy.cuda` has one device; `cupy.random` and `cupyx.scatter_add` are there.

What it cannot show, and only a real GPU (`make gpu-check`) can:
  * speed, and whether work overlaps: nothing runs asynchronously, streams are not concurrent,
    and a kernel runs on one CPU thread (keep the sizes small);
  * memory: the pool reports 0 bytes; nothing runs out of device memory;
  * races: a kernel runs as one thread walking all its work items in order, so missing
    atomics, shared-memory and __syncthreads bugs stay invisible, as do out-of-bounds accesses
    that land in the host's memory;
  * the GPU's numbers: NVRTC contracts a*b + c into one fma (rounded once), the GPU may flush
    float32 denormals to zero, its exp/log differ in the last bits, cuBLAS and CuPy's
    reductions add in another order, and CuPy's type promotion of Python scalars and its
    random numbers are its own. The stand-in computes with NumPy, so it agrees with the CPU
    path more closely than a GPU will (bit for bit, in the tests): tolerances still matter.
"""
import numpy as _np

from . import _functions, _standin, cuda, random
from ._core import ndarray
from ._kernels import RawKernel, RawModule

__all__ = ['ndarray', 'RawModule', 'RawKernel', 'cuda', 'random', '_standin']
__version__ = '13.0.0+standin'

# NumPy's dtypes and constants, as CuPy re-exports them
for _name in ('bool_ complex64 complex128 dtype e finfo float16 float32 float64 iinfo inf int8 '
              'int16 int32 int64 intp nan newaxis pi result_type can_cast uint8 uint16 uint32 '
              'uint64').split():
    globals()[_name] = getattr(_np, _name)
# the array functions and ufuncs
globals().update({n: v for n, v in vars(_functions).items()
                  if not n.startswith('_') and n not in ('np', 'builtins')})
_pool = cuda.MemoryPool()


def get_default_memory_pool():
    return _pool


def get_default_pinned_memory_pool():
    return _pool


def is_available():
    return True


def show_config():
    print('CuPy stand-in (NumPy', _np.__version__, 'on the CPU): no GPU')
