"""The strict CuPy stand-in (tests/cupy_standin/): it refuses what CuPy refuses, checks kernel
launches against their C signatures, counts syncs by call site, and switches on and off."""
import re

import numpy as np
import pytest

import tinyrcnn as tr
from cupy_standin import switch
from cupy_standin.switch import standin, without_cupy
from tinyrcnn import backend
from tinyrcnn.kernels import cpu
from tinyrcnn.ops.roi_pool import RoIPool

pytestmark = switch.needs_compiler          # the kernels run through kernels/cpu.py


@pytest.fixture
def cp():
    with standin() as cupy:
        yield cupy


def test_device_arrays_never_become_host_arrays_implicitly(cp):
    a = cp.arange(6.0).reshape(2, 3)
    assert backend.is_cupy_array(a) and backend.get_array_module(a) is cp
    with pytest.raises(TypeError, match='Implicit conversion to a NumPy array is not allowed'):
        np.asarray(a)
    for host_operand in (lambda: a + np.ones(3), lambda: np.ones(3) * a,
                         lambda: cp.maximum(a, np.zeros(3)), lambda: cp.where(a > 1, a, np.ones(3)),
                         lambda: cp.concatenate([a, np.ones((1, 3))])):
        with pytest.raises(TypeError, match='Unsupported type'):
            host_operand()
    with pytest.raises(ValueError, match='non-scalar numpy.ndarray'):
        a[0] = np.ones(3)                                   # CuPy's fill refuses it too
    with pytest.raises(TypeError, match='ascontiguousarray'):
        cp.ascontiguousarray(np.ones(3))
    # scalars are fine (Python, NumPy, 0-d arrays), and results stay on the device
    b = a * 2.0 + np.float32(1) - np.array(0.5)
    assert backend.is_cupy_array(b) and backend.is_cupy_array(b.sum()) and b.sum().shape == ()
    np.testing.assert_array_equal(b.get(), np.arange(6.0).reshape(2, 3) * 2 + 0.5)
    assert backend.is_cupy_array(np.exp(a)) and backend.is_cupy_array(a[1, 2])


def test_syncs_and_copies_are_counted_where_they_happen(cp):
    a = cp.asarray(np.array([3.0, 1.0, 2.0, 1.0]))          # an upload before counting
    with cp._standin.counting() as outer:
        with cp._standin.counting() as tally:
            host = a.get()
            order = cp.argsort(a)
            total = float(a.sum())
            a[a > 1.5]                                      # a mask: the size is read back
            a[np.array([0, 2])]                             # a host index: uploaded behind the scenes
        a.tolist()
    assert tally.total('sync') == 4 and tally.total('d2h') == 2 and tally.total('h2d') == 1
    assert outer.total('sync') == 5
    sites = tally.by_site('sync')
    assert all(site.startswith('tests/test_cupy_standin.py:') for site in sites), sites
    assert {site.split(' ', 1)[1] for site in sites} == {
        '(.get())', '(argsort)', '(float())', '(boolean-mask indexing)'}
    assert total == 7.0 and host.tolist() == [3, 1, 2, 1]
    assert order.get().tolist() == [1, 3, 2, 0]             # CuPy sorts are stable: 1 before 3


def test_scatter_add_and_ufunc_at_accumulate_repeated_indices(cp):
    import cupyx
    x = cp.zeros(4, dtype=cp.float32)
    cupyx.scatter_add(x, cp.asarray([0, 0, 3]), cp.asarray([1, 2, 5], dtype=cp.float32))
    cp.add.at(x, cp.asarray([3]), cp.float32(1))
    assert x.get().tolist() == [3, 0, 0, 6]
    with pytest.raises(TypeError, match='only supports'):      # no int64 atomics in CuPy
        cupyx.scatter_add(cp.zeros(2, dtype=cp.int64), cp.asarray([0]), 1)


def _roi_module(cp, ctype='float'):
    return cp.RawModule(code=open(f'{backend.KERNEL_DIR}/roi_pool.cu').read(),
                        options=('-std=c++14', f'-Dscalar_t={ctype}', f'-I{backend.KERNEL_DIR}'))


def test_kernel_signatures_are_read_from_the_source(cp):
    module = _roi_module(cp)
    forward = [(p.pointer, p.dtype) for p in module.signatures['roi_pool_forward']]
    assert forward == [(True, np.float32)] * 3 + [(True, np.int64)] + [(False, np.int64)] * 6 \
        + [(False, np.float32)]
    nms = cp.RawModule(code=open(f'{backend.KERNEL_DIR}/nms.cu').read(),
                       options=('-Dscalar_t=double', f'-I{backend.KERNEL_DIR}'))
    mask_t = [p for p in nms.signatures['nms_mask'] if p.text.endswith('mask')]
    assert mask_t[0].dtype == np.uint64                     # through nms.cu's own typedef
    with pytest.raises(RuntimeError, match='named symbol not found'):
        module.get_function('roi_pool_sideways')


def test_a_launch_with_the_wrong_arguments_fails_at_once(cp):
    kern = _roi_module(cp).get_function('roi_pool_forward')
    x = cp.asarray(np.random.default_rng(0).standard_normal((1, 2, 5, 6)).astype(np.float32))
    rois = cp.asarray(np.array([[0, 0, 0, 40, 30]], np.float32))
    y, argmax = cp.empty((1, 2, 2, 2), dtype=cp.float32), cp.empty((1, 2, 2, 2), dtype=cp.int64)
    dims = tuple(np.int64(v) for v in (1, 2, 5, 6, 2, 2))
    good = (x, rois, y, argmax) + dims + (np.float32(1 / 16),)
    kern((1,), (256,), good)                                # the right ones run, on the CPU
    want, _ = RoIPool.forward_numpy(x.get(), rois.get(), (2, 2), 1 / 16)   # the NumPy spec
    np.testing.assert_array_equal(y.get(), want)
    bad = [('takes 11 arguments, got 8', TypeError, good[:8]),
           ('argument 0 (const scalar_t* x): expected a float32 array, got float64', TypeError,
            (x.astype(cp.float64),) + good[1:]),
           ('must be C-contiguous', ValueError, (x[:, :, :, ::2],) + good[1:]),
           ('expected numpy.int64', TypeError, good[:4] + (1,) + good[5:]),        # a Python int
           ('expected numpy.float32', TypeError, good[:-1] + (1 / 16,)),           # a Python float
           ('expected a cupy.ndarray', TypeError, (x.get(),) + good[1:])]          # a host array
    for expected, error, args in bad:
        with pytest.raises(error, match=re.escape(expected)):
            kern((1,), (256,), args)
    with pytest.raises(ValueError, match='exceeds the CUDA limits'):
        kern((1,), (2048,), good)
    with pytest.raises(ValueError, match='more than 1024 threads'):
        kern((1,), (64, 32), good)


def test_kernels_run_the_cpu_build_of_the_same_source(cp):
    """im2col through the stand-in equals a direct call of kernels/cpu.py."""
    x = np.random.default_rng(1).standard_normal((1, 2, 4, 5))
    cols = np.empty((1, 2 * 9, 20))
    cpu.call(cpu.build('im2col.cu', np.float64), 'im2col', x, cols, 1, 2, 4, 5, 3, 3, 1, 1, 4, 5)
    kern = backend.kernel('im2col.cu', 'im2col', np.float64)
    out = cp.empty(cols.shape, dtype=cp.float64)
    backend.launch(kern, out.size, (cp.asarray(x), out, 1, 2, 4, 5, 3, 3, 1, 1, 4, 5), np.float64)
    np.testing.assert_array_equal(out.get(), cols)


def test_switching_on_and_off_in_process():
    before = tr.cuda_available()
    with standin() as cupy:
        assert tr.cuda_available() and backend._cupy() is cupy
        assert cupy.cuda.runtime.getDeviceCount() == 1
        t = tr.Tensor(np.ones(3, np.float32)).to('cuda')
        assert t.device == 'cuda' and t.numpy().tolist() == [1, 1, 1]
    assert tr.cuda_available() == before                    # the machine as it is, again
    with without_cupy():
        assert not tr.cuda_available() and backend._cupy() is None
    assert tr.cuda_available() == before
