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


@pytest.fixture(autouse=True)
def _speed_paths_as_found():
    """A test that turns the CPU speed paths on and leaves them on (`run_demo` does, as the
    command line wants) must not change the ops of the tests after it: the GPU-path tests
    compare the stand-in with the reference ops bit for bit."""
    from tinyrcnn import backend
    before = backend.fast_cpu_paths()
    yield
    backend.set_fast_cpu(before)
