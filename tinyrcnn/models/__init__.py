"""Networks: VGG16 (and the small vgg-tiny), Fast R-CNN, Faster R-CNN."""
from .vgg import VGG, vgg16, vgg_tiny, make_features, VGG16_CFG, VGG_TINY_CFG
from .fast_rcnn import FastRCNN, build_trunk, svd_linear
from .anchors import generate_anchors, shift_anchors
from .faster_rcnn import FasterRCNN
