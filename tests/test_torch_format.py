"""tinyrcnn/torch_format.py: reading torch.save files (zip and legacy) without PyTorch.

The shipped fixtures in tests/fixtures/ (made by tests/fixtures/make_fixtures.py with PyTorch)
are compared with the values torch itself gave, so most tests run where PyTorch is absent.
"""
import io
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from tinyrcnn.torch_format import LEGACY_MAGIC, load_torch_state_dict
from tinyrcnn.weights import load_weights
from helpers import FIXTURES as DATA, assert_same, expected, one_line_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = [('vgg_tiny_zip.pth', 'vgg_tiny.npz'), ('vgg_tiny_legacy.pth', 'vgg_tiny.npz'),
            ('views_zip.pth', 'views.npz'), ('views_legacy.pth', 'views.npz'),
            ('checkpoint.pth', 'vgg_tiny.npz')]


def rewrite_zip(src, dst, edit):
    """Copy a zip member by member through `edit(name, data) -> data` (None drops the member)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w') as zout:
        for name in zin.namelist():
            data = edit(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)
    return dst


# --- hand-written pickles, so that odd files can be made without PyTorch -------------------


class Global:
    """Pickles as the global `module.name` whatever is installed (a callable, for REDUCE)."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):
        raise AssertionError('never called')



class Call:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args



class PID:
    """Becomes a persistent id (a storage reference) in the pickle."""

    def __init__(self, *pid):
        self.pid = pid



class HandPickler(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()
    dispatch[Global] = lambda self, g: self.write(pickle.GLOBAL + f'{g.module}\n{g.name}\n'.encode())

    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, PID) else None



def hand_pickle(obj):
    buf = io.BytesIO()
    HandPickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


FLOAT = Global('torch', 'FloatStorage')
ODICT = Global('collections', 'OrderedDict')



def rebuild(pid, offset, size, stride, version='v2'):
    if version == 'v1':
        return Call(Global('torch._utils', '_rebuild_tensor'), PID(*pid), offset, size, stride)
    return Call(Global('torch._utils', '_rebuild_tensor_v2'), PID(*pid), offset, size, stride,
                False, Call(ODICT))



def write_legacy(path, obj, storages):
    """A legacy torch file: magic, protocol, sys info, `obj`, keys, then (count, bytes) each."""
    with open(path, 'wb') as f:
        for head in (LEGACY_MAGIC, 1001, {'protocol_version': 1001, 'little_endian': True}):
            pickle.dump(head, f, protocol=2)
        f.write(hand_pickle(obj))
        pickle.dump(sorted(storages), f, protocol=2)
        for key in sorted(storages):
            data = storages[key]
            f.write((data.size).to_bytes(8, 'little') + data.tobytes())
    return path



def write_zip(path, obj, storages=None):
    with zipfile.ZipFile(path, 'w') as zf:
        zf.writestr('archive/data.pkl', hand_pickle(obj))
        for key, data in (storages or {}).items():
            zf.writestr(f'archive/data/{key}', data.tobytes())
    return path


# --- the shipped fixtures, read without torch -----------------------------------------------


@pytest.mark.parametrize('pth, npz', FIXTURES)
def test_fixtures_match_torch_values(pth, npz):
    sd = load_torch_state_dict(os.path.join(DATA, pth))
    assert_same(sd, expected(npz))
    arrays = list(sd.values())  # fresh, writable, contiguous: safe to hand to a model
    assert all(x.flags.c_contiguous and x.flags.writeable for x in arrays)
    assert not any(np.shares_memory(x, y) for i, x in enumerate(arrays) for y in arrays[:i])



def test_views_are_cut_from_shared_storage():
    sd = load_weights(os.path.join(DATA, 'views_zip.pth'))
    base = sd['base']  # (6, 5)
    assert np.array_equal(sd['transposed'], base.T)
    assert np.array_equal(sd['offset_slice'], base[2:, 1:4])
    assert np.array_equal(sd['every_other'], base[::2, ::3])
    assert np.array_equal(sd['column'], base[:, 3])
    assert sd['bfloat16'].dtype == np.float32 and sd['float16'].dtype == np.float16
    assert sd['uint16'].tolist() == [1, 40000, 65535]
    assert sd['num_batches_tracked'].shape == () and sd['num_batches_tracked'] == 7
    assert sd['empty'].shape == (0, 4)
    base[:] = 0  # no two arrays share memory, though the tensors shared a storage
    assert sd['transposed'].any() and sd['offset_slice'].any()



def test_checkpoint_is_unwrapped_and_prefix_stripped():
    sd = load_weights(os.path.join(DATA, 'checkpoint.pth'))
    assert next(iter(sd)) == 'features.0.weight'  # was 'module.features.0.weight' under 'model'



def test_big_endian_zip(tmp_path):
    # a zip written on a big-endian machine: byteorder record 'big', every float32 swapped
    def swap(name, data):
        if name.endswith('/byteorder'):
            return b'big'
        if '/data/' in name:
            return np.frombuffer(data, '<f4').astype('>f4').tobytes()
        return data
    path = rewrite_zip(os.path.join(DATA, 'vgg_tiny_zip.pth'), tmp_path / 'be.pth', swap)
    sd = load_weights(path)
    assert_same(sd, expected('vgg_tiny.npz'))
    assert all(x.dtype.isnative for x in sd.values())



def test_legacy_v1_rebuild_and_storage_views(tmp_path):
    # PyTorch < 0.4: _rebuild_tensor (v1) and storages that are views of a root storage
    root = np.arange(10, dtype=np.float32)
    obj = Call(ODICT, [
        ('whole', rebuild(('storage', FLOAT, '7', 'cpu', 10, None), 0, (2, 5), (5, 1), 'v1')),
        ('view', rebuild(('storage', FLOAT, '7', 'cpu', 10, ('8', 4, 3)), 1, (2,), (1,), 'v1')),
    ])
    sd = load_weights(write_legacy(tmp_path / 'old.pth', obj, {'7': root}))
    assert np.array_equal(sd['whole'], root.reshape(2, 5))
    assert sd['view'].tolist() == [5.0, 6.0]  # root[4:7] is the view, offset 1 into it



def test_wrapper_rule_and_prefix_rule(tmp_path):
    t = rebuild(('storage', FLOAT, '0', 'cpu', 2), 0, (2,), (1,))
    data = {'0': np.array([1.5, -2.0], np.float32)}
    wrapped = {'epoch': 3, 'model_state_dict': {'module.w': t, 'module.b': t}}
    assert list(load_weights(write_zip(tmp_path / 'a.pth', wrapped, data))) == ['w', 'b']
    partly = {'state_dict': {'module.w': t, 'b': t}}  # only a prefix on every key is cut
    assert list(load_weights(write_zip(tmp_path / 'b.pth', partly, data))) == ['module.w', 'b']
    with pytest.raises(ValueError, match=r"epoch, optimizer.*'state_dict', 'model_state_dict'"):
        load_weights(write_zip(tmp_path / 'c.pth', {'epoch': 3, 'optimizer': {}}, data))


# --- errors -----------------------------------------------------------------------------------


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / 'notes.zip'
    with zipfile.ZipFile(path, 'w') as zf:
        zf.writestr('archive/readme.txt', 'hello')
    assert 'not a weights file' in one_line_error(path)
    with pytest.raises(ValueError, match='not a weights file'):
        load_torch_state_dict(path)



def test_damaged_torch_files(tmp_path):
    src = os.path.join(DATA, 'vgg_tiny_zip.pth')
    truncated = rewrite_zip(src, tmp_path / 't.pth',
                            lambda n, d: d[:10] if n.endswith('/data/0') else d)
    assert 'bytes' in one_line_error(truncated)
    dropped = rewrite_zip(src, tmp_path / 'd.pth', lambda n, d: None if '/data/' in n else d)
    assert 'data/0' in one_line_error(dropped)
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(open(os.path.join(DATA, 'vgg_tiny_legacy.pth'), 'rb').read()[:-100])
    assert 'truncated' in one_line_error(cut)
    npz_objects = tmp_path / 'obj.npz'
    np.savez(npz_objects, a=np.array([None], dtype=object))
    assert 'cannot read .npz' in one_line_error(npz_objects)



class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)



def test_malicious_pickle_in_zip_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    with zipfile.ZipFile(path, 'w') as zf:
        zf.writestr('archive/data.pkl', pickle.dumps({'w': Evil(marker)}, protocol=2))
    msg = one_line_error(path)
    assert f"'{os.system.__module__}.system'" in msg and 'refusing' in msg
    assert not marker.exists()



def test_malicious_pickle_in_legacy_file_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil_legacy.pth'
    with open(path, 'wb') as f:
        for head in (LEGACY_MAGIC, 1001, {'little_endian': True}):
            pickle.dump(head, f, protocol=2)
        pickle.dump([Evil(marker)], f, protocol=2)
    assert 'system' in one_line_error(path)
    assert not marker.exists()



@pytest.mark.parametrize('obj, needle', [
    (Call(Global('builtins', 'eval'), '1+1'), "'builtins.eval'"),
    (Call(Global('torch', 'load'), 'x.pth'), "'torch.load'"),
    (Call(Global('torch._utils', '_rebuild_device_tensor_from_numpy'), 1), '_rebuild_device_tensor'),
    (Call(FLOAT, 1000), 'not callable'),  # allowed names are inert stand-ins, never called
    (Call(Global('torch._utils', '_rebuild_tensor_v2'), 'rm -rf', 0, (1,), (1,), False, None),
     'not a storage'),
])
def test_only_whitelisted_globals(tmp_path, obj, needle):
    assert needle in one_line_error(write_zip(tmp_path / 'x.pth', {'w': obj}))



def test_view_outside_storage_is_refused(tmp_path):
    data = {'0': np.arange(4, dtype=np.float32)}
    fits = rebuild(('storage', FLOAT, '0', 'cpu', 4), 0, (2, 2), (2, 1))  # elements 0..3
    assert load_weights(write_zip(tmp_path / 'ok.pth', {'w': fits}, data))['w'].sum() == 6
    t = rebuild(('storage', FLOAT, '0', 'cpu', 4), 1, (2, 2), (2, 1))  # elements 1..4 of 0..3
    path = write_zip(tmp_path / 'x.pth', {'w': t}, data)
    assert 'element 4 of a storage of 4' in one_line_error(path)



def test_no_torch_needed_in_a_subprocess():
    code = (
        "import sys\n"
        "sys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"
        "import numpy as np\n"
        "from tinyrcnn.weights import load_weights\n"
        f"for name in ('vgg_tiny_zip.pth', 'vgg_tiny_legacy.pth'):\n"
        f"    sd = load_weights({DATA!r} + '/' + name)\n"
        f"    want = np.load({DATA!r} + '/vgg_tiny.npz')\n"
        "    assert all(np.array_equal(sd[k], want[k]) for k in want.files), name\n"
        "assert sys.modules['torch'] is None\n"
        "print('ok', len(sd))\n")
    run = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, 'PYTHONPATH': ROOT}, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == 'ok 12'


# --- against PyTorch itself, where it is installed ---------------------------------------------


@pytest.mark.parametrize('legacy', [False, True])
def test_against_torch(tmp_path, legacy):
    torch = pytest.importorskip('torch')
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                              torch.nn.Conv2d(4, 2, 1, bias=False))
    net.train()(torch.randn(2, 3, 5, 5, generator=g))  # BatchNorm running stats and counter
    sd = dict(net.state_dict())
    big = torch.randn(7, 9, 4, generator=g, dtype=torch.float64)
    sd.update({
        'permuted': big.permute(1, 2, 0), 'narrow': big[2:5, ::2, 1], 'diag': big[:, :, 0].diagonal(),
        'long': torch.randint(-2 ** 40, 2 ** 40, (3, 5), generator=g).t(),
        'half': torch.randn(4, 4, generator=g).half()[1:, :3],
        'bf16': torch.randn(8, generator=g).bfloat16()[::3],
        'bool': torch.rand(5, generator=g) > 0.5,
        'cplx': torch.randn(3, generator=g, dtype=torch.complex64),
        'uint32': torch.tensor([0, 2 ** 32 - 1], dtype=torch.uint32),
        'param': torch.nn.Parameter(torch.randn(3, generator=g)),
    })
    path = tmp_path / 'x.pth'
    torch.save({'model': sd, 'epoch': 1}, path, _use_new_zipfile_serialization=not legacy,
               pickle_protocol=4 if legacy else 2)  # protocol 4 frames the legacy header pickles
    want = {k: (v.detach().float() if v.dtype == torch.bfloat16 else v.detach()).numpy()
            for k, v in sd.items()}
    assert_same(load_weights(path), want)



def test_whole_pickled_module_is_refused(tmp_path):
    torch = pytest.importorskip('torch')
    path = tmp_path / 'model.pth'
    torch.save(torch.nn.Linear(2, 2), path)
    assert "'torch.nn.modules.linear.Linear'" in one_line_error(path)

