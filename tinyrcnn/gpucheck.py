"""`python -m tinyrcnn gpu-check --out DIR` (`make gpu-check`): the whole GPU path in one call.

Written before any GPU was lent to the project, so that the first one is used in a single
call. On a machine where CuPy sees a GPU it runs, each step in its own process under a time
limit (a hang or a crash costs that step only):

1. environment: card, driver, CUDA, CuPy, NumPy, PyTorch versions;
2. tests: every GPU test of the suite (`pytest -m gpu`), GPU results against the NumPy ones;
3. kernels: every `.cu` kernel launched through its op at sizes larger than the tests', each
   result compared with the NumPy reference (`launch_every_kernel`);
4. compute-sanitizer: memcheck and racecheck over step 3;
5. bench: `bench --device cuda --only vgg,roi_pool,nms,detect,train` (checked against PyTorch,
   then timed; detection per image of both detectors; the training step with each side's peak
   GPU memory);
6. demo: a short GPU demo (`demo --device cuda` with fewer iterations), its mAP.

It writes DIR/report.md and DIR/report.json, both rewritten after every step, so what finished
is kept if the machine goes away. Without a GPU, the same steps run on the strict CuPy stand-in
of the test suite (tests/cupy_standin, NumPy underneath): that proves the path runs and its
kernels are launched with the right arguments, not its speed; compute-sanitizer is reported
"needs a GPU", and the bench and demo run at toy sizes.
"""
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STANDIN = os.path.join(ROOT, 'tests', 'cupy_standin')
# seconds per step on a GPU; the whole check is meant to end within 8 minutes on an H100/H200
LIMITS = dict(tests=75, kernels=30, memcheck=45, racecheck=45, bench=135, demo=150)
# The GPU demo step: the Fast R-CNN demo's recipe, shortened to fit the check (its mAP is not
# the full demo's); on the stand-in, toy sizes that only prove the path runs.
DEMO = dict(num_train=300, num_test=50, iterations=300)
TINY_DEMO = dict(num_train=6, num_test=3, iterations=2,
                 overrides=dict(pretrain_iterations=2, checkpoint_every=2))


def gpu_present():
    """True when a real CuPy (not the stand-in) sees a GPU, checked in a clean child process."""
    probe = ('import cupy; assert not hasattr(cupy, "_standin"); '
             'assert cupy.cuda.runtime.getDeviceCount() > 0')
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in env.get('PYTHONPATH', '').split(os.pathsep)
                                        if p and os.path.abspath(p) != STANDIN)
    return subprocess.run([sys.executable, '-c', probe], capture_output=True, env=env).returncode == 0


def child_env(standin):
    """The environment of the steps' processes: the checkout importable, and on the stand-in
    its folder first on the path, so that `import cupy` gives the stand-in."""
    env = dict(os.environ, MPLBACKEND='Agg', TINYRCNN_QUIET='1')
    paths = ([STANDIN] if standin else []) + [ROOT] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
    env['PYTHONPATH'] = os.pathsep.join(paths)
    return env


def environment():
    """What the report is about: the card and the versions of what runs on it."""
    import cupy
    info = dict(python=platform.python_version(), numpy=np.__version__, cupy=cupy.__version__,
                standin=hasattr(cupy, '_standin'), machine=platform.machine())
    try:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props['name']
        info['gpu'] = name.decode() if isinstance(name, bytes) else str(name)
        info['gpu_memory_gib'] = round(props['totalGlobalMem'] / 2 ** 30, 1)
        info['cuda_runtime'] = cupy.cuda.runtime.runtimeGetVersion()
        info['cuda_driver'] = cupy.cuda.runtime.driverGetVersion()
    except Exception as e:                        # the stand-in has no card to describe
        info['gpu'] = f'none ({type(e).__name__})'
    try:
        import torch
        info['torch'] = torch.__version__
        info['torch_sees_gpu'] = bool(torch.cuda.is_available())
    except Exception:
        info['torch'] = None
    return info


def launch_every_kernel(scale=1, log=print):
    """Launch every CUDA kernel through its op on the current GPU (or the stand-in) and compare
    with the NumPy reference; raises AssertionError on a difference. `scale` grows the inputs
    (the sanitizer run keeps them small: it slows kernels down a hundredfold)."""
    import cupy
    from . import functional as F
    from .boxes import nms, random_clustered_boxes
    from .ops.roi_pool import roi_pool
    from .tensor import Tensor
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4 * scale, 19, 23)).astype(np.float32)
    w = rng.standard_normal((6, 4 * scale, 3, 3)).astype(np.float32)
    H, W = 19 * 16, 23 * 16
    x1, y1 = rng.uniform(-20, W, 50 * scale), rng.uniform(-20, H, 50 * scale)
    rois = np.stack([rng.integers(0, 2, 50 * scale), x1, y1, x1 + rng.uniform(0, 200, 50 * scale),
                     y1 + rng.uniform(0, 200, 50 * scale)], 1).astype(np.float32)
    cases = {
        'im2col/col2im (conv2d)': lambda t: F.conv2d(t, Tensor(w_of(t)), stride=2, padding=1),
        'max_pool (max_pool2d)': lambda t: F.max_pool2d(t, 3, 2),
        'roi_pool': lambda t: roi_pool(t, rois_of(t), (7, 7), 1 / 16),
    }
    w_of = lambda t: w if isinstance(t.data, np.ndarray) else cupy.asarray(w)  # noqa: E731
    rois_of = lambda t: rois if isinstance(t.data, np.ndarray) else cupy.asarray(rois)  # noqa: E731
    for name, op in cases.items():
        results = []
        for device in ('cpu', 'cuda'):
            t = Tensor(x, requires_grad=True).to(device)
            y = op(t)
            y.backward(y.data * 0 + 1)
            results.append((y.numpy(), Tensor(t.grad).numpy()))
        (y0, g0), (y1_, g1) = results
        np.testing.assert_allclose(y1_, y0, rtol=1e-4, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(g1, g0, rtol=1e-4, atol=1e-4, err_msg=name)
        log(f'{name}: forward and backward equal the NumPy path')
    boxes, scores = random_clustered_boxes(1000 * scale, seed=1)
    for max_keep in (None, 50):
        kept = nms(cupy.asarray(boxes.astype(np.float32)), cupy.asarray(scores), 0.7, max_keep)
        np.testing.assert_array_equal(cupy.asnumpy(kept),
                                      nms(boxes.astype(np.float32), scores, 0.7, max_keep))
    log('nms_mask/nms reduction (nms): the same kept boxes as the NumPy path')


def _tail(text, lines=25):
    return '\n'.join(text.strip().splitlines()[-lines:])


def run_step(name, command, env, limit, cwd=ROOT):
    """Run one step's command; its record for the report."""
    start = time.time()
    try:
        r = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=limit)
        status = 'passed' if r.returncode == 0 else f'failed (exit status {r.returncode})'
        output = r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        status = f'timed out after {limit} s'
        output = (e.stdout or b'').decode(errors='replace') if isinstance(e.stdout, bytes) else (e.stdout or '')
    return dict(step=name, status=status, seconds=round(time.time() - start, 1),
                command=' '.join(command).replace(sys.executable, 'python'), output=_tail(output))


def write_report(out, report):
    """DIR/report.json and DIR/report.md, replaced whole (never half-written)."""
    os.makedirs(out, exist_ok=True)
    for name, text in (('report.json', json.dumps(report, indent=1)),
                       ('report.md', format_report(report))):
        with open(os.path.join(out, name + '.tmp'), 'w') as f:
            f.write(text)
        os.replace(os.path.join(out, name + '.tmp'), os.path.join(out, name))


def format_report(report):
    env = report['environment']
    lines = [f"# tinyrcnn gpu-check, {report['date']}", '',
             f"GPU: {env.get('gpu')}" + (' (the strict CuPy stand-in: no GPU on this machine)'
                                        if env.get('standin') else ''),
             'Versions: ' + ', '.join(f'{k} {env[k]}' for k in ('python', 'numpy', 'cupy', 'torch',
                                                                 'cuda_runtime', 'cuda_driver') if k in env),
             '', '| step | status | seconds | command |', '| --- | --- | --- | --- |']
    lines += [f"| {s['step']} | {s['status']} | {s['seconds']} | `{s['command']}` |" for s in report['steps']]
    for s in report['steps']:
        if s['output']:
            lines += ['', f"## {s['step']}", '', '```', s['output'], '```']
    return '\n'.join(lines) + '\n'


def steps(out, on_gpu):
    """(name, command or None when it needs a GPU, time limit) of each step."""
    py = sys.executable
    tiny = [] if on_gpu else ['--tiny']
    sanitizer = shutil.which('compute-sanitizer')
    step = [py, '-m', 'tinyrcnn', 'gpu-check', '--out', out, '--step']
    kernels = step + ['kernels'] + tiny
    result = [('tests', [py, '-m', 'pytest', os.path.join(ROOT, 'tests'), '-q', '-m', 'gpu',
                         '-p', 'no:cacheprovider'], LIMITS['tests']),
              ('kernels', kernels, LIMITS['kernels'])]
    for tool in ('memcheck', 'racecheck'):
        command = ([sanitizer, '--tool', tool, '--error-exitcode', '1'] + kernels + ['--small']
                   if on_gpu and sanitizer else None)
        result.append((f'compute-sanitizer {tool}', command, LIMITS[tool]))
    result.append(('bench', step + ['bench'] + tiny, LIMITS['bench']))
    result.append(('demo', step + ['demo'] + tiny, LIMITS['demo']))
    return result


def run_check(out, skip=(), log=print):
    """Every step but those named in `skip`, into OUT/report.md and OUT/report.json; returns
    the report."""
    on_gpu = gpu_present()
    if not on_gpu and not os.path.isdir(STANDIN):
        raise RuntimeError('no GPU here, and no tests/cupy_standin to run the steps on '
                           '(run gpu-check from a checkout of tinyrcnn)')
    env = child_env(standin=not on_gpu)
    log(f"gpu-check: {'on the GPU' if on_gpu else 'no GPU: on the strict CuPy stand-in'}; report in {out}")
    probe = subprocess.run([sys.executable, '-m', 'tinyrcnn', 'gpu-check', '--step', 'environment'],
                           cwd=ROOT, env=env, capture_output=True, text=True)
    environment_info = json.loads(probe.stdout) if probe.returncode == 0 else dict(error=_tail(probe.stderr))
    report = dict(date=datetime.datetime.now().isoformat(timespec='seconds'), on_gpu=on_gpu,
                  environment=environment_info, steps=[])
    for name, command, limit in steps(out, on_gpu):
        if name in skip:
            record = dict(step=name, status='skipped (--skip)', seconds=0, command='', output='')
        elif command is None:
            record = dict(step=name, status='needs a GPU', seconds=0, command='', output='')
        else:
            log(f'[{name}] ...')
            record = run_step(name, command, env, limit)
        report['steps'].append(record)
        write_report(out, report)
        log(f"[{name}] {record['status']} ({record['seconds']} s)")
    return report


def add_parser(sub):
    """The `gpu-check` command of the command line (cli.py)."""
    g = sub.add_parser('gpu-check', help='the GPU tests, kernels, compute-sanitizer, GPU bench and '
                       'a short GPU demo in one report (on the CuPy stand-in without a GPU)')
    g.add_argument('--out', default='out/gpu-check')
    g.add_argument('--skip', default='', help='comma-separated steps to leave out: tests, kernels, '
                   "'compute-sanitizer memcheck', 'compute-sanitizer racecheck', bench, demo")
    g.add_argument('--step', choices=['environment', 'kernels', 'bench', 'demo'], default=None,
                   help=argparse_hidden())
    g.add_argument('--tiny', action='store_true', help=argparse_hidden())
    g.add_argument('--small', action='store_true', help=argparse_hidden())
    g.set_defaults(fn=command)


def argparse_hidden():
    import argparse
    return argparse.SUPPRESS


def command(args):
    if args.step == 'environment':
        print(json.dumps(environment()))
    elif args.step == 'kernels':
        launch_every_kernel(scale=1 if (args.tiny or args.small) else 4)
    elif args.step == 'bench':
        from . import bench
        # the rows that run on the GPU (the SVD is computed on the host), the slowest last
        bench.run('cuda', only=['vgg', 'roi_pool', 'nms', 'detect', 'train'], repeats=1 if args.tiny else 3,
                  quick=args.tiny)
    elif args.step == 'demo':
        from .demo import run_demo
        run_demo(os.path.join(args.out, 'demo'), 'fast', device='cuda',
                 **(TINY_DEMO if args.tiny else DEMO))
    else:
        skip = [name.strip() for name in args.skip.split(',') if name.strip()]
        known = [name for name, _, _ in steps(args.out, False)]
        unknown = [name for name in skip if name not in known]
        if unknown:
            raise ValueError(f'--skip: unknown step(s) {unknown}; the steps are {known}')
        report = run_check(args.out, skip)
        failed = [s['step'] for s in report['steps']
                  if s['status'] not in ('passed', 'needs a GPU', 'skipped (--skip)')]
        if failed:
            raise RuntimeError(f"gpu-check: {', '.join(failed)} did not pass; see {args.out}/report.md")
