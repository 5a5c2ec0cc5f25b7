"""tinyrcnn: Fast R-CNN and Faster R-CNN from scratch on NumPy and CuPy.

    import tinyrcnn as tr
    import tinyrcnn.functional as F

`import tinyrcnn` loads nothing heavy and changes nothing in the process (no environment
variable, no allocator setting): the names below are imported on first use (PEP 562). The CPU
speed paths are opt-in: `tinyrcnn.speed.enable()`, which the command line calls.
"""
import importlib

__version__ = '0.1.0'

# public name -> (module, attribute)
_NAMES = {
    'Tensor': ('tensor', 'Tensor'), 'Function': ('tensor', 'Function'), 'no_grad': ('tensor', 'no_grad'),
    'concat': ('ops.concat', 'concat'), 'cuda_available': ('backend', 'cuda_available'),
    'get_array_module': ('backend', 'get_array_module'), 'gradcheck': ('gradient_check', 'gradcheck'),
    'rel_error': ('gradient_check', 'rel_error'), 'manual_seed': ('seed', 'manual_seed'),
}
_SUBMODULES = ('backend', 'tensor', 'ops', 'kernels', 'functional', 'nn', 'optim', 'gradient_check',
               'seed', 'utils', 'checks', 'boxes', 'eval', 'viz', 'weights', 'torch_format', 'vgg',
               'data', 'proposals', 'models', 'fast_rcnn', 'faster_rcnn', 'export', 'train', 'speed',
               'cli', 'batch', 'demo', 'bench')


def __getattr__(name):
    if name in _NAMES:
        module, attribute = _NAMES[name]
        value = getattr(importlib.import_module(f'.{module}', __name__), attribute)
    elif name in _SUBMODULES:
        value = importlib.import_module(f'.{name}', __name__)
    else:
        raise AttributeError(f"module 'tinyrcnn' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_NAMES) | set(_SUBMODULES))
