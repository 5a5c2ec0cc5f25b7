"""A corpus of hostile inputs through the command line: images, annotations, weight files, model
descriptions, checkpoints and arguments. Each case either works (the data is usable) or ends
with a non-zero exit status and one `error:` line that names the culprit: never a traceback, a
hang, a silently wrong run or a half-written output."""
import json
import os
import pickle
import shutil
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from tinyrcnn import backend
from tinyrcnn.cli import main
from tinyrcnn.data import make_shapes_voc, read_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_MODEL = os.path.join(ROOT, 'tinyrcnn', 'assets', 'demo_model')
TINY = ['--trunk', 'vgg-tiny', '--iterations', '1', '--proposal-mode', 'single', '--set',
        'scales=[64]', 'max_size=96', 'rois_per_batch=8', 'source="tiny"', 'freeze_stages=0']


def cli(capsys, *argv):
    """(exit status, stdout, stderr) of `python -m tinyrcnn ARGV`, run in this process; the CPU
    speed paths it turns on are turned off again."""
    before = backend.fast_cpu_paths()
    try:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:                      # argparse's own errors
            code = e.code
    finally:
        backend.set_fast_cpu(before)
    out = capsys.readouterr()
    return code, out.out, out.err


def png_header_only(path, width, height):
    """A PNG whose header claims width x height pixels, with almost no data behind it."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr)
                     + chunk(b'IDAT', zlib.compress(b'\0' * 100)) + chunk(b'IEND', b''))


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp('hostile')
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (48, 64, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(d / 'ok.jpg')
    data = (d / 'ok.jpg').read_bytes()
    (d / 'truncated.jpg').write_bytes(data[:len(data) // 2])
    (d / 'empty.jpg').write_bytes(b'')
    (d / 'text.jpg').write_text('not an image')
    Image.fromarray(pixels[:1, :1]).save(d / 'one_pixel.png')
    png_header_only(d / 'huge.png', 20000, 20000)
    Image.fromarray((np.linspace(0, 65535, 48 * 64).reshape(48, 64)).astype(np.uint16)).save(d / 'gray16.png')
    Image.fromarray(pixels).convert('CMYK').save(d / 'cmyk.jpg')
    Image.fromarray(pixels).save(d / 'animated.gif', save_all=True,
                                 append_images=[Image.fromarray(255 - pixels)], duration=100)
    Image.fromarray(pixels).convert('RGBA').save(d / 'rgba.png')
    Image.fromarray(pixels).convert('P').save(d / 'palette.png')
    (d / 'folder.jpg').mkdir()
    return d


def voc(d, edit=None):
    """A 3-image VOC set in d, its first annotation changed by edit(xml text) -> text or bytes."""
    root = make_shapes_voc(d, 3, 0, seed=2, image_size=(64, 96))
    if edit is not None:
        first = open(os.path.join(root, 'ImageSets', 'Main', 'trainval.txt')).read().split()[0]
        path = os.path.join(root, 'Annotations', first + '.xml')
        new = edit(open(path).read())
        open(path, 'wb').write(new if isinstance(new, bytes) else new.encode())
    return root


def box(xml, **values):
    """The first <bndbox> of xml with some of its coordinates replaced."""
    start, end = xml.index('<bndbox>'), xml.index('</bndbox>')
    part = xml[start:end]
    for tag, v in values.items():
        old = part[part.index(f'<{tag}>'):part.index(f'</{tag}>') + len(tag) + 3]
        part = part.replace(old, f'<{tag}>{v}</{tag}>')
    return xml[:start] + part + xml[end:]


IMAGES = [   # (file, None if it works, else what the error line names)
    ('ok.jpg', None), ('gray16.png', None), ('cmyk.jpg', None), ('animated.gif', None),
    ('rgba.png', None), ('palette.png', None),
    ('truncated.jpg', 'truncated.jpg: cannot decode'), ('empty.jpg', 'empty.jpg: cannot decode'),
    ('text.jpg', 'text.jpg: cannot decode'), ('one_pixel.png', 'one_pixel.png: '),
    ('huge.png', 'huge.png: cannot decode'), ('folder.jpg', 'folder.jpg: no images'),
    ('missing.jpg', 'missing.jpg'),
]


@pytest.mark.parametrize('name, error', IMAGES, ids=[c[0] for c in IMAGES])
def test_images(corpus, tmp_path, capsys, name, error):
    out = tmp_path / 'dets.png'
    code, stdout, stderr = cli(capsys, 'detect', corpus / name, '--weights', DEMO_MODEL, '--out', out)
    if error is None:
        assert code == 0 and out.read_bytes()[:4] == b'\x89PNG', stderr
    else:
        assert code != 0 and stderr.count('\n') == 1 and stderr.startswith('error: ') and error in stderr, stderr
        assert not out.exists() and not list(tmp_path.iterdir())       # nothing half-written


def test_sixteen_bit_images_are_scaled_not_clipped_and_animations_give_their_first_frame(corpus):
    image = read_image(corpus / 'gray16.png')
    assert image.shape == (48, 64, 3) and abs(image.mean() - 127.5) < 1       # a ramp 0..65535
    first = np.asarray(Image.open(corpus / 'animated.gif').convert('RGB'))
    assert np.array_equal(read_image(corpus / 'animated.gif'), first)


ANNOTATIONS = [   # (what, edit of the first annotation or a set-level change, None if it works)
    ('degenerate box', lambda x: box(x, xmax=box_value(x, 'xmin')), None),
    ('box over the border', lambda x: box(x, xmax=500, ymax=400), None),
    ('inverted box', lambda x: box(x, xmin=50, xmax=10), 'xmin <= xmax'),
    ('unknown class', lambda x: x.replace('<name>', '<name>zebra', 1), "unknown class"),
    ('no bndbox', lambda x: x[:x.index('<bndbox>')] + x[x.index('</bndbox>') + 9:], 'no <bndbox>'),
    ('no name', lambda x: x[:x.index('<name>')] + x[x.index('</name>') + 7:], "unknown class ''"),
    ('non-numeric', lambda x: box(x, ymin='twelve'), 'numeric <ymin>'),
    ('empty file', lambda x: '', 'malformed XML'),
    ('not UTF-8', lambda x: x.replace('<name>', '<name>\xe9', 1).encode('latin-1'), 'malformed XML'),
    ('truncated XML', lambda x: x[:len(x) // 2], 'malformed XML'),
]


def box_value(xml, tag):
    part = xml[xml.index('<bndbox>'):]
    return part[part.index(f'<{tag}>') + len(tag) + 2:part.index(f'</{tag}>')]


@pytest.mark.parametrize('what, edit, error', ANNOTATIONS, ids=[c[0] for c in ANNOTATIONS])
def test_annotations(tmp_path, capsys, what, edit, error):
    root = voc(tmp_path / 'data', edit)
    code, stdout, stderr = cli(capsys, 'train', '--data', root, '--out', tmp_path / 'run', *TINY)
    if error is None:
        assert code == 0 and (tmp_path / 'run' / 'model.npz').exists(), stderr
    else:
        assert code != 0 and stderr.count('\n') == 1 and error in stderr, stderr
        assert '.xml' in stderr                                       # the file is named
        assert not (tmp_path / 'run' / 'model.npz').exists()


@pytest.mark.parametrize('what, error', [('duplicate id', 'listed twice'),
                                         ('missing annotation', 'annotation file not found'),
                                         ('missing image', 'image file not found'),
                                         ('missing split', 'split file not found')])
def test_data_set_layout(tmp_path, capsys, what, error):
    root = voc(tmp_path / 'data')
    split = os.path.join(root, 'ImageSets', 'Main', 'trainval.txt')
    first = open(split).read().split()[0]
    if what == 'duplicate id':
        open(split, 'a').write(first + '\n')
    elif what == 'missing annotation':
        os.remove(os.path.join(root, 'Annotations', first + '.xml'))
    elif what == 'missing image':
        os.remove(os.path.join(root, 'JPEGImages', first + '.jpg'))
    else:
        os.remove(split)
    code, _, stderr = cli(capsys, 'proposals', '--data', root, '--mode', 'single')
    assert code != 0 and stderr.count('\n') == 1 and error in stderr, stderr


def broken_models(d):
    """Copies of the demo model whose weights are damaged in one way each."""
    good = dict(np.load(DEMO_MODEL + '.npz'))
    cases = {}
    for name, change in [('truncated', None), ('wrong_shape', ('cls_score.weight', np.zeros((3, 3)))),
                         ('complex', ('cls_score.bias', good['cls_score.bias'].astype(np.complex64))),
                         ('nan', ('bbox_pred.bias', np.full_like(good['bbox_pred.bias'], np.nan)))]:
        base = d / name
        shutil.copy(DEMO_MODEL + '.json', str(base) + '.json')
        if change is None:
            data = open(DEMO_MODEL + '.npz', 'rb').read()
            open(str(base) + '.npz', 'wb').write(data[:len(data) // 3])
        else:
            np.savez(str(base) + '.npz', **dict(good, **{change[0]: change[1]}))
        cases[name] = base
    return cases


@pytest.mark.parametrize('name, error', [('truncated', 'not a weights file'), ('wrong_shape', 'wrong shape'),
                                         ('complex', 'complex64 values'), ('nan', 'NaN')])
def test_damaged_model_weights(corpus, tmp_path, capsys, name, error):
    base = broken_models(tmp_path)[name]
    code, _, stderr = cli(capsys, 'detect', corpus / 'ok.jpg', '--weights', base, '--out', tmp_path / 'x.png')
    assert code != 0 and stderr.count('\n') == 1 and error in stderr and f'{name}.npz' in stderr, stderr


class Evil:
    def __reduce__(self):
        return (os.system, ('echo pwned',))


def test_weight_files_that_attack(tmp_path, capsys):
    evil = tmp_path / 'evil.pth'
    with zipfile.ZipFile(evil, 'w') as zf:                          # torch's zip layout, a payload inside
        zf.writestr('archive/data.pkl', pickle.dumps({'w': Evil()}, protocol=2))
    bomb = tmp_path / 'bomb.npz'
    with zipfile.ZipFile(bomb, 'w', zipfile.ZIP_DEFLATED) as zf:
        with zf.open('w.npy', 'w', force_zip64=True) as member:
            for _ in range(160):                                        # 160 MB of zeros, a few KB on disk
                member.write(bytes(1 << 20))
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    for path, error in [(evil, "refusing the global 'posix.system'"), (bomb, 'zip bomb'),
                        (empty, 'not a weights file')]:
        code, stdout, stderr = cli(capsys, 'convert-weights', path, tmp_path / 'out.npz')
        assert code != 0 and stderr.count('\n') == 1 and error in stderr and path.name in stderr, stderr
        assert 'pwned' not in stdout and not (tmp_path / 'out.npz').exists()


@pytest.mark.parametrize('change, error', [({'trunk': 3}, 'trunk=3'), ({'scales': 'big'}, "scales='big'"),
                                           (None, 'not JSON')])
def test_model_descriptions(corpus, tmp_path, capsys, change, error):
    info = json.load(open(DEMO_MODEL + '.json'))
    shutil.copy(DEMO_MODEL + '.npz', tmp_path / 'm.npz')
    (tmp_path / 'm.json').write_text('{oops' if change is None else json.dumps(dict(info, **change)))
    code, _, stderr = cli(capsys, 'detect', corpus / 'ok.jpg', '--weights', tmp_path / 'm')
    assert code != 0 and stderr.count('\n') == 1 and error in stderr and 'm.json' in stderr, stderr


def test_checkpoints_and_resume(tmp_path, capsys):
    root = voc(tmp_path / 'data')
    run = ['train', '--data', root, '--out', tmp_path / 'run', *TINY[:2], '--iterations', '4',
           *TINY[4:], 'checkpoint_every=2']
    assert cli(capsys, *run)[0] == 0
    newest, older = sorted((tmp_path / 'run').glob('checkpoint_*.npz'), reverse=True)
    newest.write_bytes(newest.read_bytes()[:1000])                    # damaged on disk
    code, stdout, stderr = cli(capsys, *run, '--resume')
    assert code == 0 and f'skipped {newest}: damaged' in stdout and f'resumed from {older.name}' in stdout, stderr
    for path in (tmp_path / 'run').glob('checkpoint_*.npz'):
        path.write_bytes(path.read_bytes()[:1000])
    code, _, stderr = cli(capsys, *run, '--resume')
    assert code != 0 and stderr.count('\n') == 1 and 'no usable checkpoint' in stderr, stderr
    code, _, stderr = cli(capsys, *run)                                # a fresh run over them
    assert code != 0 and 'holds the checkpoints of another run: add --resume' in stderr, stderr
    for path in (tmp_path / 'run').glob('checkpoint_*.npz'):
        path.unlink()
    assert cli(capsys, *run)[0] == 0
    code, _, stderr = cli(capsys, *run, 'lr=0.5', '--resume')
    assert code != 0 and 'lr (checkpoint 0.001, now 0.5)' in stderr and 'override' in stderr, stderr
    assert cli(capsys, *run, 'lr=0.5', '--resume', '--override')[0] == 0
    code, _, stderr = cli(capsys, *run, '--resume', '--model', 'faster')
    assert code != 0 and 'a checkpoint of Fast R-CNN, not of Faster R-CNN' in stderr, stderr
    faster = [*run[:4], tmp_path / 'faster', *run[5:]]
    assert cli(capsys, *faster, '--model', 'faster')[0] == 0
    code, stdout, stderr = cli(capsys, *faster, '--resume', '--iterations', '5')   # its kind, read
    assert code == 0 and 'resumed from checkpoint_00000004.npz' in stdout, stderr
    assert (tmp_path / 'faster' / 'checkpoint_00000005.npz').exists()


@pytest.mark.parametrize('args, error', [
    (['--iterations', 'abc'], "invalid int value: 'abc'"),
    (['--set', 'scales=big'], "setting scales='big'"),
    (['--set', 'lr=-1'], 'setting lr=-1: expected a number > 0'),
    (['--set', 'flip=1'], 'setting flip=1: expected true or false'),
    (['--set', 'learning_rate=1'], "unknown training settings ['learning_rate']"),
    (['--set', 'iterations'], 'key=value'),
])
def test_arguments(tmp_path, capsys, args, error):
    code, _, stderr = cli(capsys, 'train', '--data', tmp_path, '--out', tmp_path / 'run', *args)
    assert code != 0 and stderr.count('\n') == 1 and error in stderr, stderr

