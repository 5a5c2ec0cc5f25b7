"""The stand-in's `cupy.ndarray`: a NumPy array that keeps to CuPy's rules.

CuPy's rules, as of CuPy 13/14, that the stand-in enforces:
  * no implicit conversion to the host: `np.asarray(a)` (and everything that calls `__array__`)
    raises TypeError; data leaves through `.get()`, `.item()`, `.tolist()`, `cupy.asnumpy` or
    `int()/float()/bool()`, and each of those is a blocking sync (`_standin`);
  * a NumPy array is no operand of a device operation (arithmetic, ufuncs, functions):
    TypeError "Unsupported type"; Python and NumPy scalars (and 0-d NumPy arrays) are fine;
  * a NumPy array or a list used as an index, or as the values of an advanced-index
    assignment, is uploaded implicitly (counted as h2d); a non-scalar NumPy value assigned
    through basic indexing raises ValueError, as CuPy's `fill` does;
  * reductions and integer indexing give 0-d device arrays, never host scalars.
"""
import copy
import numbers
import operator

import numpy as np

from . import _standin

_SCALARS = (numbers.Number, np.generic)


def _wrap(a):
    """A NumPy result as a device array (NumPy scalars become 0-d arrays, as CuPy returns)."""
    if isinstance(a, np.ndarray):
        out = object.__new__(ndarray)
        out._a = a
        return out
    if isinstance(a, np.generic):
        return _wrap(np.asarray(a))
    if isinstance(a, tuple):
        return tuple(_wrap(v) for v in a)
    if isinstance(a, list):
        return [_wrap(v) for v in a]
    return a


def _operand(x, where):
    """The NumPy value behind an operand of a device operation."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray) and x.ndim == 0 or isinstance(x, _SCALARS):
        return x
    raise TypeError(f'Unsupported type {type(x)} in {where}: a device operation takes CuPy arrays '
                    f'and scalars; copy host data with cupy.asarray first (CuPy stand-in)')


def _arguments(x, where):
    """Operands inside lists and tuples (concatenate's sequence), other values as they are."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray) and x.ndim > 0:
        return _operand(x, where)             # raises
    if isinstance(x, (list, tuple)):
        return type(x)(_arguments(v, where) for v in x)
    return x


def _index(index):
    """An index for the NumPy buffer. Device arrays are used as they are; host arrays and
    lists are uploaded, as CuPy does implicitly; a boolean mask makes the host wait to learn
    how many elements it selects."""
    items = index if isinstance(index, tuple) else (index,)
    out = []
    for item in items:
        if isinstance(item, ndarray):
            item = item._a
        elif isinstance(item, list) or isinstance(item, np.ndarray) and item.ndim > 0:
            item = np.asarray(item) if len(item) else np.zeros(0, np.int64)
            _standin.record('h2d', 'index uploaded implicitly')
        if isinstance(item, np.ndarray) and item.dtype == np.bool_ and item.ndim > 0:
            _standin.record('sync', 'boolean-mask indexing')
        out.append(item)
    return tuple(out) if isinstance(index, tuple) else out[0], any(
        isinstance(i, np.ndarray) and i.ndim > 0 for i in out)


def _scattered(target, value, where):
    """The values of an advanced-index assignment or scatter: host arrays are uploaded
    implicitly (counted), and CuPy's atomics exist only for these types."""
    if isinstance(value, np.ndarray) and value.ndim > 0:
        _standin.record('h2d', f'{where}: host values uploaded implicitly')
    elif not isinstance(value, ndarray):
        value = _operand(value, where)
    if where != 'assignment' and target.dtype not in _ATOMIC:
        raise TypeError(f'{where} only supports int32, float16, float32, float64, uint32, uint64, '
                        f'got {target.dtype} (CuPy stand-in)')
    return value._a if isinstance(value, ndarray) else value


_ATOMIC = tuple(map(np.dtype, (np.int32, np.float16, np.float32, np.float64, np.uint32, np.uint64)))


def _to_host(a, what):
    _standin.record('sync', what)
    _standin.record('d2h', what)
    return a._a


def _binary(op, reflected=False):
    def method(self, other):
        if not isinstance(other, (ndarray, np.ndarray) + _SCALARS):
            return NotImplemented             # e.g. a tinyrcnn Tensor: its __radd__ runs
        o = _operand(other, f'operator {op.__name__}')
        return _wrap(op(o, self._a) if reflected else op(self._a, o))
    return method


def _inplace(op):
    def method(self, other):
        op(self._a, _operand(other, f'operator {op.__name__}'))
        return self
    return method


def _unary(op):
    return lambda self: _wrap(op(self._a))


class ndarray:
    """cupy.ndarray(shape, dtype=float): an uninitialised device array."""

    __array_priority__ = 100                   # CuPy's: a NumPy array on the left defers to it
    __slots__ = ('_a',)

    def __init__(self, shape, dtype=float, order='C'):
        self._a = np.empty(shape, dtype, order=order)

    # ----- what describes the array (no data moves) --------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: _wrap(self._a.T))

    @property
    def device(self):
        from .cuda import Device
        return Device(0)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    # ----- leaving the device: each a blocking sync and a copy ---------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError('Implicit conversion to a NumPy array is not allowed. Please use `.get()` '
                        'to construct a NumPy array explicitly.')

    def get(self, stream=None, order='C', out=None):
        host = _to_host(self, '.get()').copy()
        if out is None:
            return host
        out[...] = host
        return out

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f'set() takes a NumPy array, got {type(arr)}')
        _standin.record('h2d', '.set()')
        self._a[...] = arr

    def item(self):
        return _to_host(self, '.item()').item()

    def tolist(self):
        return _to_host(self, '.tolist()').tolist()

    def __bool__(self):
        return bool(_to_host(self, 'bool()'))

    def __int__(self):
        return int(_to_host(self, 'int()'))

    def __float__(self):
        return float(_to_host(self, 'float()'))

    def __index__(self):
        return operator.index(_to_host(self, 'used as an int'))

    def __repr__(self):
        return repr(_to_host(self, 'repr()')).replace('array', 'cupy.ndarray', 1)

    def __str__(self):
        return str(_to_host(self, 'str()'))

    # ----- indexing ----------------------------------------------------------------------------
    def __getitem__(self, index):
        index, _ = _index(index)
        out = self._a[index]
        if isinstance(out, np.generic):        # an element: a 0-d view, as in CuPy
            items = index if isinstance(index, tuple) else (index,)
            out = self._a[items + (Ellipsis,)] if Ellipsis not in items else np.asarray(out)
        return _wrap(out)

    def __setitem__(self, index, value):
        index, advanced = _index(index)
        if not advanced and isinstance(value, np.ndarray) and value.ndim > 0:
            raise ValueError('non-scalar numpy.ndarray cannot be used for fill '
                             '(CuPy stand-in: upload it with cupy.asarray first)')
        self._a[index] = _scattered(self, value, 'assignment')

    # ----- NumPy's protocols: dispatch to the stand-in, with its checks --------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from . import _functions
        mine = getattr(_functions, ufunc.__name__, None)
        if not isinstance(mine, _functions.ufunc):
            return NotImplemented
        return getattr(mine, method)(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        import cupy
        mine = getattr(cupy, func.__name__, None)
        return NotImplemented if mine is None else mine(*args, **kwargs)

    # ----- arithmetic --------------------------------------------------------------------------
    __add__, __radd__ = _binary(operator.add), _binary(operator.add, True)
    __sub__, __rsub__ = _binary(operator.sub), _binary(operator.sub, True)
    __mul__, __rmul__ = _binary(operator.mul), _binary(operator.mul, True)
    __truediv__, __rtruediv__ = _binary(operator.truediv), _binary(operator.truediv, True)
    __floordiv__, __rfloordiv__ = _binary(operator.floordiv), _binary(operator.floordiv, True)
    __mod__, __rmod__ = _binary(operator.mod), _binary(operator.mod, True)
    __pow__, __rpow__ = _binary(operator.pow), _binary(operator.pow, True)
    __matmul__, __rmatmul__ = _binary(operator.matmul), _binary(operator.matmul, True)
    __and__, __rand__ = _binary(operator.and_), _binary(operator.and_, True)
    __or__, __ror__ = _binary(operator.or_), _binary(operator.or_, True)
    __xor__, __rxor__ = _binary(operator.xor), _binary(operator.xor, True)
    __lshift__, __rshift__ = _binary(operator.lshift), _binary(operator.rshift)
    __eq__, __ne__ = _binary(operator.eq), _binary(operator.ne)
    __lt__, __le__ = _binary(operator.lt), _binary(operator.le)
    __gt__, __ge__ = _binary(operator.gt), _binary(operator.ge)
    __iadd__, __isub__ = _inplace(operator.iadd), _inplace(operator.isub)
    __imul__, __itruediv__ = _inplace(operator.imul), _inplace(operator.itruediv)
    __ifloordiv__, __imod__ = _inplace(operator.ifloordiv), _inplace(operator.imod)
    __ipow__, __iand__ = _inplace(operator.ipow), _inplace(operator.iand)
    __ior__, __ixor__ = _inplace(operator.ior), _inplace(operator.ixor)
    __neg__, __pos__ = _unary(operator.neg), _unary(operator.pos)
    __abs__, __invert__ = _unary(operator.abs), _unary(operator.invert)
    __hash__ = None

    # ----- methods -----------------------------------------------------------------------------
    def astype(self, dtype, order='K', casting=None, subok=None, copy=True):
        if not copy and np.dtype(dtype) == self.dtype:
            return self
        return _wrap(self._a.astype(dtype, order=order))

    def copy(self, order='C'):
        return _wrap(self._a.copy(order=order))

    __copy__ = copy

    def __deepcopy__(self, memo):
        return _wrap(copy.deepcopy(self._a, memo))

    def sort(self, axis=-1):
        _standin.record('sync', 'sort')
        self._a.sort(axis=axis, kind='stable')          # CuPy's sorts are stable

    def argsort(self, axis=-1):
        import cupy
        return cupy.argsort(self, axis)

    def fill(self, value):
        self._a.fill(_operand(value, 'fill'))

    def reshape(self, *shape, order='C'):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return _wrap(self._a.reshape(shape, order=order))

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list, np.ndarray)):   # host values
            axes = tuple(int(a) for a in axes[0])
        return _wrap(self._a.transpose(axes or None))

    def view(self, dtype=None):
        return _wrap(self._a.view() if dtype is None else self._a.view(dtype))

    def flatten(self, order='C'):
        return _wrap(self._a.flatten(order))

    def __getattr__(self, name):
        """The remaining methods (sum, max, argmax, nonzero, ...) are the module's functions
        applied to this array."""
        if name.startswith('_') or name not in _METHODS:
            raise AttributeError(f"'cupy.ndarray' (stand-in) object has no attribute {name!r}")
        import cupy
        fn = getattr(cupy, name)
        return lambda *args, **kwargs: fn(self, *args, **kwargs)


ndarray.__module__ = 'cupy'          # as type(cupy.ndarray(...)).__module__ on CuPy

_METHODS = {'sum', 'mean', 'std', 'var', 'prod', 'max', 'min', 'argmax', 'argmin', 'cumsum',
            'any', 'all', 'clip', 'round', 'swapaxes', 'ravel', 'squeeze', 'repeat', 'take',
            'dot', 'nonzero'}
