"""tinyrcnn: Fast R-CNN and Faster R-CNN from scratch on NumPy and CuPy.

    import tinyrcnn as tr
    import tinyrcnn.functional as F
"""
import os as _os
import sys as _sys

if 'numpy' not in _sys.modules:
    # OpenBLAS reads this once, when NumPy loads it: its idle threads then sleep after 2^4
    # cycles instead of spinning for 2^28, and leave the second core to the element-wise work
    # that `parallel.split_work` puts there. Set only if the user has not chosen a value.
    _os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')

from .backend import cuda_available, get_array_module
from .tensor import Tensor, Function, no_grad, concat
from .gradcheck import gradcheck, rel_error
from .utils import manual_seed
from . import functional, nn, optim, models, data, boxes, eval, proposals, weights

__version__ = '0.1.0'
