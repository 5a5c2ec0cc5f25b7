"""tinyrcnn's random numbers: parameter initialisation, dropout masks, sampling defaults."""
import numpy as np

from . import backend

_rng = [None]


def manual_seed(seed):
    """Seed tinyrcnn's random numbers (parameter init, dropout), and CuPy's if in use."""
    _rng[0] = np.random.default_rng(seed)
    if backend._cupy() is not None and backend.cuda_available():
        backend._cupy().random.seed(seed)


def gaussian(shape, std):
    """float32 draws of N(0, std^2) from the package's generator: how the papers initialise the
    layers they add (Fast R-CNN, Sec. 2.2-2.3; Faster R-CNN, Sec. 3.1.3)."""
    return (rng().standard_normal(shape) * std).astype(np.float32)


def rng():
    """The package's NumPy random Generator (seeded by manual_seed; seed 0 until then)."""
    if _rng[0] is None:
        _rng[0] = np.random.default_rng(0)
    return _rng[0]
