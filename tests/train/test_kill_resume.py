"""SIGKILL at random moments of `python -m tinyrcnn train`, then `--resume`: every trial ends with
exactly the weights of an uninterrupted run, for Fast and for Faster R-CNN (8 trials in all)."""
import hashlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinyrcnn.data import make_shapes_voc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = ['--trunk', 'vgg-tiny', '--iterations', '16', '--set', 'freeze_stages=0', 'scales=[96]',
         'max_size=160', 'rois_per_batch=32', 'source="tiny"', 'checkpoint_every=2', 'lr=0.01']
FASTER = ['anchor_scales=[1,2,4]', 'rpn_min_size=4']
TRIALS = 4                                        # per model


def command(data, out, model, *extra):
    settings = SMALL + (FASTER if model == 'faster' else [])
    return [sys.executable, '-m', 'tinyrcnn', 'train', '--data', str(data), '--out', str(out),
            '--model', model, '--proposal-mode', 'single', *settings, *extra]


def run(cmd):
    env = dict(os.environ, TINYRCNN_QUIET='1', PYTHONPATH=ROOT)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    return r


def digest(out):
    return hashlib.sha256(open(os.path.join(out, 'model.npz'), 'rb').read()).hexdigest()


@pytest.mark.parametrize('model', ['fast', 'faster'])
def test_killed_runs_resume_to_the_same_weights(tmp_path, model):
    data = make_shapes_voc(tmp_path / 'data', 6, 0, seed=4, image_size=(96, 128))
    start = time.perf_counter()
    run(command(data, tmp_path / 'whole', model))
    whole, seconds = digest(tmp_path / 'whole'), time.perf_counter() - start
    env = dict(os.environ, TINYRCNN_QUIET='1', PYTHONPATH=ROOT)
    delays = np.random.default_rng(7).uniform(0.3, 1.0, TRIALS) * seconds   # anywhere in the run
    resumed_from = []
    for k, delay in enumerate(delays):
        out = tmp_path / f'trial{k}'
        victim = subprocess.Popen(command(data, out, model), env=env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        has_checkpoint = any(f.startswith('checkpoint_') for f in os.listdir(out)) if out.exists() else False
        r = run(command(data, out, model, *(['--resume'] if has_checkpoint else [])))
        resumed_from.append(r.stdout.split('resumed from ')[1].split()[0] if has_checkpoint else 'start')
        assert digest(out) == whole, (k, delay, resumed_from[-1])
        assert not [f for f in os.listdir(out) if f.endswith('.tmp')]        # nothing half-written
    assert len(set(resumed_from)) > 1, resumed_from                          # killed at different points
