"""tinyrcnn: Fast R-CNN and Faster R-CNN from scratch on NumPy and CuPy.

    import tinyrcnn as tr
    import tinyrcnn.functional as F
"""
from .backend import cuda_available, get_array_module
from .tensor import Tensor, Function, no_grad, concat
from .gradcheck import gradcheck, rel_error
from .utils import manual_seed
from . import functional, nn, optim, models, data, boxes, eval, proposals, weights

__version__ = '0.1.0'
