"""The functional ops, all NCHW (`import tinyrcnn.functional as F`)."""
from .ops.activation import dropout, relu
from .ops.adaptive_pool import adaptive_avg_pool2d
from .ops.conv import conv2d
from .ops.linear import linear
from .ops.loss import cross_entropy, smooth_l1_loss
from .ops.pool import max_pool2d
from .ops.roi_pool import roi_pool, roi_spp

__all__ = ['conv2d', 'max_pool2d', 'relu', 'dropout', 'linear', 'cross_entropy',
           'smooth_l1_loss', 'adaptive_avg_pool2d', 'roi_pool', 'roi_spp']
