"""Adam's CPU speed path: the update of one parameter in one pass (`adam.cpp`), where
`optim.Adam.step` makes about a dozen NumPy passes over its arrays (about 10 ms a step for the
demos' 2.1 million weights). The same operations in the same order and dtype, so the same bits
(tests/speed/test_speed.py); a large parameter's two halves run on two threads
(`threads.split_work`: element by element, so the same bits). Returns False, and the NumPy code
runs, without a compiler or for arrays it does not take (another dtype, not contiguous)."""
from . import native
from .threads import split_work

_SIGNATURES = {'adam': [native.pointer] * 4 + [native.i64] + [native.double] * 6}   # adam.cpp


def compiled_adam(p, g, m, v, one_minus_b1, b1, b2, c2, eps, step):
    """p, m, v updated in place from gradient g (arrays of one dtype); the constants as
    `optim.Adam.step` rounds them to that dtype. True where it ran."""
    arrays = (p, g, m, v)
    if any(a.dtype != p.dtype or a.shape != p.shape or not a.flags.c_contiguous for a in arrays):
        return False
    fn = native.typed('adam.cpp', 'adam', p.dtype, _SIGNATURES, 'Adam runs its NumPy passes',
                      optimise='-O2 -ffp-contract=off')
    if fn is None:
        return False
    addresses, size = [a.ctypes.data for a in arrays], p.itemsize
    constants = [float(c) for c in (one_minus_b1, b1, b2, c2, eps, step)]
    split_work(p.size, p.size, lambda lo, hi: fn(*(a + lo * size for a in addresses), hi - lo,
                                                 *constants))   # halves on two threads, same bits
    return True
