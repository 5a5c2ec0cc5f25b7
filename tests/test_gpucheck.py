"""`python -m tinyrcnn gpu-check` (tinyrcnn/gpucheck.py): the one call a lent GPU gets.

Here (no GPU) it runs on the strict CuPy stand-in, as it does in CI: every step that can run
without a card must pass, the compute-sanitizer steps say they need one, and the report is
written after every step.
"""
import json
import os
import subprocess
import sys

import pytest

from tinyrcnn import gpucheck

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gpu_check(*args, env=None):
    return subprocess.run([sys.executable, '-m', 'tinyrcnn', 'gpu-check', *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ if env is None else env, MPLBACKEND='Agg'))


@pytest.mark.skipif(gpucheck.gpu_present(), reason='this machine has a GPU: `make gpu-check` is the real run')
def test_whole_check_on_the_standin_writes_a_report_of_every_step(tmp_path):
    """The GPU tests step is left out here (the suite runs them anyway); every other step runs."""
    r = _gpu_check('--out', str(tmp_path), '--skip', 'tests')
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((tmp_path / 'report.json').read_text())
    status = {s['step']: s['status'] for s in report['steps']}
    assert status == {'tests': 'skipped (--skip)', 'kernels': 'passed',
                      'compute-sanitizer memcheck': 'needs a GPU',
                      'compute-sanitizer racecheck': 'needs a GPU', 'bench': 'passed', 'demo': 'passed'}
    assert report['on_gpu'] is False and report['environment']['standin'] is True
    steps = {s['step']: s for s in report['steps']}
    assert 'roi_pool: forward and backward equal the NumPy path' in steps['kernels']['output']
    assert 'nms 2000 boxes @ 0.7 (cuda)' in steps['bench']['output']
    assert 'mAP' in steps['demo']['output'] and (tmp_path / 'demo' / 'model.npz').exists()
    markdown = (tmp_path / 'report.md').read_text()
    assert '(the strict CuPy stand-in: no GPU on this machine)' in markdown
    assert '| compute-sanitizer memcheck | needs a GPU | 0 |' in markdown


def test_tests_step_collects_every_gpu_test():
    """The `tests` step runs `pytest -m gpu`: it must find the GPU tests of the suite (a marker
    lost from tests/helpers.py would silently leave the lent GPU idle)."""
    name, command, _ = gpucheck.steps('unused', on_gpu=False)[0]
    assert name == 'tests' and command[-4:] == ['-m', 'gpu', '-p', 'no:cacheprovider']
    r = subprocess.run(command + ['--collect-only'], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    collected = [line for line in r.stdout.splitlines() if '::' in line]
    assert len(collected) >= 15
    assert any('test_gpu_path.py::' in line for line in collected)
    assert any('ops/test_roi_pool.py::' in line for line in collected)


def test_a_failing_step_fails_the_check_with_one_error_line(tmp_path, monkeypatch):
    """A step that fails is recorded with its output, the report is still written, and the
    command ends non-zero naming the step."""
    monkeypatch.setattr(gpucheck, 'steps', lambda out, on_gpu: [
        ('kernels', [sys.executable, '-c', 'print("launching"); raise SystemExit(3)'], 30),
        ('bench', [sys.executable, '-c', 'print("fine")'], 30),
        ('compute-sanitizer memcheck', None, 30)])
    report = gpucheck.run_check(str(tmp_path), log=lambda *a: None)
    status = {s['step']: s['status'] for s in report['steps']}
    assert status == {'kernels': 'failed (exit status 3)', 'bench': 'passed',
                      'compute-sanitizer memcheck': 'needs a GPU'}
    assert json.loads((tmp_path / 'report.json').read_text())['steps'][0]['output'] == 'launching'

    class Args:
        step, out, skip, tiny, small = None, str(tmp_path), '', False, False
    with pytest.raises(RuntimeError, match=r'gpu-check: kernels did not pass; see .*report.md'):
        gpucheck.command(Args)


def test_a_step_past_its_limit_is_reported_as_timed_out(tmp_path):
    record = gpucheck.run_step('demo', [sys.executable, '-c', 'import time; time.sleep(30)'],
                               dict(os.environ), limit=1)
    assert record['status'] == 'timed out after 1 s' and record['seconds'] < 20


def test_unknown_skip_is_one_line_error():
    r = _gpu_check('--out', 'unused', '--skip', 'bnech')
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1].startswith('error: --skip: unknown step(s) [')
