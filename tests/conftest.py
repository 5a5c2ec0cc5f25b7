import os

import numpy as np
import pytest

from cupy_standin import switch

cuda_device = switch.cuda_device       # the fixture of the @gpu tests (helpers.gpu)

os.environ.setdefault('TINYRCNN_QUIET', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')


@pytest.fixture
def rng():
    return np.random.default_rng(0)
