"""Write the small torch.save fixtures that tests/test_weights.py reads without PyTorch.

Needs PyTorch (only this script does). Regenerate from the repository root with:

    .venv/bin/python tests/data/make_fixtures.py

Files written next to this script (about 50 KB in all):
  vgg_tiny_zip.pth      a torchvision-VGG-shaped state dict (features.*, classifier.*), zip format
  vgg_tiny_legacy.pth   the same tensors, legacy format (_use_new_zipfile_serialization=False)
  vgg_tiny.npz          the expected arrays, from torch's own .numpy()
  views_zip.pth         many dtypes and views sharing storage (offsets, transposes, stride 0,
  views_legacy.pth      0-d, empty, bfloat16, uint16 via _rebuild_tensor_v3, a Parameter)
  views.npz             the expected arrays (bfloat16 as float32)
  checkpoint.pth        {'epoch', 'model': DataParallel-style 'module.' keys, 'optimizer'}
  vgg_tiny_logits.npz   a fixed input and the logits PyTorch computes for it with vgg_tiny_zip.pth
                        in eval mode (`--logits` rewrites only this file)
"""
import collections
import os

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))


def tiny_vgg():
    """torchvision's VGG layout (features / avgpool / classifier) at toy widths."""
    features = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    classifier = nn.Sequential(
        nn.Linear(8 * 2 * 2, 16), nn.ReLU(), nn.Dropout(), nn.Linear(16, 16), nn.ReLU(),
        nn.Dropout(), nn.Linear(16, 5))
    model = nn.Module()
    model.features, model.avgpool, model.classifier = features, nn.AdaptiveAvgPool2d(2), classifier
    return model


def views():
    """Tensors whose storage is not simply their own values, plus every common dtype."""
    g = torch.Generator().manual_seed(1)
    base = torch.randn(6, 5, generator=g)
    wide = torch.randn(4, 3, 2, generator=g, dtype=torch.float64)
    return collections.OrderedDict([
        ('base', base),
        ('transposed', base.t()),                       # strides (1, 5)
        ('offset_slice', base[2:, 1:4]),                # storage offset 11, row stride 5
        ('every_other', base[::2, ::3]),                # strides (10, 3)
        ('column', base[:, 3]),                         # offset 3, stride 5
        ('expanded', torch.randn(3, 1, generator=g).expand(3, 4)),  # stride 0
        ('permuted64', wide.permute(2, 0, 1)),
        ('int64', torch.arange(-5, 7, dtype=torch.int64).reshape(3, 4)[:, 1:]),
        ('int32', torch.tensor([-2 ** 31, 0, 2 ** 31 - 1], dtype=torch.int32)),
        ('int16', torch.tensor([[-7, 300]], dtype=torch.int16)),
        ('int8', torch.tensor([-128, 5, 127], dtype=torch.int8)),
        ('uint8', torch.tensor([0, 200, 255], dtype=torch.uint8)),
        ('uint16', torch.tensor([1, 40000, 65535], dtype=torch.uint16)),  # _rebuild_tensor_v3
        ('bool', torch.tensor([True, False, True])),
        ('float16', torch.randn(2, 3, generator=g).half()),
        ('bfloat16', torch.randn(2, 3, generator=g).bfloat16().t()),
        ('scalar', torch.tensor(3.5)),
        ('num_batches_tracked', torch.tensor(7)),       # 0-d int64, as in BatchNorm
        ('empty', torch.zeros(0, 4)),
        ('parameter', nn.Parameter(torch.randn(2, 2, generator=g))),
    ])


def expected(sd):
    out = {}
    for k, v in sd.items():
        v = v.detach()
        out[k] = (v.float() if v.dtype == torch.bfloat16 else v).numpy().copy()
    return out


def fixed_input():
    """(2, 3, 8, 8) float32 values that any reimplementation can rebuild exactly."""
    return (np.sin(np.arange(2 * 3 * 8 * 8, dtype=np.float64) * 0.37) * 2).astype(np.float32).reshape(2, 3, 8, 8)


def logits():
    model = tiny_vgg()
    model.load_state_dict(torch.load(os.path.join(HERE, 'vgg_tiny_zip.pth')))
    model.eval()
    x = torch.from_numpy(fixed_input())
    with torch.no_grad():
        h = model.avgpool(model.features(x))
        y = model.classifier(torch.flatten(h, 1))
    np.savez(os.path.join(HERE, 'vgg_tiny_logits.npz'), input=x.numpy(), logits=y.numpy())


def main():
    torch.manual_seed(0)
    vgg = tiny_vgg().state_dict()
    torch.save(vgg, os.path.join(HERE, 'vgg_tiny_zip.pth'))
    torch.save(vgg, os.path.join(HERE, 'vgg_tiny_legacy.pth'), _use_new_zipfile_serialization=False)
    np.savez(os.path.join(HERE, 'vgg_tiny.npz'), **expected(vgg))

    sd = views()
    torch.save(sd, os.path.join(HERE, 'views_zip.pth'))
    torch.save(sd, os.path.join(HERE, 'views_legacy.pth'), _use_new_zipfile_serialization=False)
    np.savez(os.path.join(HERE, 'views.npz'), **expected(sd))

    # a training checkpoint: the weights sit under 'model' with DataParallel's prefix
    model = collections.OrderedDict(('module.' + k, v) for k, v in vgg.items())
    opt = torch.optim.SGD(tiny_vgg().parameters(), lr=0.01, momentum=0.9)
    torch.save({'epoch': 7, 'model': model, 'optimizer': opt.state_dict()},
               os.path.join(HERE, 'checkpoint.pth'))


if __name__ == '__main__':
    import sys
    if '--logits' not in sys.argv:
        main()
    logits()
