"""VGG16 in torchvision's layout, and "vgg-tiny", the same structure made small for CPUs.

Simonyan & Zisserman (2015); Fast R-CNN (Sec. 2.2) starts from VGG16 pretrained on ImageNet.
Parameter names match torchvision's state dict (`features.0.weight` ... `classifier.6.bias`),
so a torchvision `.pth` file loads as it is (read without PyTorch by `tinyrcnn.weights`).
"""
import numpy as np

from . import nn
from .seed import rng
from .weights import load_into, load_weights

# Channels per conv layer, 'M' for a 2x2 max pool (configuration "D" of the VGG paper).
VGG16_CFG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M')
# vgg-tiny: the same five stages and stride 16 before the last pool, narrower and shallower.
VGG_TINY_CFG = (16, 'M', 32, 'M', 64, 64, 'M', 96, 96, 'M', 128, 128, 'M')


def make_features(cfg, in_channels=3):
    """3x3 conv (padding 1) + ReLU for each number in cfg, a 2x2 max pool for each 'M'."""
    layers = []
    for v in cfg:
        if v == 'M':
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_channels, v, 3, padding=1), nn.ReLU()]
            in_channels = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """features -> avgpool (7x7) -> classifier (fc6, fc7 with dropout, fc8)."""

    def __init__(self, cfg=VGG16_CFG, num_classes=1000, hidden=4096, dropout=0.5, pool_size=7):
        super().__init__()
        self.cfg = tuple(cfg)
        self.features = make_features(cfg)
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        channels = [v for v in cfg if v != 'M'][-1]
        self.classifier = nn.Sequential(
            nn.Linear(channels * pool_size * pool_size, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes))

    def forward(self, x):
        x = self.avgpool(self.features(x))           # (N, 512, 7, 7) for VGG16
        return self.classifier(x.reshape(x.shape[0], -1))


def vgg16(weights=None, num_classes=1000):
    """VGG16; `weights` is a torchvision `.pth` file or a tinyrcnn `.npz` (read without PyTorch)."""
    model = VGG(VGG16_CFG, num_classes)
    if weights is not None:
        load_into(model, weights)
    return model


def he_init(model):
    """He et al. (2015) initialisation, N(0, 2/fan_in) weights and zero biases: a ReLU network
    trained from scratch (the CPU demo has no ImageNet weights) keeps its activations' scale."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = int(np.prod(m.weight.shape[1:]))
            m.weight.data = (rng().standard_normal(m.weight.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
            if m.bias is not None:
                m.bias.data[:] = 0
    return model


def vgg_tiny(weights=None, num_classes=1000, hidden=256):
    """A small VGG for CPU demos and tests: same stages and stride, ~0.4M conv parameters,
    He-initialised where no `weights` are given. With weights (such as the file written by
    `python -m tinyrcnn pretrain`, `tinyrcnn.train.pretrain.pretrain_vgg_tiny`), the classifier's
    sizes are those of the file."""
    if weights is None:
        return he_init(VGG(VGG_TINY_CFG, num_classes, hidden=hidden))
    state = load_weights(weights)
    if 'classifier.6.weight' in state and 'classifier.0.weight' in state:
        num_classes, hidden = state['classifier.6.weight'].shape[0], state['classifier.0.weight'].shape[0]
    model = VGG(VGG_TINY_CFG, num_classes, hidden=hidden)
    load_into(model, weights, state)
    return model
