import os
import subprocess
import sys

import numpy as np
import pytest

import tinyrcnn as tr
from tinyrcnn import nn
from tinyrcnn.models import VGG, FastRCNN
from conftest import distinct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, 'tests', 'data')


def fixture_vgg():
    """The architecture of tests/data/vgg_tiny_*.pth (see make_fixtures.py)."""
    return VGG((4, 4, 'M', 8, 'M'), num_classes=5, hidden=16, pool_size=2)


def test_vgg16_has_torchvision_layout_and_1000_logits():
    tr.manual_seed(0)
    model = tr.models.vgg16()
    names = [n for n, _ in model.named_parameters()]
    assert names[:2] == ['features.0.weight', 'features.0.bias']
    assert names[-2:] == ['classifier.6.weight', 'classifier.6.bias']
    assert model.num_parameters() == 138357544                 # torchvision's count
    assert model.features[28].weight.shape == (512, 512, 3, 3)
    small = VGG(tr.models.VGG_TINY_CFG, num_classes=1000, hidden=8)
    x = tr.Tensor(np.zeros((1, 3, 224, 224), np.float32))
    with tr.no_grad():
        assert small.eval()(x).shape == (1, 1000)


def test_logits_equal_pytorch_on_shipped_file_without_pytorch():
    """The fixture was written by torch.save, and its logits computed by PyTorch; here they are
    reproduced in a process where `import torch` fails."""
    code = f'''
import sys; sys.modules["torch"] = None
sys.path.insert(0, {ROOT!r}); sys.path.insert(0, {os.path.join(ROOT, "tests")!r})
import numpy as np, tinyrcnn as tr
from test_models import fixture_vgg
ref = np.load({os.path.join(DATA, "vgg_tiny_logits.npz")!r})
for name in ("vgg_tiny_zip.pth", "vgg_tiny_legacy.pth"):
    m = fixture_vgg()
    m.load_state_dict(tr.weights.load_weights({DATA!r} + "/" + name))
    with tr.no_grad():
        y = m.eval()(tr.Tensor(ref["input"])).numpy()
    err = np.abs(y - ref["logits"]).max() / np.abs(ref["logits"]).max()
    assert err < 1e-5, (name, err)
print("ok")
'''
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr


def test_vgg16_file_written_by_torch_gives_torch_logits(tmp_path):
    torch = pytest.importorskip('torch')
    cfg = tr.models.VGG16_CFG
    layers, c = [], 3
    for v in cfg:                       # torchvision's VGG16, assembled from torch layers
        if v == 'M':
            layers.append(torch.nn.MaxPool2d(2, 2))
        else:
            layers += [torch.nn.Conv2d(c, v, 3, padding=1), torch.nn.ReLU(inplace=True)]
            c = v
    net = torch.nn.Module()
    net.features = torch.nn.Sequential(*layers)
    net.avgpool = torch.nn.AdaptiveAvgPool2d((7, 7))
    net.classifier = torch.nn.Sequential(
        torch.nn.Linear(512 * 7 * 7, 4096), torch.nn.ReLU(True), torch.nn.Dropout(),
        torch.nn.Linear(4096, 4096), torch.nn.ReLU(True), torch.nn.Dropout(), torch.nn.Linear(4096, 1000))
    torch.manual_seed(0)
    path = tmp_path / 'vgg16.pth'
    torch.save(net.state_dict(), path)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    net.eval()
    with torch.no_grad():
        ref = net.classifier(torch.flatten(net.avgpool(net.features(torch.from_numpy(x))), 1)).numpy()
    del net
    np.save(tmp_path / 'x.npy', x)
    code = f'''
import sys; sys.modules["torch"] = None; sys.path.insert(0, {ROOT!r})
import numpy as np, tinyrcnn as tr
m = tr.models.vgg16(weights={str(path)!r}).eval()
with tr.no_grad():
    np.save({str(tmp_path / "y.npy")!r}, m(tr.Tensor(np.load({str(tmp_path / "x.npy")!r}))).numpy())
'''
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    y = np.load(tmp_path / 'y.npy')
    assert np.abs(y - ref).max() / np.abs(ref).max() < 1e-4


def tiny_fast_rcnn(num_classes=2):
    trunk = VGG((3, 'M', 4, 'M', 4, 'M'), num_classes=10, hidden=6, pool_size=2)
    return FastRCNN(trunk, num_classes, freeze_stages=0, roi_size=(2, 2), spatial_scale=1 / 4)


def test_fast_rcnn_structure_and_init():
    tr.manual_seed(0)
    model = FastRCNN('vgg-tiny', num_classes=20)
    assert not any(isinstance(m, nn.MaxPool2d) for m in [model.features[-1]])
    assert model.cls_score.weight.shape == (21, 256) and model.bbox_pred.weight.shape == (84, 256)
    assert abs(model.cls_score.weight.data.std() - 0.01) < 0.002
    assert abs(model.bbox_pred.weight.data.std() - 0.001) < 0.0002
    assert (model.cls_score.bias.data == 0).all()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ['features.0.weight', 'features.0.bias', 'features.3.weight', 'features.3.bias']
    with pytest.raises(ValueError, match='unknown trunk'):
        FastRCNN('resnet', 3)


def test_fast_rcnn_gradcheck_through_trunk_roi_pool_and_both_heads():
    tr.manual_seed(1)
    model = tiny_fast_rcnn().to(dtype=np.float64).eval()
    x = tr.Tensor(distinct((2, 3, 12, 12), 1), requires_grad=True)
    rois = np.array([[0, 0, 0, 11, 11], [1, 2, 3, 9, 10], [0, 4, 0, 11, 7]], np.float64)

    def fn(x, *params):
        scores, deltas = model(x, rois)
        return tr.concat([scores, deltas], axis=1)
    assert tr.gradcheck(fn, [x] + model.parameters())


def test_frozen_stages_get_no_gradient():
    model = FastRCNN(VGG((3, 'M', 4, 'M', 4, 'M'), hidden=6, pool_size=2), 2, freeze_stages=1,
                     roi_size=(2, 2), spatial_scale=1 / 4)
    x = tr.Tensor(np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32))
    s, d = model(x, np.array([[0, 0, 0, 15, 15]], np.float32))
    (s.sum() + d.sum()).backward()
    assert model.features[0].weight.grad is None
    assert model.features[3].weight.grad is not None


def test_truncated_svd_counts_and_accuracy():
    tr.manual_seed(2)
    model = tiny_fast_rcnn().to(dtype=np.float64).eval()
    x = tr.Tensor(distinct((1, 3, 12, 12), 3))
    rois = np.array([[0, 0, 0, 11, 11], [0, 2, 3, 9, 10]], np.float64)
    with tr.no_grad():
        before = model(x, rois)[0].numpy()
    fc6, fc7 = model.classifier[0], model.classifier[3]
    counts = model.compress(fc6_rank=min(fc6.weight.shape), fc7_rank=min(fc7.weight.shape))
    with tr.no_grad():
        after = model(x, rois)[0].numpy()
    np.testing.assert_allclose(after, before, atol=1e-10)       # full rank: the same function
    u, v = fc6.weight.shape
    t = min(u, v)
    assert counts['parameters_after'] - counts['parameters_before'] == (t * (u + v) - u * v) + (
        min(fc7.weight.shape) * sum(fc7.weight.shape) - fc7.weight.size)
    with pytest.raises(ValueError, match='already compressed'):
        model.compress()
    low = tiny_fast_rcnn().to(dtype=np.float64).eval()
    low.load_state_dict({k: v for k, v in tiny_fast_rcnn().state_dict().items()}, strict=False)
    with pytest.raises(ValueError, match='SVD rank'):
        low.compress(fc6_rank=10_000)
