"""VGG16 in torchvision's layout (tinyrcnn/vgg.py): parameter names and counts, and the logits
of weights written by PyTorch, read without it."""
import os
import subprocess
import sys

import numpy as np
import pytest

import tinyrcnn as tr
from tinyrcnn.vgg import VGG
from helpers import FIXTURES as DATA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
from helpers import fixture_vgg
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
