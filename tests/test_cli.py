"""The command line: errors are one line `error: ...` with a non-zero exit status."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, cwd=None):
    env = dict(os.environ, TINYRCNN_QUIET='1', PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, '-m', 'tinyrcnn', *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, env=env, timeout=300)


@pytest.mark.parametrize('args,expected', [
    (['detect', 'no/such/image.jpg'], 'image not found'),
    (['test', '--weights', 'no/such/model'], 'model not found'),
    (['train', '--data', 'no/such/folder'], 'data set folder not found'),
    (['convert-weights', 'no/such.pth', 'x.npz'], 'not found'),
    (['bench', '--device', 'tpu'], "'cpu' or 'cuda'"),
    (['bench', '--only', 'nothing'], 'unknown benchmark'),
    (['train', '--data', '.', '--set', 'lr'], 'key=value'),
    (['demo', '--model', 'slow'], 'invalid choice'),
    (['nonsense'], 'invalid choice'),
    (['pretrain', '--iterations', '0'], '--iterations must be >= 1'),
])
def test_bad_arguments_give_one_error_line(args, expected):
    r = run(*args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith('error: ') and expected in lines[0], lines[0]
    assert 'Traceback' not in r.stderr


def test_convert_weights_round_trip(tmp_path):
    src = os.path.join(ROOT, 'tests', 'fixtures', 'vgg_tiny_zip.pth')
    dst = tmp_path / 'w.npz'
    r = run('convert-weights', src, str(dst))
    assert r.returncode == 0, r.stderr
    assert dst.exists() and 'wrote' in r.stdout
    half = tmp_path / 'half.npz'                      # .npz in, half precision out
    r = run('convert-weights', str(dst), str(half), '--float16')
    assert r.returncode == 0, r.stderr
    import numpy as np
    with np.load(dst) as full, np.load(half) as small:
        assert sorted(full.files) == sorted(small.files)
        for k in full.files:
            assert small[k].dtype == np.float16
            np.testing.assert_allclose(small[k], full[k], rtol=1e-3, atol=1e-4)


def test_not_a_weights_file_is_one_line(tmp_path):
    bad = tmp_path / 'bad.pth'
    bad.write_text('hello')
    r = run('convert-weights', str(bad), str(tmp_path / 'o.npz'))
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1


def test_pretrain_writes_a_weights_file_for_vgg_tiny(tmp_path):
    out = tmp_path / 'pre.npz'
    r = run('pretrain', '--out', str(out), '--images', '4', '--iterations', '2', '--batch', '4',
            '--crop', '32')
    assert r.returncode == 0, r.stderr
    assert out.exists() and 'crop accuracy' in r.stdout
    from tinyrcnn.vgg import vgg_tiny
    assert vgg_tiny(weights=str(out)).classifier[6].weight.shape == (7, 256)


def test_detect_and_test_with_the_shipped_demo_model(tmp_path):
    """The README's commands on the model in tinyrcnn/assets/ (Fast R-CNN: selective search proposes)."""
    from tinyrcnn.data import make_shapes_voc
    root = make_shapes_voc(tmp_path / 'data', 2, 2, seed=0, only_test=True)
    image = os.path.join(root, 'JPEGImages', sorted(os.listdir(os.path.join(root, 'JPEGImages')))[0])
    out = tmp_path / 'dets.png'
    model = os.path.join(ROOT, 'tinyrcnn', 'assets', 'demo_model')
    r = run('detect', image, '--weights', model, '--out', str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:4] == b'\x89PNG' and 'proposals in' in r.stdout
    r = run('test', '--weights', model, '--data', str(root), '--out', str(tmp_path / 'test'))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith('mAP@0.5 (VOC07 11-point): ')
    assert (tmp_path / 'test' / 'pr_curves.png').exists()


def test_faster_rcnn_models_are_tested_at_their_first_scale():
    from tinyrcnn.cli import _scales
    assert _scales([480, 600], {'architecture': 'faster_rcnn'}) == (480,)
    assert _scales([480, 600], {'architecture': 'fast_rcnn'}) == (480, 600)    # a pyramid
