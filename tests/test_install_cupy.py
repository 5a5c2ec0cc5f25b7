"""tools/install_cupy.py: which CuPy wheel a GPU machine gets, and what happens without one.

The real install cannot run here (no GPU); stand-ins for `nvidia-smi` and for the environment's
Python (small shell scripts on PATH) drive each branch of `main`."""
import importlib.util
import os
import stat

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location('install_cupy', os.path.join(ROOT, 'tools', 'install_cupy.py'))
install_cupy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(install_cupy)

SMI_HEADER = '''
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 580.159.03             Driver Version: 580.159.03     CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
'''


@pytest.mark.parametrize('cuda, requirement', [
    ('12.4', 'cupy-cuda12x>=13.0,<15'), ('12.0', 'cupy-cuda12x>=13.0,<15'),
    ('13.0', 'cupy-cuda13x>=14.0,<15'),
    ('14.1', 'cupy-cuda13x>=14.0,<15'),     # a newer driver runs the newest tested wheel
    ('11.8', None)])                         # older than any tested CuPy
def test_the_wheel_follows_the_drivers_cuda_version(cuda, requirement):
    version = install_cupy.driver_cuda_version(SMI_HEADER.format(cuda=cuda))
    assert version == tuple(int(p) for p in cuda.split('.'))
    assert install_cupy.requirement_for(version) == requirement


def test_no_cuda_version_in_the_output():
    assert install_cupy.driver_cuda_version('NVIDIA-SMI has failed') is None
    assert install_cupy.requirement_for(None) is None


def _script(folder, name, body):
    path = folder / name
    path.write_text('#!/bin/sh\n' + body + '\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def _main(tmp_path, monkeypatch, capsys, smi_body, python_body):
    bin_dir = tmp_path / f'bin{len(list(tmp_path.glob("bin*")))}'   # PATH holds only the stand-ins
    bin_dir.mkdir()
    if smi_body is not None:
        _script(bin_dir, 'nvidia-smi', smi_body)
    monkeypatch.setenv('PATH', str(bin_dir))
    python = _script(bin_dir, 'python', python_body)
    assert install_cupy.main(python) == 0                  # never fails the build
    return capsys.readouterr().out


def test_no_gpu_does_nothing(tmp_path, monkeypatch, capsys):
    calls = tmp_path / 'calls'
    out = _main(tmp_path, monkeypatch, capsys, None, f'echo "$@" >> {calls}; exit 1')
    assert out == '' and not calls.exists()                # no nvidia-smi: Python never asked
    out = _main(tmp_path, monkeypatch, capsys, 'exit 9', f'echo "$@" >> {calls}; exit 1')
    assert out == '' and not calls.exists()                # nvidia-smi that fails: no GPU


def test_an_importable_cupy_is_kept(tmp_path, monkeypatch, capsys):
    out = _main(tmp_path, monkeypatch, capsys, f"echo '{SMI_HEADER.format(cuda='12.4')}'",
                'echo 14.2.0')
    assert out.strip() == 'GPU found; CuPy 14.2.0 is already importable'


def test_gpu_without_cupy_installs_the_matching_wheel(tmp_path, monkeypatch, capsys):
    calls = tmp_path / 'calls'
    # this "python" fails the probe until pip has run, then reports a version
    body = (f'echo "$@" >> {calls}\n'
            f'case "$1" in -m) : > {tmp_path}/installed; exit 0;; esac\n'
            f'[ -e {tmp_path}/installed ] && echo 13.6.0 && exit 0; exit 1')
    out = _main(tmp_path, monkeypatch, capsys, f"echo '{SMI_HEADER.format(cuda='12.8')}'", body)
    assert 'installing cupy-cuda12x>=13.0,<15' in out
    assert out.strip().endswith('CuPy 13.6.0 installed and sees the GPU')
    assert '-m pip install -q cupy-cuda12x>=13.0,<15' in calls.read_text()


def test_gpu_where_cupy_cannot_be_had_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    out = _main(tmp_path, monkeypatch, capsys, f"echo '{SMI_HEADER.format(cuda='13.0')}'", 'exit 1')
    last = out.strip().splitlines()[-1]
    assert last.startswith('GPU found, but CuPy could not be installed (cupy-cuda13x>=14.0,<15)')
    assert 'run on the CPU' in last
