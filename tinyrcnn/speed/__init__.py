"""The CPU speed paths, opt-in: faster NumPy versions of the hot ops, and both cores.

Every op in `tinyrcnn/ops/` is written to be read; this package holds what makes it fast on a
small CPU, and nothing outside it imports it. `enable()` registers each fast path with its op
(`backend.fast_cpu`): the op's public function then picks it for NumPy arrays.

    import tinyrcnn.speed
    tinyrcnn.speed.enable()          # python -m tinyrcnn (the CLI, the demos) does this

    hook             what                                           numbers
    conv2d           im2col/col2im on two threads; Winograd F(2x2,  the same, except Winograd
                     3x3) for 3x3 layers of 16+ channels, F(4x4,    and the full conv: float
                     3x3) for wide ones on large maps, their tile   rounding (another order;
                     transforms in C++ (g++); dx as a full conv     F(4x4, 3x3): ~1e-5)
    max_pool2d       2x2/stride-2 windows in one pass in C++ (g++)  the same
                     (else three element-wise maxima)
    relu             one pass in two halves on two threads          the same
    linear           products in OpenBLAS's faster orientation      float rounding
    roi_pool         both passes in C++ (g++), a bin's channels     the same
                     at once (else the forward vectorised in NumPy)
    backward_parts   a step's images (parts) on parallel threads    the same
    nms              the greedy loop in C++ (g++)                   the same
    adam             Adam's update in one pass, in C++ (g++), in    the same
                     two halves on two threads
    felzenszwalb     selective search's segmentations, one sort     the same
                     for every k, the merge loop in C++ (g++)

The C++ parts (`native.py`) compile on first use; without g++ their NumPy or scikit-image
references give the same numbers.

`enable()` also keeps freed memory in glibc's malloc (`threads.keep_freed_memory`). The two-
thread loops need OpenBLAS's idle threads to sleep, which OPENBLAS_THREAD_TIMEOUT decides when
NumPy loads: `python -m tinyrcnn` sets it first; a program of yours can export it. tests/speed/
checks every path against its reference.
"""
import contextlib

from .. import backend
from .conv import FastConv2d
from .adam import compiled_adam
from .felzenszwalb import segment_scales
from .layers import FastLinear, FastMaxPool2d, FastReLU
from .nms import compiled_nms
from .parts import backward_parts_on_threads
from .roi_pool import FastRoIPool
from .threads import keep_freed_memory

PATHS = {'conv2d': FastConv2d, 'max_pool2d': FastMaxPool2d, 'relu': FastReLU,
         'linear': FastLinear, 'roi_pool': FastRoIPool, 'backward_parts': backward_parts_on_threads,
         'felzenszwalb': segment_scales, 'nms': compiled_nms,
         'adam': compiled_adam}


def enable():
    """Turn every CPU speed path on (and keep freed memory in malloc, where glibc allows)."""
    keep_freed_memory()
    backend.set_fast_cpu(PATHS)


def disable():
    """Back to the reference ops."""
    backend.set_fast_cpu({})


def is_enabled():
    return backend.fast_cpu_paths() == PATHS


@contextlib.contextmanager
def enabled(on=True):
    """Within the block the speed paths are on (or off, with on=False); then as before."""
    before = backend.fast_cpu_paths()
    backend.set_fast_cpu(PATHS if on else {})
    try:
        yield
    finally:
        backend.set_fast_cpu(before)
