import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TINYRCNN_QUIET', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')

import tinyrcnn as tr  # noqa: E402

gpu = pytest.mark.skipif(not tr.cuda_available(), reason='needs CuPy and a CUDA GPU')


def distinct(shape, seed=0, dtype=np.float64, scale=1.0):
    """Values that are all different (a shuffled ramp plus jitter), so max-pooling has no ties."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    ramp = rng.permutation(n).astype(np.float64) / n
    return ((ramp + 0.1 * rng.random(n) / n - 0.5) * scale).reshape(shape).astype(dtype)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
