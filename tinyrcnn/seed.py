"""tinyrcnn's random numbers: parameter initialisation, dropout masks, sampling defaults."""
import numpy as np

from . import backend

_rng = [None]


def manual_seed(seed):
    """Seed tinyrcnn's random numbers (parameter init, dropout), and CuPy's if in use."""
    _rng[0] = np.random.default_rng(seed)
    if backend._cupy() is not None and backend.cuda_available():
        backend._cupy().random.seed(seed)


def rng():
    """The package's NumPy random Generator (seeded by manual_seed; seed 0 until then)."""
    if _rng[0] is None:
        _rng[0] = np.random.default_rng(0)
    return _rng[0]
