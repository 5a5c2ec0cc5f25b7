"""Give the project's virtual environment CuPy where there is a GPU; do nothing where there is none.

Run by `make` after the requirements are installed, with the environment's own Python:

    .venv/bin/python tools/install_cupy.py

1. No `nvidia-smi`, or it does not answer: no GPU, nothing to do (silent).
2. CuPy already imports and sees the GPU (installed before, or visible from the system Python,
   whose packages the Makefile then shares with the environment): nothing to do.
3. Otherwise install the CuPy wheel built for the driver's CUDA major version, which
   `nvidia-smi` prints ("CUDA Version: 12.4"): cupy-cuda12x or cupy-cuda13x, within the range
   tinyrcnn is tested with (CuPy 13 and 14, see TESTED below), and check that it imports.

When a GPU is present but CuPy cannot be had, it says so in one line and exits 0: tinyrcnn then
runs on the CPU, and `make` goes on. It never fails the build for want of a GPU library.
"""
import re
import shutil
import subprocess
import sys

# CUDA major version of the driver -> pip requirement (the CuPy versions tinyrcnn is tested with)
TESTED = {12: 'cupy-cuda12x>=13.0,<15', 13: 'cupy-cuda13x>=14.0,<15'}
PROBE = 'import cupy; assert cupy.cuda.runtime.getDeviceCount() > 0; print(cupy.__version__)'


def driver_cuda_version(smi_output):
    """(major, minor) of the CUDA version in `nvidia-smi`'s header, or None."""
    m = re.search(r'CUDA Version:\s*(\d+)\.(\d+)', smi_output)
    return (int(m.group(1)), int(m.group(2))) if m else None


def requirement_for(cuda):
    """The pip requirement for a driver's (major, minor) CUDA version, or None if untested.
    A driver newer than the newest tested wheel runs that wheel (CUDA drivers are backward
    compatible), so the newest tested one is chosen."""
    if cuda is None or cuda[0] < min(TESTED):
        return None
    return TESTED[min(cuda[0], max(TESTED))]


def cupy_version(python=sys.executable):
    """The version of a CuPy that imports and sees a GPU with `python`, or None."""
    r = subprocess.run([python, '-c', PROBE], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def main(python=sys.executable):
    smi = shutil.which('nvidia-smi')
    if smi is None:
        return 0
    r = subprocess.run([smi], capture_output=True, text=True)
    if r.returncode != 0:
        return 0                                   # nvidia-smi without a working driver: no GPU
    version = cupy_version(python)
    if version:
        print(f'GPU found; CuPy {version} is already importable')
        return 0
    cuda = driver_cuda_version(r.stdout)
    requirement = requirement_for(cuda)
    if requirement is None:
        print(f'GPU found, but its driver reports CUDA {cuda}: tinyrcnn is tested with CuPy for '
              f'CUDA {sorted(TESTED)}; running on the CPU (install CuPy yourself to use the GPU)')
        return 0
    print(f'GPU found (driver CUDA {cuda[0]}.{cuda[1]}): installing {requirement}')
    pip = subprocess.run([python, '-m', 'pip', 'install', '-q', requirement])
    version = cupy_version(python) if pip.returncode == 0 else None
    if version:
        print(f'CuPy {version} installed and sees the GPU')
    else:
        print(f'GPU found, but CuPy could not be {"imported" if pip.returncode == 0 else "installed"} '
              f'({requirement}): tinyrcnn will run on the CPU. See https://docs.cupy.dev/en/stable/install.html')
    return 0


if __name__ == '__main__':
    sys.exit(main())
