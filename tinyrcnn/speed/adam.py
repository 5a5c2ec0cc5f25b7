"""Adam's CPU speed path: the update of one parameter in one pass (`adam.cpp`), where
`optim.Adam.step` makes about a dozen NumPy passes over its arrays (about 10 ms a step for the
demos' 2.1 million weights). The same operations in the same order and dtype, so the same bits
(tests/speed/test_speed.py); returns False, and the NumPy code runs, without a compiler or for
arrays it does not take (another dtype, not contiguous)."""
import numpy as np

from . import native

_SUFFIX = {np.dtype(np.float32): 'f32', np.dtype(np.float64): 'f64'}


def compiled_adam(p, g, m, v, one_minus_b1, b1, b2, c2, eps, step):
    """p, m, v updated in place from gradient g (arrays of one dtype); the constants as
    `optim.Adam.step` rounds them to that dtype. True where it ran."""
    arrays = (p, g, m, v)
    if (p.dtype not in _SUFFIX or any(a.dtype != p.dtype or a.shape != p.shape
                                      or not a.flags.c_contiguous for a in arrays)):
        return False
    lib = native.library('adam.cpp', {f'adam_{s}': [native.pointer] * 4 + [native.i64]
                                      + [native.double] * 6 for s in _SUFFIX.values()},
                         'Adam runs its NumPy passes', optimise='-O2 -ffp-contract=off')
    if lib is None:
        return False
    getattr(lib, f'adam_{_SUFFIX[p.dtype]}')(*(a.ctypes.data for a in arrays), p.size,
                                             *(float(c) for c in (one_minus_b1, b1, b2, c2, eps, step)))
    return True
