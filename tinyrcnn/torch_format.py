"""PyTorch `torch.save` files read without PyTorch: the state dicts of pretrained networks.

Fast R-CNN starts from an ImageNet-trained VGG16 (Fast R-CNN, Sec. 2.2 "Initializing from
pre-trained networks"). The usual source of those weights is torchvision's `vgg16-397923af.pth`,
a file written by `torch.save`. This module reads such files with `zipfile`, `pickle` and NumPy
only (`tinyrcnn.weights` stores them in tinyrcnn's own format, a plain `.npz` of named arrays).

What `torch.save` writes (the format PyTorch documents in `torch/serialization.py`):

* zip format (PyTorch >= 1.6): an archive `<prefix>/data.pkl` plus one raw record
  `<prefix>/data/<key>` per storage, and a `<prefix>/byteorder` record. In the pickle each
  storage is a persistent id `('storage', storage_type, key, location, numel)` and each tensor
  a call `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`
  (`_rebuild_tensor_v3(..., dtype)` with an untyped byte storage for dtypes such as uint16).
* legacy format (`_use_new_zipfile_serialization=False`, and the 2017 torchvision files):
  pickles of a magic number, the protocol 1001 and a system-info dict, then the main pickle,
  then the sorted list of storage keys, then each storage as an int64 element count followed
  by its little-endian bytes.

Unpickling a file from the internet can run any code it names, so the unpickler here resolves
only a fixed whitelist of names (`_ALLOWED`) to harmless stand-ins; any other global, such as
`os.system`, stops the load with an error naming it. PyTorch is never imported.
"""
import collections
import io
import os
import pickle
import zipfile

import numpy as np

ACCEPTED = ('a PyTorch file written by torch.save (.pth/.pt, zip or legacy format) '
            'or a tinyrcnn .npz')
WRAPPER_KEYS = ('state_dict', 'model_state_dict', 'model')
LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL = 1001

# dtype names as PyTorch spells them -> NumPy dtype; bfloat16 is read as its raw 16 bits
_NUMPY_DTYPES = {
    'float64': 'f8', 'float32': 'f4', 'float16': 'f2', 'bfloat16': 'u2',
    'int64': 'i8', 'int32': 'i4', 'int16': 'i2', 'int8': 'i1',
    'uint64': 'u8', 'uint32': 'u4', 'uint16': 'u2', 'uint8': 'u1', 'bool': '?',
    'complex128': 'c16', 'complex64': 'c8',
}
# dtypes a file may name that NumPy cannot hold: allowed in the pickle, refused with a clear error
_UNSUPPORTED_DTYPES = ('float8_e5m2', 'float8_e4m3fn', 'float8_e5m2fnuz', 'float8_e4m3fnuz',
                       'float8_e8m0fnu', 'float4_e2m1fn_x2', 'complex32', 'qint8', 'quint8',
                       'qint32', 'quint4x2', 'quint2x4')
_STORAGE_TYPES = {
    'DoubleStorage': 'float64', 'FloatStorage': 'float32', 'HalfStorage': 'float16',
    'BFloat16Storage': 'bfloat16', 'LongStorage': 'int64', 'IntStorage': 'int32',
    'ShortStorage': 'int16', 'CharStorage': 'int8', 'ByteStorage': 'uint8', 'BoolStorage': 'bool',
    'ComplexDoubleStorage': 'complex128', 'ComplexFloatStorage': 'complex64',
}


class _DType:
    """Stand-in for a `torch.<dtype>` or `torch.<Type>Storage` global: the name of the dtype it
    stands for, and nothing callable."""

    def __init__(self, name):
        self.name = name


class _Storage:
    """A storage met in the pickle: `numel` elements of `dtype`, from element `start` of the
    raw record `key` (start > 0 only for the legacy format's storage views)."""

    def __init__(self, key, dtype, numel, start=0):
        self.key, self.dtype, self.numel, self.start = key, dtype, numel, start  # dtype: a name


class _TensorRef:
    """A tensor not yet read: its storage and the view (offset, size, stride, in elements)."""

    def __init__(self, storage, offset, size, stride, dtype):
        if not isinstance(storage, _Storage):
            raise ValueError('a tensor is rebuilt from something that is not a storage')
        self.storage, self.offset, self.dtype = storage, offset, dtype
        self.size, self.stride = tuple(size), tuple(stride)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    # v1 (PyTorch < 0.4) and v2 share the first four arguments; requires_grad, hooks and
    # metadata say nothing about the values
    return _TensorRef(storage, storage_offset, size, stride, getattr(storage, 'dtype', None))


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, hooks, dtype,
                       metadata=None):
    if not isinstance(dtype, _DType):
        raise ValueError('_rebuild_tensor_v3 got a dtype that is not a torch dtype')
    return _TensorRef(storage, storage_offset, size, stride, dtype.name)


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    # an nn.Parameter is its data; gradients and hooks do not travel
    if not isinstance(data, _TensorRef):
        raise ValueError('a Parameter is rebuilt from something that is not a tensor')
    return data


_ALLOWED = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v3'): _rebuild_tensor_v3,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    ('torch.storage', 'UntypedStorage'): _DType('uint8'),  # raw bytes
    **{('torch', name): _DType(dtype) for name, dtype in _STORAGE_TYPES.items()},
    **{('torch', name): _DType(name) for name in (*_NUMPY_DTYPES, *_UNSUPPORTED_DTYPES)},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that knows only `_ALLOWED`; `storages` collects key -> dtype name of the
    storages it meets (the legacy format needs their element sizes afterwards)."""

    def __init__(self, file, storages=None):
        super().__init__(file, encoding='utf-8')  # py2-era files pickle names as byte strings
        self.storages = storages

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing the global '{module}.{name}': only tensors, storages, dtypes and "
                'OrderedDict may appear in a weights file (save a state_dict, not a model)'
            ) from None

    def persistent_load(self, pid):
        if self.storages is None or not (isinstance(pid, tuple) and len(pid) in (5, 6)
                                         and pid[0] == 'storage' and isinstance(pid[1], _DType)):
            raise pickle.UnpicklingError(f'unexpected persistent id {pid!r:.80}')
        dtype, key, numel = pid[1].name, str(pid[2]), pid[4]
        view = pid[5] if len(pid) == 6 else None  # legacy: (view_key, offset, view_size)
        self.storages.setdefault(key, dtype)
        if view is not None:
            return _Storage(key, dtype, view[2], start=view[1])
        return _Storage(key, dtype, numel)


def _unpickle(data, storages=None):
    file = io.BytesIO(data) if isinstance(data, bytes) else data
    return _RestrictedUnpickler(file, storages).load()


def _materialize(ref, buf, byteorder):
    """Cut the tensor `ref` out of the raw storage bytes `buf`: a fresh C-contiguous array."""
    if ref.dtype not in _NUMPY_DTYPES:
        raise ValueError(f'tensors of dtype {ref.dtype} are not supported')
    dtype = np.dtype(_NUMPY_DTYPES[ref.dtype]).newbyteorder('<' if byteorder == 'little' else '>')
    storage = ref.storage
    if not all(type(v) is int and v >= 0 for v in (storage.start, storage.numel)):
        raise ValueError(f'bad storage extent {storage.start!r}, {storage.numel!r}')
    item = np.dtype(_NUMPY_DTYPES[storage.dtype]).itemsize
    start, nbytes = storage.start * item, storage.numel * item
    if start + nbytes > len(buf):
        raise ValueError(f'storage {storage.key} holds {len(buf)} bytes, '
                         f'{start + nbytes} were promised')
    flat = np.frombuffer(buf, dtype, count=nbytes // dtype.itemsize, offset=start)
    size, stride, offset = ref.size, ref.stride, ref.offset
    if not all(type(v) is int and v >= 0 for v in (offset, *size, *stride)) \
            or len(size) != len(stride):
        raise ValueError(f'bad tensor view: offset {offset!r}, size {size!r}, stride {stride!r}')
    if 0 in size:
        x = np.empty(size, dtype)
    else:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= flat.size:
            raise ValueError(f'a tensor view reaches element {last} of a storage of {flat.size}')
        x = np.lib.stride_tricks.as_strided(flat[offset:], size, [s * dtype.itemsize for s in stride],
                                            writeable=False)
    x = np.array(x, dtype=dtype.newbyteorder('='), order='C')  # copy: no two tensors share memory
    if ref.dtype == 'bfloat16':  # bfloat16 is the top half of a float32
        x = (x.astype(np.uint32) << 16).view(np.float32)
    return x


def _select_state_dict(obj, path):
    """The documented rule: the object itself if it maps names to tensors, else the first of
    `WRAPPER_KEYS` that does; then a 'module.' prefix (DataParallel) shared by all keys is cut."""
    def is_state_dict(d):
        return isinstance(d, dict) and all(isinstance(v, _TensorRef) for v in d.values())

    sd = obj if is_state_dict(obj) else None
    if sd is None and isinstance(obj, dict):
        sd = next((obj[k] for k in WRAPPER_KEYS if is_state_dict(obj.get(k))), None)
    if sd is None:
        what = (f"a dict with keys {', '.join(map(str, list(obj)[:8]))}" if isinstance(obj, dict)
                else f'a {type(obj).__name__}')
        raise ValueError(f'{path}: holds {what}, not a state dict; expected a dict of name -> '
                         f"tensor, or one under {', '.join(repr(k) for k in WRAPPER_KEYS)}")
    if not all(isinstance(k, str) for k in sd):
        raise ValueError(f'{path}: state dict keys must be strings')
    if sd and all(k.startswith('module.') for k in sd):
        sd = {k[len('module.'):]: v for k, v in sd.items()}
    return sd


def _read_all(sd, read, byteorder):
    """Materialize every tensor; each raw storage is read once and dropped after its last use."""
    uses = collections.Counter(ref.storage.key for ref in sd.values())
    cache, out = {}, {}
    for name, ref in sd.items():
        key = ref.storage.key
        if key not in cache:
            cache[key] = read(key)
        out[name] = _materialize(ref, cache[key], byteorder)
        uses[key] -= 1
        if uses[key] == 0:
            del cache[key]
    return out


def _load_zip(zf, prefix):
    obj = _unpickle(zf.read(prefix + 'data.pkl'), storages={})
    byteorder = 'little'  # files from before PyTorch 1.10 have no byteorder record
    if prefix + 'byteorder' in zf.namelist():
        byteorder = zf.read(prefix + 'byteorder').decode('ascii').strip()
    return obj, (lambda key: zf.read(f'{prefix}data/{key}')), byteorder


def _load_legacy(f):
    _unpickle(f)  # the magic number, checked by the caller
    protocol, sys_info = _unpickle(f), _unpickle(f)
    if protocol != LEGACY_PROTOCOL or not isinstance(sys_info, dict):
        raise ValueError(f'unknown legacy protocol {protocol!r}')
    storages = {}
    obj = _unpickle(f, storages)
    keys = _unpickle(f)
    if not isinstance(keys, list):
        raise ValueError('the storage key list is missing')
    records = {}  # key -> (file offset, nbytes); storage bytes are always little-endian
    for key in keys:
        if key not in storages:
            raise ValueError(f'storage {key!r} is listed but never used')
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f'storage {key!r} is truncated')
        count = int.from_bytes(head, 'little')
        records[key] = (f.tell(), count * np.dtype(_NUMPY_DTYPES[storages[key]]).itemsize)
        f.seek(records[key][1], io.SEEK_CUR)

    def read(key):
        if key not in records:
            raise ValueError(f'storage {key!r} has no data')
        f.seek(records[key][0])
        data = f.read(records[key][1])
        if len(data) != records[key][1]:
            raise ValueError(f'storage {key!r} is truncated')
        return data
    return obj, read, 'little'


def _zip_prefix(names):
    """The `<prefix>/` of a torch zip (the one folder holding data.pkl), or None."""
    for n in names:
        if n == 'data.pkl' or (n.endswith('/data.pkl') and n.count('/') == 1):
            return n[:-len('data.pkl')]
    return None


def _is_legacy(f):
    f.seek(0)
    if f.read(1) != b'\x80':  # every pickle protocol >= 2 starts with PROTO
        return False
    f.seek(0)
    try:
        return _unpickle(f) == LEGACY_MAGIC
    except Exception:
        return False
    finally:
        f.seek(0)


def _not_weights(path):
    return ValueError(f'{path}: not a weights file; expected {ACCEPTED}')


def _check_exists(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f'weights file not found: {path}')


# Weights barely compress: a member that would inflate by more than this, once past 64 MB, is
# not weights but a zip bomb (a few kilobytes that decompress to gigabytes)
MAX_INFLATION, INFLATION_FLOOR = 50, 64 << 20


def check_zip_sizes(zf):
    """ValueError for a zip member that would inflate suspiciously (see MAX_INFLATION)."""
    for info in zf.infolist():
        if info.file_size > max(INFLATION_FLOOR, MAX_INFLATION * info.compress_size):
            raise ValueError(f'{info.filename} would inflate {info.compress_size} bytes to '
                             f'{info.file_size}: refused (a zip bomb?)')


def _open_torch(f):
    """(object, read(key) -> bytes, byteorder) of a torch file, legacy or zip, else None."""
    if _is_legacy(f):  # checked first: raw float data may happen to look like a zip trailer
        return _load_legacy(f)
    if zipfile.is_zipfile(f):
        zf = zipfile.ZipFile(f)
        check_zip_sizes(zf)
        prefix = _zip_prefix(zf.namelist())
        if prefix is not None:
            return _load_zip(zf, prefix)
    return None


def load_torch_state_dict(path):
    """Read the state dict of a `torch.save` file (zip or legacy format) without PyTorch.

    Returns an insertion-ordered dict name -> NumPy array (float32 for bfloat16 tensors, the
    file's dtype otherwise), each array a C-contiguous copy of the tensor's view of its storage.
    A checkpoint that wraps the state dict under 'state_dict', 'model_state_dict' or 'model' is
    unwrapped, and a 'module.' prefix on every key is removed. Raises ValueError naming the
    file for anything else, including any pickled global outside the whitelist.
    """
    path = os.fspath(path)
    _check_exists(path)
    with open(path, 'rb') as f:
        try:
            opened = _open_torch(f)
            if opened is None:
                raise _not_weights(path)
            obj, read, byteorder = opened
            return _read_all(_select_state_dict(obj, path), read, byteorder)
        except ValueError as e:
            if str(e).startswith(path + ':'):
                raise
            raise ValueError(f'{path}: cannot read PyTorch weights: {e}'.replace('\n', ' ')) from e
        except Exception as e:  # a damaged file can fail in many ways; report each as one line
            raise ValueError(f'{path}: cannot read PyTorch weights: '
                             f'{type(e).__name__}: {e}'.replace('\n', ' ')) from e
