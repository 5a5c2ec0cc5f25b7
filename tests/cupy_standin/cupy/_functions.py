"""The stand-in's module-level functions: NumPy's, behind CuPy's rules (see `_core`).

Four groups: array creation (no copy), copies between host and device (`asarray`, `asnumpy`),
ufuncs (objects with `__call__`, `at`, `reduce`, as CuPy's), and the rest; the functions whose
result size or order the host must learn first (sorts, nonzero, unique, ...) count as syncs.
"""
import builtins

import numpy as np

from . import _standin
from ._core import _SCALARS, _arguments, _index, _operand, _scattered, _to_host, _wrap, ndarray


# ----- creation: allocations on the device, nothing copied ----------------------------------------
def _creation(np_fn):
    def fn(*args, **kwargs):
        return _wrap(np_fn(*args, **kwargs))
    fn.__name__ = np_fn.__name__
    return fn


empty, zeros, ones, full = map(_creation, (np.empty, np.zeros, np.ones, np.full))
arange, linspace, eye, identity = map(_creation, (np.arange, np.linspace, np.eye, np.identity))


def _like(np_fn):
    def fn(a, *args, **kwargs):
        return _wrap(np_fn(_operand(a, np_fn.__name__), *args, **kwargs))
    fn.__name__ = np_fn.__name__
    return fn


empty_like, zeros_like, ones_like, full_like = map(
    _like, (np.empty_like, np.zeros_like, np.ones_like, np.full_like))


# ----- between host and device --------------------------------------------------------------------
def array(obj, dtype=None, copy=True, order='K', ndmin=0):
    """A device array; host data (NumPy arrays, lists, scalars) is uploaded."""
    if isinstance(obj, ndarray):
        return _wrap(np.array(obj._a, dtype=dtype, copy=copy or None, order=order, ndmin=ndmin))
    _standin.record('h2d', 'cupy.array/asarray of host data')
    return _wrap(np.array(obj, dtype=dtype, copy=True, order=order, ndmin=ndmin))


def asarray(a, dtype=None, order=None):
    if isinstance(a, ndarray):
        return a.astype(dtype, copy=False) if dtype is not None else a
    return array(a, dtype=dtype, order=order or 'K')


def ascontiguousarray(a, dtype=None):
    """Device arrays only: CuPy's takes no host data."""
    if not isinstance(a, ndarray):
        raise TypeError(f'ascontiguousarray takes a cupy.ndarray, got {type(a)} (CuPy stand-in)')
    if a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    return _wrap(np.ascontiguousarray(a._a, dtype=dtype))


def asnumpy(a, stream=None, order='C', out=None):
    if isinstance(a, ndarray):
        return a.get(out=out)
    return np.asarray(a, order=order)


# ----- ufuncs -------------------------------------------------------------------------------------
class ufunc:
    """A CuPy ufunc: NumPy's, on device operands only (a NumPy array raises TypeError)."""

    def __init__(self, np_ufunc):
        self._np = np_ufunc
        self.__name__ = np_ufunc.__name__
        self.nin, self.nout = np_ufunc.nin, np_ufunc.nout

    def _out(self, out):
        outs = out if isinstance(out, tuple) else (out,)
        for o in outs:
            if not isinstance(o, ndarray):
                raise TypeError(f'{self.__name__}: out must be a cupy.ndarray, got {type(o)}')
        return tuple(o._a for o in outs)

    def __call__(self, *args, out=None, **kwargs):
        args = [_operand(a, f'cupy.{self.__name__}') for a in args]
        if out is None:
            return _wrap(self._np(*args, **kwargs))
        self._np(*args, out=self._out(out), **kwargs)
        return out

    def at(self, a, indices, b=None):
        if not isinstance(a, ndarray):
            raise TypeError(f'cupy.{self.__name__}.at works on a cupy.ndarray, got {type(a)}')
        indices, _ = _index(indices)
        if b is None:
            self._np.at(a._a, indices)
        else:
            self._np.at(a._a, indices, _scattered(a, b, f'cupy.{self.__name__}.at'))

    def reduce(self, a, *args, **kwargs):
        return _wrap(self._np.reduce(_operand(a, f'cupy.{self.__name__}.reduce'), *args, **kwargs))

    def __repr__(self):
        return f'<ufunc {self.__name__!r} (CuPy stand-in)>'


_UFUNCS = ('add subtract multiply divide true_divide floor_divide power remainder mod fmod '
           'maximum minimum fmax fmin exp expm1 log log1p log2 log10 sqrt square abs absolute '
           'sign negative positive reciprocal floor ceil trunc rint sin cos tan tanh arctan2 '
           'isfinite isinf isnan signbit copysign logical_and logical_or logical_xor logical_not '
           'greater greater_equal less less_equal equal not_equal bitwise_and bitwise_or '
           'bitwise_xor invert left_shift right_shift matmul conjugate').split()
for _name in _UFUNCS:
    globals()[_name] = ufunc(getattr(np, _name))


def where(condition, x=None, y=None):
    if x is None and y is None:
        return nonzero(condition)
    return _wrap(np.where(*(_operand(v, 'cupy.where') for v in (condition, x, y))))


# ----- everything else: NumPy's function on the unwrapped arguments -------------------------------
def _device(np_fn, sync=None):
    """NumPy's np_fn on device arrays (host arrays raise); sync names the blocking op. An
    out= array receives the result (the returned wrapper shares its memory)."""
    def fn(*args, **kwargs):
        name = f'cupy.{np_fn.__name__}'
        args = [_arguments(a, name) for a in args]
        kwargs = {k: _arguments(v, name) for k, v in kwargs.items()}
        if sync:
            _standin.record('sync', sync)
        return _wrap(np_fn(*args, **kwargs))
    fn.__name__ = np_fn.__name__
    return fn


_PLAIN = ('concatenate stack hstack vstack expand_dims squeeze broadcast_to reshape transpose '
          'swapaxes moveaxis ravel tile repeat flip atleast_1d atleast_2d sum mean std var prod '
          'cumsum max min amax amin argmax argmin all any count_nonzero dot outer take '
          'take_along_axis searchsorted round around isclose array_equal diff pad clip').split()
for _name in _PLAIN:
    globals()[_name] = _device(getattr(np, _name))


def _stable(np_fn):
    """CuPy's sorts are stable, and take no other kind: NumPy's default (quicksort) is not."""
    fn = _device(np_fn, sync=np_fn.__name__)

    def sort(a, axis=-1, kind=None):
        if kind not in (None, 'stable'):
            raise ValueError(f'Unsupported kind was given: {kind!r} (CuPy sorts are stable)')
        return fn(a, axis, kind='stable')
    sort.__name__ = np_fn.__name__
    return sort


sort, argsort = _stable(np.sort), _stable(np.argsort)
nonzero = _device(np.nonzero, sync='nonzero')
flatnonzero = _device(np.flatnonzero, sync='flatnonzero')
argwhere = _device(np.argwhere, sync='argwhere')
unique = _device(np.unique, sync='unique')
compress = _device(np.compress, sync='compress')
bincount = _device(np.bincount, sync='bincount')


def split(ary, indices_or_sections, axis=0):
    """The split points are host values (a list or a NumPy array), as in CuPy."""
    points = indices_or_sections
    if isinstance(points, np.ndarray):
        points = points.tolist()
    if isinstance(points, ndarray):
        points = _to_host(points, 'split points').tolist()
    return _wrap(np.split(_operand(ary, 'cupy.split'), points, axis))


def copy(a, order='K'):
    return _wrap(np.array(_operand(a, 'cupy.copy'), order=order, copy=True))


def allclose(a, b, rtol=1e-5, atol=1e-8, equal_nan=False):
    return _wrap(np.asarray(np.allclose(_operand(a, 'cupy.allclose'), _operand(b, 'cupy.allclose'),
                                        rtol, atol, equal_nan)))


def isscalar(x):
    return isinstance(x, _SCALARS)


def get_array_module(*args):
    import cupy
    return cupy if builtins.any(isinstance(a, ndarray) for a in args) else np
