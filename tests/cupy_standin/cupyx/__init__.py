"""`cupyx` of the CuPy stand-in: scatter_add, which tinyrcnn's backend calls."""
import numpy as np

from cupy._core import _index, _scattered, ndarray


def scatter_add(a, slices, value):
    """a[slices] += value with repeated indices accumulated (NumPy's add.at)."""
    if not isinstance(a, ndarray):
        raise TypeError(f'cupyx.scatter_add works on a cupy.ndarray, got {type(a)}')
    index, _ = _index(slices)
    np.add.at(a._a, index, _scattered(a, value, 'cupyx.scatter_add'))
