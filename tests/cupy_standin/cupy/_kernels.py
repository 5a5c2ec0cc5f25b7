"""`cupy.RawModule` of the stand-in: the kernel's C signature checks every launch, and the
kernel's own source runs on the CPU (`tinyrcnn.kernels.cpu`, one thread over all work items).

CuPy passes each argument as raw bytes and trusts the caller: a float64 array given to a
`float*`, a Python float given to a `float`, a strided view or a host array show up on a GPU
as wrong numbers or a crash, far from their cause. Here the `extern "C" __global__` signatures
are read from the source (types through `typedef`s and the `-D` options, e.g.
`-Dscalar_t=float`), and a launch whose arguments do not match (count, pointer dtype,
C-contiguity, exact NumPy scalar type: `long long` needs numpy.int64) raises at once.
"""
import os
import re

import numpy as np

from . import _standin
from ._core import ndarray

_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.S)
_TYPEDEF = re.compile(r'typedef\s+([\w\s]+?)\s+(\w+)\s*;')
_INCLUDE = re.compile(r'#include\s+"([^"]+)"')
_QUALIFIERS = {'const', 'volatile', '__restrict__', '__restrict', 'restrict', 'signed'}
_C_TYPES = {'float': np.float32, 'double': np.float64, 'long long': np.int64,
            'long long int': np.int64, 'long': np.int64, 'unsigned long long': np.uint64,
            'int': np.int32, 'unsigned int': np.uint32, 'unsigned': np.uint32, 'short': np.int16,
            'unsigned short': np.uint16, 'char': np.int8, 'unsigned char': np.uint8,
            'bool': np.bool_, 'size_t': np.uint64, 'int64_t': np.int64, 'uint64_t': np.uint64,
            'int32_t': np.int32, 'uint32_t': np.uint32, 'uint8_t': np.uint8}


class Param:
    """One kernel parameter: its C text, whether it is a pointer, its NumPy dtype."""

    def __init__(self, text, names):
        self.text = ' '.join(text.split())
        self.pointer = '*' in text
        words = [w for w in re.findall(r'\w+', text) if w not in _QUALIFIERS][:-1]  # no name
        ctype = ' '.join(words)
        for _ in range(10):                           # typedefs and -D macros, to a C type
            ctype = names.get(ctype, ctype)
        if ctype not in _C_TYPES:
            raise ValueError(f'cannot tell the C type of kernel parameter {self.text!r}')
        self.dtype = np.dtype(_C_TYPES[ctype])


def _sources(code, include_dirs, seen=None):
    """The code and every "header" it includes (found in include_dirs), as one text."""
    seen = set() if seen is None else seen
    texts = [code]
    for name in _INCLUDE.findall(code):
        for d in include_dirs:
            path = os.path.join(d, name)
            if os.path.exists(path) and path not in seen:
                seen.add(path)
                with open(path) as f:
                    texts.append(_sources(f.read(), include_dirs, seen))
                break
    return '\n'.join(texts)


class RawModule:
    """RawModule(code=source, options=(...)): parses the kernels' signatures; `get_function`."""

    def __init__(self, code=None, path=None, options=(), backend='nvrtc', translate_cucomplex=False,
                 enable_cooperative_groups=False, name_expressions=None, jitify=False):
        if code is None:
            with open(path) as f:
                code = f.read()
        self.options = tuple(options)
        defines = dict(o[2:].split('=', 1) for o in self.options if o.startswith('-D') and '=' in o)
        include_dirs = [o[2:] for o in self.options if o.startswith('-I')]
        text = _sources(code, include_dirs)
        names = dict(defines)
        names.update({alias: ' '.join(w for w in base.split() if w not in _QUALIFIERS)
                      for base, alias in _TYPEDEF.findall(text)})
        self.signatures = {name: [Param(p, names) for p in params.split(',') if p.strip()]
                           for name, params in _KERNEL.findall(code)}
        self.dtype = np.dtype(_C_TYPES[defines['scalar_t']]) if 'scalar_t' in defines else np.float64
        # the CPU build compiles a file: the one in the include path with exactly this text
        self.filename = next((f for d in include_dirs for f in sorted(os.listdir(d))
                              if f.endswith('.cu') and _read(os.path.join(d, f)) == code), None)
        if self.filename is None:
            raise ValueError('the CuPy stand-in runs kernels through tinyrcnn.kernels.cpu, which '
                             'builds a .cu file: give RawModule the text of a file in an -I folder')
        self._lib = None

    def get_function(self, name):
        if name not in self.signatures:
            raise RuntimeError(f'CUDA_ERROR_NOT_FOUND: named symbol not found: {name!r} is not an '
                               f'extern "C" __global__ function of {self.filename}')
        if self._lib is None:
            from tinyrcnn.kernels import cpu
            self._lib = cpu.build(self.filename, self.dtype)
        return RawKernel(self, name)


def _read(path):
    with open(path) as f:
        return f.read()


def _dims(value, what, limits):
    dims = value if isinstance(value, tuple) else (value,)
    if not 1 <= len(dims) <= 3 or not all(isinstance(d, (int, np.integer)) and d >= 1 for d in dims):
        raise ValueError(f'{what} must be a tuple of 1 to 3 positive ints, got {value!r}')
    if any(d > lim for d, lim in zip(dims, limits)):
        raise ValueError(f'{what} {value!r} exceeds the CUDA limits {limits}')
    return dims


class RawKernel:
    def __init__(self, module, name):
        self.module, self.name = module, name
        self.params = module.signatures[name]
        for p in self.params:           # kernels/cpu.py passes scalars as long long or scalar_t
            if not p.pointer and p.dtype not in (np.dtype(np.int64), module.dtype):
                raise ValueError(f'{name}: the CPU build cannot pass a {p.dtype} ({p.text})')

    def __call__(self, grid, block, args, shared_mem=0, stream=None, enable_cooperative_groups=False):
        _dims(grid, 'grid', (2 ** 31 - 1, 65535, 65535))
        if np.prod(_dims(block, 'block', (1024, 1024, 64))) > 1024:
            raise ValueError(f'block {block!r} has more than 1024 threads')
        if not isinstance(args, tuple):
            raise TypeError(f'{self.name}: kernel arguments must be a tuple, got {type(args).__name__}')
        signature = ', '.join(p.text for p in self.params)
        if len(args) != len(self.params):
            raise TypeError(f'{self.name}({signature}) takes {len(self.params)} arguments, '
                            f'got {len(args)}')
        for i, (p, a) in enumerate(zip(self.params, args)):
            where = f'{self.name} argument {i} ({p.text})'
            if p.pointer:
                if not isinstance(a, ndarray):
                    raise TypeError(f'{where}: expected a cupy.ndarray of {p.dtype}, got '
                                    f'{type(a).__module__}.{type(a).__name__}')
                if a.dtype != p.dtype:
                    raise TypeError(f'{where}: expected a {p.dtype} array, got {a.dtype}')
                if not a.flags.c_contiguous:
                    raise ValueError(f'{where}: the array must be C-contiguous')
            elif type(a) is not p.dtype.type:
                raise TypeError(f'{where}: expected numpy.{p.dtype} (CuPy sends a Python value as '
                                f'its own type), got {type(a).__name__}')
        from tinyrcnn.kernels import cpu
        _standin.record('launch', self.name)
        cpu.call(self.module._lib, self.name, *(a._a if isinstance(a, ndarray) else a for a in args),
                 dtype=self.module.dtype)
