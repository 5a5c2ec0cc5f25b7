"""`cupy.random` of the stand-in: a NumPy generator whose draws land on the 'device'.

CuPy's generator is not NumPy's: the same seed gives other numbers, as on a real GPU.
"""
import numpy as np

from ._core import _wrap

_gen = [np.random.default_rng(0)]


def seed(seed=None):
    _gen[0] = np.random.default_rng(seed)


def random(size=None, dtype=np.float64):
    return _wrap(np.asarray(_gen[0].random(size, dtype=dtype)))


random_sample = random


def rand(*shape):
    return random(shape or None)


def standard_normal(size=None, dtype=np.float64):
    return _wrap(np.asarray(_gen[0].standard_normal(size, dtype=dtype)))


def randn(*shape):
    return standard_normal(shape or None)


def normal(loc=0.0, scale=1.0, size=None):
    return _wrap(np.asarray(_gen[0].normal(loc, scale, size)))


def uniform(low=0.0, high=1.0, size=None):
    return _wrap(np.asarray(_gen[0].uniform(low, high, size)))


def randint(low, high=None, size=None, dtype=np.int64):
    return _wrap(np.asarray(_gen[0].integers(low, high, size, dtype=dtype)))
