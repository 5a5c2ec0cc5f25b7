"""The networks under one name, `tr.models`: VGG16 and vgg-tiny, Fast R-CNN, Faster R-CNN and
its anchors. Each lives with its paper (`vgg.py`, `fast_rcnn/`, `faster_rcnn/`); this module
only gathers them for the public API, and nothing inside the package imports it."""
from .fast_rcnn.network import FastRCNN, build_trunk
from .fast_rcnn.svd import svd_linear
from .faster_rcnn.anchors import generate_anchors, shift_anchors
from .faster_rcnn.network import FasterRCNN
from .faster_rcnn.rpn import RPNHead
from .vgg import VGG, VGG16_CFG, VGG_TINY_CFG, he_init, make_features, vgg16, vgg_tiny

__all__ = ['VGG', 'VGG16_CFG', 'VGG_TINY_CFG', 'make_features', 'vgg16', 'vgg_tiny', 'he_init',
           'FastRCNN', 'build_trunk', 'svd_linear', 'FasterRCNN', 'RPNHead', 'generate_anchors',
           'shift_anchors']
