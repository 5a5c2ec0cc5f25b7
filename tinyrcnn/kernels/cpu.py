"""Build tinyrcnn `.cu` files for the CPU and run their kernels: the very source CuPy compiles for
the GPU, checked on any machine with a C++ compiler (g++). Two builds:

* `build` + `call`: a shared library called through ctypes. `compat.h` models a launch as ONE
  thread that walks every work item of the grid-stride loop (see common.cuh) in order, so the
  tests can compare a kernel with the NumPy path bit for bit. The RoI-pooling notebook uses it too.
* `run_threaded`: a small program in which every launch runs on grid x block real threads
  (`compat_threads.h`: per-thread blockIdx/threadIdx, real atomics, __syncthreads as a barrier),
  optionally built with ThreadSanitizer (`g++ -fsanitize=thread`). A missing atomicAdd or
  barrier is then a reported data race instead of a rare wrong number on a GPU. It is a separate
  program because TSan must be the runtime of the executable, which a Python process is not.
"""
import ctypes
import functools
import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading

import numpy as np

from ..backend import KERNEL_DIR

_CACHE = {}
_CTYPES = {np.dtype(np.float32): 'float', np.dtype(np.float64): 'double'}


def compiler():
    """The C++ compiler used for CPU builds, or None."""
    return os.environ.get('CXX') or shutil.which('g++') or shutil.which('c++')


def _headers():
    """The bytes of every header a kernel build can see, for the cache keys."""
    paths = sorted(glob.glob(os.path.join(KERNEL_DIR, '*.h')) + glob.glob(os.path.join(KERNEL_DIR, '*.cuh')))
    return b''.join(open(p, 'rb').read() for p in paths)


def _out_dir():
    path = os.path.join(tempfile.gettempdir(), 'tinyrcnn-cpu-kernels')
    os.makedirs(path, exist_ok=True)
    return path


def _compile(cmd, out):
    """Run the compiler command `cmd` (which writes `out`), atomically: concurrent test workers
    may build the same file."""
    if os.path.exists(out):
        return out
    if compiler() is None:
        raise RuntimeError('no C++ compiler found (set CXX or install g++)')
    tmp = out + f'.{os.getpid()}.{threading.get_ident()}.tmp'      # per process and thread
    res = subprocess.run(cmd + ['-o', tmp], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f'building {os.path.basename(out)} failed:\n{res.stderr}')
    os.replace(tmp, out)
    return out


def build(filename, dtype=np.float64):
    """Compile `kernels/filename` with scalar_t = dtype; return the loaded ctypes library."""
    ctype = _CTYPES[np.dtype(dtype)]
    path = os.path.join(KERNEL_DIR, filename)
    with open(path, 'rb') as f:
        source = f.read()
    key = hashlib.sha1(source + _headers() + ctype.encode()).hexdigest()[:16]
    return _load(f'{os.path.splitext(filename)[0]}-{ctype}-{key}', key,
                 [compiler(), '-O2', '-std=c++14', '-shared', '-fPIC', '-x', 'c++',
                  '-include', os.path.join(KERNEL_DIR, 'compat.h'), f'-Dscalar_t={ctype}',
                  f'-I{KERNEL_DIR}', path])


def build_cpp(path, optimise='-O2'):
    """Compile the plain C++ file `path` (no kernel headers) into a shared library, cached by its
    content and `optimise` flags (one string); return the loaded ctypes library. The CPU speed
    paths written in C++ use it (for the baseline instruction set: a cached library runs on any
    x86-64)."""
    with open(path, 'rb') as f:
        key = hashlib.sha1(f.read() + optimise.encode()).hexdigest()[:16]
    return _load(f'{os.path.splitext(os.path.basename(path))[0]}-{key}', key,
                 [compiler()] + optimise.split() + ['-std=c++14', '-shared', '-fPIC', path])


def _load(name, key, command):
    """The library `name`.so that `command` builds, loaded once per process (by `key`) and kept
    in the temporary folder between processes."""
    if key in _CACHE:
        return _CACHE[key]
    lib_path = os.path.join(_out_dir(), name + '.so')
    _compile(command, lib_path)
    try:
        lib = ctypes.CDLL(lib_path)
    except OSError:                      # a cached file that does not load (cut short, another
        os.remove(lib_path)              # machine's): build it once more
        lib = ctypes.CDLL(_compile(command, lib_path))
    _CACHE[key] = lib
    return lib


def _check_array(name, a, dtype):
    if not a.flags.c_contiguous:
        raise ValueError(f'{name}: arrays passed to a kernel must be C-contiguous')
    # Every floating-point array parameter of a tinyrcnn kernel is a scalar_t*: a float64 array
    # read as float (or the reverse) gives garbage, such as a batch index far out of range.
    if a.dtype.kind == 'f' and a.dtype != np.dtype(dtype):
        raise TypeError(f'{name}: a {a.dtype} array passed to a kernel built for {np.dtype(dtype)}')


def call(lib, name, *args, dtype=np.float64):
    """Call kernel `name`: arrays are passed as pointers (they must be C-contiguous and of the
    kernel's types), Python ints as `long long`, Python floats as scalar_t."""
    cargs = []
    for a in args:
        if isinstance(a, np.ndarray):
            _check_array(name, a, dtype)
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


# ---------------------------------------------------------------------------------------------
# The threaded build (compat_threads.h), optionally under ThreadSanitizer
# ---------------------------------------------------------------------------------------------
_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')


def threaded_source(filename, text):
    """Kernel source `text` for compat_threads.h: each `extern "C" __global__ void name(params)`
    becomes `static void name_body(params)`, and a wrapper `name(params)` runs it through
    tr_launch. Line numbers are kept, so reports point into the `.cu` file."""
    wrappers = []

    def rename(m):
        name, params = m.group(1), m.group(2)
        names = [re.search(r'(\w+)\s*$', p).group(1) for p in params.split(',')]
        wrappers.append(f'extern "C" void {name}({" ".join(params.split())}) {{\n'
                        f'  tr_launch([&] {{ {name}_body({", ".join(names)}); }});\n}}')
        return f'static void {name}_body({params})'

    body = _KERNEL.sub(rename, text)
    path = os.path.join(KERNEL_DIR, filename)
    return (f'#line 1 "{path}"\n{body}\n#line 1 "{path} (launch wrappers)"\n'
            + '\n'.join(wrappers) + '\n')


@functools.lru_cache(maxsize=None)
def tsan_missing():
    """None when `g++ -fsanitize=thread` builds and runs a program here; else the reason why not."""
    if compiler() is None:
        return 'no C++ compiler'
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = os.path.join(tmp, 't.cpp'), os.path.join(tmp, 't')
        with open(src, 'w') as f:                        # one empty launch of the threaded model
            f.write('int main() { tr_launch([] {}); return 0; }\n')
        res = subprocess.run([compiler(), '-std=c++20', '-fsanitize=thread', '-pthread', '-include',
                              os.path.join(KERNEL_DIR, 'compat_threads.h'), src, '-o', exe],
                             capture_output=True, text=True)
        if res.returncode != 0:
            return f'{compiler()} -fsanitize=thread cannot build here: {res.stderr.strip()[-300:]}'
        res = subprocess.run([exe], capture_output=True, text=True)
        if res.returncode != 0:
            return f'ThreadSanitizer cannot run here: {res.stderr.strip()[-300:]}'
    return None


def _threaded_program(calls, dtype, sources):
    """The C++ text of a program making the launches `calls`, and the (offset, value) of each
    array and scalar in the one buffer it reads from a file: scalars live there too (as int64 /
    float64), and the launch shape comes from the command line, so the program depends only on
    which kernels run and is compiled once."""
    slots, offsets, size = [], {}, 0

    def slot(key, value):
        nonlocal size
        if key not in offsets:                      # the same ndarray is the same buffer
            offsets[key] = size
            slots.append((size, value))
            size += -(-value.nbytes // 64) * 64     # 64-byte aligned
        return offsets[key]

    program, spaces = ['#include "common.cuh"\n'], {}
    for filename in dict.fromkeys(f for f, _, _ in calls):
        if filename not in sources:
            with open(os.path.join(KERNEL_DIR, filename)) as f:
                sources[filename] = f.read()
        spaces[filename] = 'tr_' + re.sub(r'\W', '_', filename)  # a namespace per file
        program.append(f'namespace {spaces[filename]} {{\n{threaded_source(filename, sources[filename])}}}\n')
    program.append('int main(int argc, char** argv) {  // program in out grid block\n'
                   '  std::vector<char> mem = tr_read(argv[1]);\n  char* m = mem.data();\n'
                   '  tr_set_launch(std::atoi(argv[3]), std::atoi(argv[4]));\n')
    for k, (filename, name, args) in enumerate(calls):
        cargs = []
        for j, a in enumerate(args):
            if isinstance(a, np.ndarray):
                _check_array(name, a, dtype)
                cargs.append(f'tr_ptr{{m + {slot(id(a), a)}}}')
            elif isinstance(a, (bool, int, np.integer)):
                cargs.append(f'*(index_t*)(m + {slot((k, j), np.int64(a))})')
            elif isinstance(a, (float, np.floating)):
                cargs.append(f'(scalar_t)*(double*)(m + {slot((k, j), np.float64(a))})')
            else:
                raise TypeError(f'{name}: cannot pass {type(a).__name__} to a kernel')
        program.append(f'  {spaces[filename]}::{name}({", ".join(cargs)});\n')
    program.append('  tr_write(argv[2], mem);\n  return 0;\n}\n')
    return ''.join(program), slots, size


def run_threaded(calls, dtype=np.float64, grid=2, block=4, sanitize=True, sources=None,
                 timeout=120):
    """Run kernel launches on grid x block real threads each, in a program built from the `.cu`
    sources with compat_threads.h (and with ThreadSanitizer when `sanitize`).

    calls: a list of (filename, kernel_name, args), args as for `call`; the launches run in
    order, the arrays are shared between them (the same ndarray is the same buffer) and updated in
    place afterwards, as if the kernels had run here. sources: {filename: text} to use instead of
    the file (a test plants a bug this way). Returns the CompletedProcess: `stderr` holds TSan's
    report ("WARNING: ThreadSanitizer: data race ..."), and returncode is 66 when it found any.
    """
    ctype = _CTYPES[np.dtype(dtype)]
    text, slots, size = _threaded_program(calls, dtype, dict(sources or {}))
    flags = ['-fsanitize=thread'] if sanitize else []
    key = hashlib.sha1((text + ctype + ' '.join(flags)).encode() + _headers()).hexdigest()[:16]
    exe = os.path.join(_out_dir(), f'threads-{ctype}-{key}')
    with tempfile.TemporaryDirectory() as tmp:
        src, data_in, data_out = (os.path.join(tmp, n) for n in ('main.cpp', 'in', 'out'))
        with open(src, 'w') as f:
            f.write(text)
        _compile([compiler(), '-std=c++20', '-O1', '-g', '-pthread', *flags, '-x', 'c++',
                  '-include', os.path.join(KERNEL_DIR, 'compat_threads.h'), f'-Dscalar_t={ctype}',
                  f'-I{KERNEL_DIR}', src], exe)
        mem = np.zeros(max(size, 1), np.uint8)
        for at, value in slots:
            mem[at:at + value.nbytes] = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
        mem.tofile(data_in)
        res = subprocess.run([exe, data_in, data_out, str(int(grid)), str(int(block))],
                             capture_output=True, text=True, timeout=timeout)
        if os.path.exists(data_out):                    # the launches finished: copy results back
            mem = np.fromfile(data_out, np.uint8)
            for at, value in slots:
                if isinstance(value, np.ndarray):       # the arrays, not the scalars
                    value.reshape(-1).view(np.uint8)[:] = mem[at:at + value.nbytes]
    return res
