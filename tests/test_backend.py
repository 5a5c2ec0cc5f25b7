"""The allocator switch of tinyrcnn.backend (the rest of the backend is tested with the ops)."""


def test_keep_freed_memory_takes_effect_on_glibc(monkeypatch):
    import platform
    from tinyrcnn import backend
    backend.keep_freed_memory.cache_clear()
    monkeypatch.setenv('TINYRCNN_DEFAULT_MALLOC', '1')
    assert backend.keep_freed_memory() is False                  # the opt-out is honoured
    backend.keep_freed_memory.cache_clear()
    monkeypatch.delenv('TINYRCNN_DEFAULT_MALLOC')
    assert backend.keep_freed_memory() is (platform.libc_ver()[0] == 'glibc')


def _blas_threads_now(setter):
    n = setter(1)                   # OpenBLAS's setter returns the previous number: read it back
    setter(n)
    return n


def test_blas_threads_is_scoped_and_threaded_parts_give_the_cores_back():
    """Regression: the worker threads of `parallel.backward_parts` used to set OpenBLAS to one
    thread from a pool initializer, which OpenBLAS applies to the whole process, so every matrix
    product after a threaded training step ran on one core."""
    import numpy as np
    import pytest
    from tinyrcnn import backend, parallel
    setter = backend._openblas_threads_setter()
    if setter is None:
        pytest.skip('NumPy is not linked to OpenBLAS here')
    before = _blas_threads_now(setter)
    setter(2)
    try:
        with backend.blas_threads(1) as took:
            assert took and _blas_threads_now(setter) == 1
        assert _blas_threads_now(setter) == 2
        seen = []

        def run(part):
            seen.append(_blas_threads_now(setter))
            import tinyrcnn as tr
            w = tr.Tensor(np.ones(3), requires_grad=True)
            return [(w * part).sum()], 1.0
        w_losses = parallel.backward_parts(run, [1.0, 2.0], [], threads=2)
        assert seen == [1, 1] and w_losses == [3.0 + 6.0]
        assert _blas_threads_now(setter) == 2              # restored after the threaded step
    finally:
        setter(before)


def test_import_tinyrcnn_first_lets_openblas_threads_sleep():
    """`import tinyrcnn` before NumPy sets OPENBLAS_THREAD_TIMEOUT (unless the user chose one),
    which is what lets `parallel.split_work` use the second core; NumPy first: no split."""
    import os
    import subprocess
    import sys
    import pytest
    from tinyrcnn import backend
    if backend._openblas_threads_setter() is None:
        pytest.skip('NumPy is not linked to OpenBLAS here')
    env = {k: v for k, v in os.environ.items() if k != 'OPENBLAS_THREAD_TIMEOUT'}
    probe = 'from tinyrcnn import backend; print(backend.blas_idle_sleeps())'
    out = [subprocess.run([sys.executable, '-c', first + probe], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()
           for first in ('import tinyrcnn; ', 'import numpy; import tinyrcnn; ')]
    assert out == ['True', 'False']


def test_blas_threads_blocks_that_overlap_on_two_threads_restore_once():
    """A enters, B enters, A leaves, B leaves: the number is restored when the last one
    leaves, not to A's "previous" (which would be B's one thread, for good)."""
    import threading
    import pytest
    from tinyrcnn import backend
    setter = backend._openblas_threads_setter()
    if setter is None:
        pytest.skip('NumPy is not linked to OpenBLAS here')
    before = _blas_threads_now(setter)
    setter(2)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    inside = []

    def a():
        with backend.blas_threads(1):
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def b():
        a_in.wait(10)
        with backend.blas_threads(1):
            b_in.set()
            a_out.wait(10)
            inside.append(_blas_threads_now(setter))      # A has left; B still needs one
    try:
        threads = [threading.Thread(target=f) for f in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert inside == [1] and _blas_threads_now(setter) == 2
    finally:
        setter(before)
