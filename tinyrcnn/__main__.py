"""`python -m tinyrcnn COMMAND`: the command line (`tinyrcnn/cli.py`).

One setting must come before NumPy loads. OpenBLAS reads OPENBLAS_THREAD_TIMEOUT once, when
NumPy loads it: with a short timeout its idle threads sleep soon after a product instead of
spinning, and leave the second core to the two-thread loops of the CPU speed paths
(`tinyrcnn.speed`). A value you have set is kept. `import tinyrcnn` itself sets nothing.
"""
import os
import sys

if 'numpy' not in sys.modules:
    os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')

from .cli import main  # noqa: E402  (NumPy loads here, after the setting)

sys.exit(main())
