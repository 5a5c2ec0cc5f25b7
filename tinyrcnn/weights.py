"""Network weights on disk: tinyrcnn's `.npz` of named arrays, and PyTorch files read without
PyTorch (`torch_format.py`), so that Fast R-CNN can start from torchvision's VGG16 (Sec. 2.2,
"Initializing from pre-trained networks").
"""
import os
import zipfile

import numpy as np

from .torch_format import check_zip_sizes, load_torch_state_dict
from .utils import atomic_write


def _is_npz(f):
    try:
        names = zipfile.ZipFile(f).namelist() if zipfile.is_zipfile(f) else []
    except Exception:  # a damaged archive is simply not weights
        return False
    return bool(names) and all(n.endswith('.npy') for n in names)


def load_weights(path):
    """Read weights from a `torch.save` file or a tinyrcnn `.npz`, chosen by content, not name.

    Returns an insertion-ordered dict name -> NumPy array; see `load_torch_state_dict` for
    torch files. Anything else raises ValueError naming the file and the accepted formats.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f'weights file not found: {path}')
    with open(path, 'rb') as f:
        if not _is_npz(f):
            return load_torch_state_dict(path)
    try:
        with zipfile.ZipFile(path) as zf:
            check_zip_sizes(zf)
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as e:
        raise ValueError(f'{path}: cannot read .npz weights: {e}'.replace('\n', ' ')) from e


def load_into(model, path, state=None):
    """model.load_state_dict of the weights in `path` (or of `state`, already read from it),
    with any mismatch reported as one ValueError that names the file."""
    state = load_weights(path) if state is None else state
    try:
        model.load_state_dict(state)
    except ValueError as e:
        raise ValueError(f'{path}: {e}') from None
    return model


def _to_numpy(v):
    """A NumPy array from an array, a tinyrcnn Tensor (`.numpy()`) or a CuPy array (`.get()`)."""
    if not isinstance(v, np.ndarray):
        v = v.numpy() if hasattr(v, 'numpy') else v.get() if hasattr(v, 'get') else np.asarray(v)
    if v.dtype.hasobject:
        raise ValueError('weights must be numeric arrays, not Python objects')
    return v


def save_npz(state_dict, path):
    """Write a state dict as tinyrcnn's `.npz` (one `<name>.npy` per array), atomically."""
    arrays = {}
    for name, v in state_dict.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f'state dict keys must be non-empty strings, got {name!r}')
        arrays[name] = _to_numpy(v)

    def write(f):
        # np.savez(**arrays) would clash with names like 'file'; write the members directly
        with zipfile.ZipFile(f, 'w', zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, x in arrays.items():
                with zf.open(name + '.npy', 'w', force_zip64=True) as member:
                    np.lib.format.write_array(member, x, allow_pickle=False)
    atomic_write(path, write)


def convert_weights(src, dst, float16=False):
    """Convert a `torch.save` weights file (or a tinyrcnn `.npz`) to tinyrcnn's `.npz`; returns
    the number of arrays. float16=True stores floating-point arrays in half precision (half the
    bytes; loading casts back to the model's dtype), as for the small models kept in tinyrcnn/assets/."""
    state_dict = load_weights(src)
    if float16:
        state_dict = {k: v.astype(np.float16) if np.issubdtype(v.dtype, np.floating) else v
                      for k, v in state_dict.items()}
    save_npz(state_dict, dst)
    return len(state_dict)
