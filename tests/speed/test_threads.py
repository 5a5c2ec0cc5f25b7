"""tinyrcnn.speed.threads: ops split over two threads give the one-thread numbers exactly;
scoped BLAS thread counts; the allocator switch; the OpenBLAS timeout of `python -m tinyrcnn`."""
import os
import subprocess
import sys

import numpy as np
import pytest

import tinyrcnn as tr
import tinyrcnn.functional as F
from tinyrcnn import speed
from tinyrcnn.speed import threads
from tinyrcnn.speed import winograd


def forward_backward(seed):
    rng = np.random.default_rng(seed)
    x = tr.Tensor(rng.standard_normal((2, 6, 21, 18)).astype(np.float32), requires_grad=True)
    w = tr.Tensor(rng.standard_normal((4, 6, 3, 3)).astype(np.float32), requires_grad=True)
    b = tr.Tensor(rng.standard_normal(4).astype(np.float32), requires_grad=True)
    with speed.enabled():
        y = F.max_pool2d(F.relu(F.conv2d(x, w, b, padding=1)), 2)  # Winograd (the monkeypatch)
        z = F.conv2d(y, w[:, :4], stride=2)                       # a strided conv: im2col + col2im
        z.backward(rng.standard_normal(z.shape).astype(np.float32))
    return [y.data, z.data, x.grad, w.grad, b.grad]


@pytest.mark.parametrize('seed', [0, 1])
def test_ops_split_over_threads_equal_the_whole(monkeypatch, seed):
    monkeypatch.setattr(winograd, 'WINOGRAD_MIN_CHANNELS', 1)
    monkeypatch.setattr(winograd, 'WINOGRAD_MIN_PIXELS', 1)
    monkeypatch.setattr(threads, 'intra_op_threads', lambda: False)
    whole = forward_backward(seed)
    calls = []
    split = threads.split_work

    def counting(n, elements, fn):
        calls.append(n)
        return split(n, elements, fn)
    monkeypatch.setattr(threads, 'intra_op_threads', lambda: True)
    monkeypatch.setattr(threads, 'INTRA_OP_MIN_ELEMENTS', 0)   # split everything in two
    for module in ('conv', 'layers', 'winograd', 'winograd4'):
        monkeypatch.setattr(f'tinyrcnn.speed.{module}.split_work', counting)
    halves = forward_backward(seed)
    assert len(calls) >= 9            # 4 Winograd transforms, im2col, col2im, pool x2, ReLU x2
    for a, b in zip(whole, halves):
        np.testing.assert_array_equal(a, b)


def test_split_work_covers_the_range_once(monkeypatch):
    monkeypatch.setattr(threads, 'intra_op_threads', lambda: True)
    seen = np.zeros(1001, int)

    def fn(lo, hi):
        seen[lo:hi] += 1
    threads.split_work(1001, 1 << 30, fn)
    assert (seen == 1).all()


def test_no_split_off_the_main_thread_or_with_a_spinning_blas(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor
    monkeypatch.setattr(threads, 'blas_idle_sleeps', lambda: True)
    assert threads.intra_op_threads() is ((__import__('os').cpu_count() or 1) >= 2)
    with ThreadPoolExecutor(1) as pool:                        # training's image threads
        assert pool.submit(threads.intra_op_threads).result() is False
    monkeypatch.setattr(threads, 'blas_idle_sleeps', lambda: False)
    assert threads.intra_op_threads() is False


def test_split_work_in_a_forked_child_does_not_hang(monkeypatch):
    """Selective search forks worker processes; a child inherits the helper pool without its
    thread, so the pools are forgotten at fork (`os.register_at_fork`)."""
    import multiprocessing
    if 'fork' not in multiprocessing.get_all_start_methods():
        pytest.skip('no fork on this platform')
    monkeypatch.setattr(threads, 'intra_op_threads', lambda: True)
    seen = np.zeros(10, int)

    def fn(lo, hi):
        seen[lo:hi] += 1
    threads.split_work(10, 1 << 30, fn)                       # the helper thread exists now
    child = multiprocessing.get_context('fork').Process(
        target=threads.split_work, args=(10, 1 << 30, fn))
    child.start()
    child.join(30)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and child.exitcode == 0 and (seen == 1).all()


def test_matmul_stack_equals_numpy_split_or_not(monkeypatch):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((16, 20, 30)), rng.standard_normal((16, 30, 40))
    whole = np.matmul(a, b)
    monkeypatch.setattr(threads, 'intra_op_threads', lambda: True)
    monkeypatch.setattr(threads, 'INTRA_OP_MIN_ELEMENTS', 0)
    monkeypatch.setattr(threads, 'usable_cores', lambda: 2)
    np.testing.assert_array_equal(threads.matmul_stack(a, b), whole)
    np.testing.assert_array_equal(threads.matmul_stack(a[:1], b[:1]), whole[:1])


def test_matmul_stack_splits_products_with_a_small_output_and_large_operands(monkeypatch):
    """The filter gradient's shape: (4, 3) outputs from (4, 500) @ (500, 3). The size that
    decides the split is the largest operand's, and the halves equal the whole."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((6, 4, 500)), rng.standard_normal((6, 3, 500)).transpose(0, 2, 1)
    whole = np.matmul(a, b)
    calls = []
    split_work = threads.split_work
    monkeypatch.setattr(threads, 'split_work', lambda n, size, fn: (calls.append(size),
                                                                   split_work(n, size, fn)))
    monkeypatch.setattr(threads, 'intra_op_threads', lambda: True)
    monkeypatch.setattr(threads, 'INTRA_OP_MIN_ELEMENTS', 1000)       # out: 72, a: 12000
    monkeypatch.setattr(threads, 'usable_cores', lambda: 2)
    monkeypatch.setattr(threads, '_openblas_threads_setter', lambda: (lambda n: 1))
    np.testing.assert_array_equal(threads.matmul_stack(a, b), whole)
    assert calls == [a.size]


def test_keep_freed_memory_takes_effect_on_glibc(monkeypatch):
    import platform
    threads.keep_freed_memory.cache_clear()
    monkeypatch.setenv('TINYRCNN_DEFAULT_MALLOC', '1')
    assert threads.keep_freed_memory() is False                 # the opt-out is honoured
    threads.keep_freed_memory.cache_clear()
    monkeypatch.delenv('TINYRCNN_DEFAULT_MALLOC')
    assert threads.keep_freed_memory() is (platform.libc_ver()[0] == 'glibc')


_MALLOC_CHECK = """
import ctypes, os
import numpy as np
from tinyrcnn.speed import threads

def resident_mb():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20

assert threads.keep_freed_memory()
for _ in range(2):      # 24 MB: glibc's own threshold would rise to it after the first free
    before = resident_mb()
    big = np.ones(6 * 2 ** 20, np.float32)
    assert resident_mb() - before > 20, 'the big array was not touched'
    del big
    assert resident_mb() - before < 4, f'24 MB freed, {resident_mb() - before:.1f} MB still resident'
small = [np.ones(2 ** 20, np.float32) for _ in range(8)]   # 8 x 4 MB, kept when freed
del small
before = resident_mb()
small = [np.ones(2 ** 20, np.float32) for _ in range(8)]   # reused: no new pages
assert len(small) == 8 and resident_mb() - before < 8, 'the small arrays took new pages'
print('ok')
"""


def test_big_arrays_go_back_to_the_os_and_small_ones_are_kept():
    # in a fresh process: a heap that earlier tests used may hold a free chunk of 24 MB or more
    # from before the settings, which serves the big array from the heap (and keeps it there)
    import platform
    if platform.libc_ver()[0] != 'glibc':
        pytest.skip('the malloc settings are glibc\'s')
    env = {k: v for k, v in os.environ.items() if k != 'TINYRCNN_DEFAULT_MALLOC'}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, '-c', _MALLOC_CHECK], capture_output=True, text=True,
                       env=env, cwd=root, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr[-2000:]


def _blas_threads_now(setter):
    n = setter(1)                   # OpenBLAS's setter returns the previous number: read it back
    setter(n)
    return n


def test_blas_threads_is_scoped_and_threaded_parts_give_the_cores_back():
    """Regression: the worker threads of the threaded training step used to set OpenBLAS to one
    thread from a pool initializer, which OpenBLAS applies to the whole process, so every matrix
    product after a threaded training step ran on one core."""
    from tinyrcnn.train.parts import backward_parts
    setter = threads._openblas_threads_setter()
    if setter is None:
        pytest.skip('NumPy is not linked to OpenBLAS here')
    before = _blas_threads_now(setter)
    setter(2)
    try:
        with threads.blas_threads(1) as took:
            assert took and _blas_threads_now(setter) == 1
        assert _blas_threads_now(setter) == 2
        seen = []

        model = tr.nn.Linear(3, 1)

        def run(model, part):
            seen.append(_blas_threads_now(setter))
            return [(model.weight * part).sum()], 1.0
        model.weight.data[:] = 1
        with speed.enabled():
            w_losses = backward_parts(run, [1.0, 2.0], model, threads=2)
        assert seen == [1, 1] and w_losses == [3.0 + 6.0]
        assert _blas_threads_now(setter) == 2              # restored after the threaded step
    finally:
        setter(before)


def test_the_command_line_lets_openblas_threads_sleep():
    """`python -m tinyrcnn` sets OPENBLAS_THREAD_TIMEOUT before NumPy loads (unless the user
    chose a value), which is what lets `split_work` use the second core; `import tinyrcnn`
    does not. The probe stands in for the command line's entry point."""
    if threads._openblas_threads_setter() is None:
        pytest.skip('NumPy is not linked to OpenBLAS here')
    env = {k: v for k, v in os.environ.items() if k != 'OPENBLAS_THREAD_TIMEOUT'}
    probe = ('import runpy, sys\nsys.argv = ["tinyrcnn", "--help"]\n'
             'try:\n    runpy.run_module("tinyrcnn", run_name="__main__")\n'
             'except SystemExit:\n    pass\n'
             'from tinyrcnn.speed import threads\nprint(threads.blas_idle_sleeps())')
    out = subprocess.run([sys.executable, '-c', probe], env=env, capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == 'True', out.stderr
    plain = 'import tinyrcnn; from tinyrcnn.speed import threads; print(threads.blas_idle_sleeps())'
    out = subprocess.run([sys.executable, '-c', plain], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == 'False', out.stderr


def test_blas_threads_blocks_that_overlap_on_two_threads_restore_once():
    """A enters, B enters, A leaves, B leaves: the number is restored when the last one
    leaves, not to A's "previous" (which would be B's one thread, for good)."""
    import threading
    setter = threads._openblas_threads_setter()
    if setter is None:
        pytest.skip('NumPy is not linked to OpenBLAS here')
    before = _blas_threads_now(setter)
    setter(2)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    inside = []

    def a():
        with threads.blas_threads(1):
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def b():
        a_in.wait(10)
        with threads.blas_threads(1):
            b_in.set()
            a_out.wait(10)
            inside.append(_blas_threads_now(setter))      # A has left; B still needs one
    try:
        workers = [threading.Thread(target=f) for f in (a, b)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(20)
        assert inside == [1] and _blas_threads_now(setter) == 2
    finally:
        setter(before)
