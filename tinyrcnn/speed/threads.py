"""Threads and BLAS settings for the CPU speed paths: both cores of a small machine, for
NumPy's single-core loops and for the small products OpenBLAS cannot split well.

`split_work` cuts a loop (im2col, col2im, pooling, ReLU, the Winograd transforms) into two
halves on two threads (NumPy releases Python's lock inside its loops); `matmul_stack` runs a
stack of small products as two halves on one-thread BLAS; `blas_threads` sets OpenBLAS's
thread count for a block and restores it; `keep_freed_memory` keeps glibc from returning big
arrays to the OS between iterations. None of them changes a number.
"""
import contextlib
import functools
import os
import threading

import numpy as np

@functools.lru_cache(maxsize=None)
def thread_pool(threads):
    """A pool of `threads` worker threads (`parts.py` runs them with one BLAS thread each)."""
    from concurrent.futures import ThreadPoolExecutor
    return ThreadPoolExecutor(threads)


INTRA_OP_MIN_ELEMENTS = 1 << 18      # below this a thread hand-off costs about what it saves


@functools.lru_cache(maxsize=None)
def _helper():
    from concurrent.futures import ThreadPoolExecutor
    return ThreadPoolExecutor(1)     # the second half's thread (no BLAS setting of its own)


def _forget_pools():
    """A forked child (selective search's worker processes) inherits the pools but not their
    threads: work submitted there would wait forever. It starts new ones instead."""
    _helper.cache_clear()
    thread_pool.cache_clear()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_forget_pools)


def usable_cores():
    """Cores this process may run on (its CPU affinity where the OS tells, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                  # macOS, Windows
        return os.cpu_count() or 1


def intra_op_threads():
    """Whether `split_work` splits: two or more cores, the main thread (training's per-image
    threads already keep the cores busy), and matrix products whose idle threads go to sleep.
    OpenBLAS's workers spin for 2^28 cycles (about 0.1 s) after each product unless
    OPENBLAS_THREAD_TIMEOUT was set before NumPy loaded it, and a spinning worker takes the
    core our second half needs (BENCHMARKS.md, session 3). `python -m tinyrcnn` sets the
    variable before NumPy loads (tinyrcnn/__main__.py); a program of yours can export it."""
    if usable_cores() < 2 or threading.current_thread() is not threading.main_thread():
        return False
    return blas_idle_sleeps()


def split_work(n, elements, fn):
    """Call fn(lo, hi) to cover range(n): in two halves on two threads when `intra_op_threads()`
    and the work has at least INTRA_OP_MIN_ELEMENTS elements, else as one call.

    For element-wise and copying work that NumPy runs on one core: the main thread does one
    half, a helper thread the other (NumPy releases Python's lock inside its loops). The halves
    must write disjoint parts of the output; the numbers are the same either way.
    """
    if n < 2 or elements < INTRA_OP_MIN_ELEMENTS or not intra_op_threads():
        fn(0, n)
        return
    mid = n // 2
    other = _helper().submit(fn, mid, n)
    try:
        fn(0, mid)
    finally:
        other.result()


def matmul_stack(a, b):
    """a (B, m, k) @ b (B, k, n) -> (B, m, n): NumPy's stacked product, but with the stack cut
    in two halves on two threads of one-threaded BLAS where `intra_op_threads()` allows.
    For the Winograd products (sixteen (K, C) @ (C, tiles) per layer) each product is too
    small for OpenBLAS to keep two threads busy, and two whole products side by side run
    faster (BENCHMARKS.md). The numbers are the same either way (each product runs whole).
    Only on exactly two usable cores, the case measured: with more, two one-thread halves
    would leave cores idle that OpenBLAS's own threads use. The size that decides is the
    largest of the three arrays: a small output can come from large operands (VGG16 conv1_2's
    filter gradient at 224x224: 36 products (64, 3136) @ (3136, 64), 1.5-3% of a step faster
    in halves, BENCHMARKS.md, session 13).
    """
    B, m = a.shape[0], a.shape[1]
    out = np.empty((B, m, b.shape[2]), dtype=np.result_type(a, b))
    size = max(a.size, b.size, out.size)

    def products(lo, hi):
        np.matmul(a[lo:hi], b[lo:hi], out=out[lo:hi])
    if (B < 2 or size < INTRA_OP_MIN_ELEMENTS or usable_cores() != 2
            or _openblas_threads_setter() is None or not intra_op_threads()):
        products(0, B)                                       # whole, on BLAS's own threads
    else:
        with blas_threads(1):
            split_work(B, size, products)
    return out


# ---------------------------------------------------------------------------------------------
# OpenBLAS and the allocator
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def keep_freed_memory():
    """Ask glibc's malloc to keep freed arrays below 16 MB for reuse, in one arena.

    A training step allocates and frees the same arrays (im2col columns, activations) every
    iteration. glibc serves an array above its mmap threshold by a fresh mmap whose pages the
    kernel must fault in and zero on first touch, and that threshold moves with what was
    freed last; below it, each thread allocates from an arena of its own. Here the threshold
    is fixed at 16 MB, there is one arena, and up to 1 GB of free heap is kept: the demos'
    arrays (a few MB) are recycled from the heap (BENCHMARKS.md, session 2), the big arrays of
    a 600-pixel VGG16 step go back to the OS when freed, so the process holds about what it
    uses (plus the free heap kept) rather than each thread's peak (session 8), and the heap is
    not handed back and faulted in again at every step: with 256 MB kept, a VGG16 step at
    224x224 spent 100-170 ms of system time a step on page faults, and the 600-pixel step
    took 6-12% longer (session 11).
    `tinyrcnn.speed.enable()` calls this.
    TINYRCNN_DEFAULT_MALLOC=1 leaves malloc alone. Returns True where it took effect (Linux
    with glibc), False elsewhere.
    """
    if os.environ.get('TINYRCNN_DEFAULT_MALLOC'):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL('libc.so.6')
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # from <malloc.h>
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 16 << 20) and libc.mallopt(M_ARENA_MAX, 1)
                    and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
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
    is loaded), so that its idle threads sleep soon after a product. `split_work` runs
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
    that runs its own threads (`parts.backward_parts_on_threads`, `matmul_stack`), so that two
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
