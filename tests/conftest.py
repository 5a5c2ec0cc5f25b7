import os

import numpy as np
import pytest

os.environ.setdefault('TINYRCNN_QUIET', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')


@pytest.fixture
def rng():
    return np.random.default_rng(0)
