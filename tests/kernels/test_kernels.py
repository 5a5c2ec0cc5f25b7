"""The CUDA sources, checked without a GPU: every `.cu` compiles with nvcc --ptx, and the
kernels run on the CPU through kernels/compat.h and agree with the NumPy path."""
import glob
import os
import shutil
import subprocess

import numpy as np
import pytest

from tinyrcnn.backend import KERNEL_DIR
from tinyrcnn.kernels import cpu
from tinyrcnn.ops import conv, pool
from helpers import distinct

CU_FILES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(KERNEL_DIR, '*.cu')))
needs_cxx = pytest.mark.skipif(cpu.compiler() is None, reason='no C++ compiler')


def test_there_are_kernels():
    assert {'im2col.cu', 'max_pool.cu'} <= set(CU_FILES)


@pytest.mark.skipif(shutil.which('nvcc') is None, reason='nvcc is not installed')
@pytest.mark.parametrize('name', CU_FILES)
@pytest.mark.parametrize('ctype', ['float', 'double'])
def test_cu_compiles_with_nvcc(name, ctype, tmp_path):
    out = tmp_path / (name + '.ptx')
    r = subprocess.run(['nvcc', '--ptx', '-std=c++14', f'-Dscalar_t={ctype}', f'-I{KERNEL_DIR}',
                        os.path.join(KERNEL_DIR, name), '-o', str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ptx = out.read_text()
    assert '.entry' in ptx                       # at least one kernel was emitted


@needs_cxx
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('k,stride,pad', [(3, 1, 1), (3, 2, 1), (2, 3, 0), (5, 2, 2)])
def test_im2col_col2im_kernels_on_cpu(dtype, k, stride, pad):
    lib = cpu.build('im2col.cu', dtype)
    x = distinct((2, 3, 9, 8), 1, dtype)
    N, C, H, W = x.shape
    Ho, Wo = conv.conv_output_size(H, k, stride, pad), conv.conv_output_size(W, k, stride, pad)
    cols = np.zeros((N, C * k * k, Ho * Wo), dtype)
    cpu.call(lib, 'im2col', x, cols, N, C, H, W, k, k, stride, pad, Ho, Wo, dtype=dtype)
    np.testing.assert_array_equal(cols, conv.im2col(x, k, k, stride, pad))
    g = distinct(cols.shape, 2, dtype)
    gx = np.zeros_like(x)
    cpu.call(lib, 'col2im', g, gx, N, C, H, W, k, k, stride, pad, Ho, Wo, dtype=dtype)
    np.testing.assert_allclose(gx, conv.col2im(g, x.shape, k, k, stride, pad),
                               rtol=1e-6 if dtype == np.float32 else 1e-14)


@needs_cxx
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('k,stride', [(2, 2), (3, 2), (2, 1)])
def test_max_pool_kernels_on_cpu(dtype, k, stride):
    lib = cpu.build('max_pool.cu', dtype)
    x = distinct((2, 3, 9, 8), 3, dtype)
    N, C, H, W = x.shape
    Ho, Wo = (H - k) // stride + 1, (W - k) // stride + 1
    y = np.zeros((N, C, Ho, Wo), dtype)
    argmax = np.zeros((N, C, Ho, Wo), np.int64)
    cpu.call(lib, 'max_pool_forward', x, y, argmax, N * C, H, W, k, stride, Ho, Wo, dtype=dtype)
    y_ref, argmax_ref = pool._forward_cpu(x, k, stride, Ho, Wo)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(argmax, argmax_ref)
    gy = distinct(y.shape, 4, dtype)
    gx = np.zeros_like(x)
    cpu.call(lib, 'max_pool_backward', gy, argmax, gx, N * C, H, W, Ho, Wo, dtype=dtype)
    # overlapping windows sum in a different order (NumPy's bincount adds in float64)
    np.testing.assert_allclose(gx, pool._backward_cpu(gy, argmax_ref, x.shape, stride < k),
                               rtol=1e-6, atol=1e-6 if dtype == np.float32 else 1e-15)


def test_cpu_call_rejects_non_contiguous_arrays():
    lib = cpu.build('max_pool.cu', np.float64) if cpu.compiler() else None
    if lib is None:
        pytest.skip('no C++ compiler')
    with pytest.raises(ValueError, match='C-contiguous'):
        cpu.call(lib, 'max_pool_forward', np.zeros((4, 4))[:, ::2])
