"""What every benchmark row shares: a median timer, the optional references (PyTorch,
torchvision), and a fresh child process per side for peak memory."""
import os
import pickle
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from .. import backend


def timeit(fn, device='cpu', repeats=5, warmup=1):
    """Median wall time of fn() over `repeats` runs after `warmup` runs (GPU work synchronised)."""
    sync = lambda: None  # noqa: E731
    if device == 'cuda':
        cp = backend._cupy()
        sync = cp.cuda.Device().synchronize
    for _ in range(warmup):
        fn()
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def timeit_pair(ours, ref, device='cpu', repeats=5, warmup=1):
    """Median wall times of ours() and ref() over `repeats` runs each, run in turns (ours first,
    then ref first, and so on) after `warmup` runs of both, so that a machine that speeds up or
    slows down meanwhile (a shared 2-core one does, by 10-30%) moves both sides alike. ref may
    run on PyTorch's CUDA device: both are synchronised where `device` is 'cuda'."""
    for _ in range(warmup):
        timeit(ours, device, 1, 0)
        timeit(ref, device, 1, 0)
    times = {ours: [], ref: []}
    for i in range(repeats):
        for fn in ((ours, ref) if i % 2 == 0 else (ref, ours)):
            times[fn].append(timeit(fn, device, 1, 0))
    return float(np.median(times[ours])), float(np.median(times[ref]))


def torch_or_none(device='cpu'):
    """PyTorch where it is installed (and sees a GPU, for device 'cuda'), else None."""
    try:
        import torch
    except Exception:
        return None
    if device == 'cuda':
        if not torch.cuda.is_available():
            return None
        # tinyrcnn's GPU convolutions and matrix products are plain float32 (CuPy leaves TF32
        # off); so is the reference, or it would be both faster and less exact
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return torch


def torchvision_or_none(device='cpu'):
    """(torch, torchvision), either None where it is not installed."""
    torch = torch_or_none(device)
    if torch is None:
        return None, None
    try:
        import torchvision.ops
        return torch, torchvision
    except Exception:
        return torch, None


def cpu_text(cpuinfo='/proc/cpuinfo'):
    """The CPU, for the header of every run: its name, family and model, and whether it has
    AVX-512, e.g. 'AMD EPYC, family 25 model 17, AVX-512'. Machines sold under one name differ
    (an AMD EPYC without AVX-512 ran the VGG16 trunk row 0.61x PyTorch, one with it 1.89x,
    with other code: BENCHMARKS.md), so a figure without them says little. Where there is no
    /proc/cpuinfo (macOS, Windows), the name `platform` gives."""
    try:
        with open(cpuinfo) as f:
            text = f.read()
    except OSError:
        return platform.processor() or platform.machine() or 'an unknown CPU'
    fields = {}
    for line in text.splitlines():                       # the first processor's fields
        key, sep, value = line.partition(':')
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    parts = [fields.get('model name') or platform.processor() or platform.machine()]
    if 'cpu family' in fields and 'model' in fields:
        parts.append(f"family {fields['cpu family']} model {fields['model']}")
    if 'flags' in fields:
        parts.append('AVX-512' if 'avx512f' in fields['flags'].split() else 'no AVX-512')
    return ', '.join(p for p in parts if p)


def threads_text(torch):
    n = os.cpu_count()
    return f'{n} cores' + (f', torch uses {torch.get_num_threads()}' if torch is not None else '')


def peak_memory():
    """This process's peak resident set size in bytes (Linux: VmHWM; elsewhere ru_maxrss)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == 'darwin' else peak * 1024          # macOS counts bytes


def in_child(fn, *args):
    """fn(*args) in a new Python process; returns (its result, the child's peak resident memory
    in bytes). fn must be a module-level function, args picklable. Each side of a row runs in a
    child of its own, so that one side's arrays, allocator caches and libraries are not counted
    in the other's peak. (A plain subprocess rather than multiprocessing: nothing of the calling
    script is imported again, so a script without `if __name__ == '__main__'` works too.)"""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (package_root, env.get('PYTHONPATH')) if p)
    with tempfile.TemporaryDirectory() as tmp:
        job, result = os.path.join(tmp, 'job.pickle'), os.path.join(tmp, 'result.pickle')
        with open(job, 'wb') as f:
            pickle.dump((fn, args), f)
        code = 'import sys; from tinyrcnn.bench.common import _child; _child(*sys.argv[1:])'
        status = subprocess.run([sys.executable, '-c', code, job, result], env=env).returncode
        if status != 0:
            raise RuntimeError(f'the benchmark child process for {fn.__name__} failed '
                               f'(exit status {status}); its error is printed above')
        with open(result, 'rb') as f:
            return pickle.load(f)


def _child(job, result):
    with open(job, 'rb') as f:
        fn, args = pickle.load(f)
    value = fn(*args)
    with open(result, 'wb') as f:
        pickle.dump((value, peak_memory()), f)
