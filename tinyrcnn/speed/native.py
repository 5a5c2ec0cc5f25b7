"""The speed paths written in C++ (`felzenszwalb.cpp`, `winograd.cpp`, `winograd4.cpp`, `nms.cpp`,
`adam.cpp`, `max_pool.cpp`, `roi_pool.cpp`): each compiled once per machine with g++
(`kernels.cpu.build_cpp`), loaded once per process. Without a compiler, or where the build fails
(one warning says why), `library` and `typed` return None and the path's caller runs its
reference instead."""
import ctypes
import os
import threading
import warnings

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
_LIBRARIES = {}                   # file name -> the loaded library, or None
_LOCK = threading.Lock()          # one build, even when two threads ask at once

i64, pointer, double = ctypes.c_longlong, ctypes.c_void_p, ctypes.c_double
SUFFIX = {np.dtype(np.float32): 'f32', np.dtype(np.float64): 'f64'}   # a typed function's variants


def library(filename, signatures, fallback, optimise='-O2'):
    """The library built from speed/`filename`, its functions declared by `signatures`
    ({name: [argument ctypes]}, all returning void), or None. `fallback` names what runs
    instead, for the warning; `optimise`: g++'s optimisation flags."""
    with _LOCK:
        if filename not in _LIBRARIES:
            _LIBRARIES[filename] = _build(filename, signatures, fallback, optimise)
    return _LIBRARIES[filename]


def typed(filename, name, dtype, signatures, fallback, optimise='-O2'):
    """The variant of function `name` for `dtype` (`name_f32` or `name_f64`, as the .cpp's EXPORT
    macro writes them) in the library built from speed/`filename`, whose functions `signatures`
    declares by their base names ({name: [argument ctypes]}); None for another dtype or where
    the library cannot be built."""
    suffix = SUFFIX.get(np.dtype(dtype))
    if suffix is None:
        return None
    lib = _LIBRARIES.get(filename)                # built: no signatures to spell out again
    if filename not in _LIBRARIES:
        lib = library(filename, {f'{n}_{s}': args for n, args in signatures.items()
                                 for s in SUFFIX.values()}, fallback, optimise)
    return None if lib is None else getattr(lib, f'{name}_{suffix}')


def _build(filename, signatures, fallback, optimise):
    from ..kernels.cpu import build_cpp, compiler
    if compiler() is None:
        return None                   # no g++: the reference, as documented
    try:
        lib = build_cpp(os.path.join(_HERE, filename), optimise)
    except (OSError, RuntimeError) as e:
        name, why = os.path.splitext(filename)[0], str(e).splitlines()[0]
        warnings.warn(f'the {name} speed path is off, {fallback}: {why}', RuntimeWarning, stacklevel=4)
        return None
    for name, argtypes in signatures.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = None, argtypes
    return lib
