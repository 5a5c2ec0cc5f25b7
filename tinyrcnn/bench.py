"""`python -m tinyrcnn bench`: time tinyrcnn's hot paths, next to PyTorch where it is installed.

Each row prints tinyrcnn's median time, the reference's median time (when there is one) and
the ratio tinyrcnn / reference, measured in the same process on the same machine. Speed
targets live here, not in timed tests.
"""
import time

import numpy as np

from . import backend


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


def _torch(device):
    try:
        import torch
    except Exception:
        return None
    if device == 'cuda' and not torch.cuda.is_available():
        return None
    return torch


def bench_vgg16_trunk(device='cpu', size=224, repeats=3):
    """The 13 conv layers of VGG16 with their pools, forward + backward on one image."""
    import tinyrcnn as tr
    from .models.vgg import make_features, VGG16_CFG
    tr.manual_seed(0)
    features = make_features(VGG16_CFG).to(device)
    x = tr.Tensor(np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32))
    x = x.to(device)

    def ours():
        features.zero_grad()
        features(x).sum().backward()

    t_ours = timeit(ours, device, repeats)
    t_ref = None
    torch = _torch(device)
    if torch is not None:
        layers, c = [], 3
        for v in VGG16_CFG:
            if v == 'M':
                layers.append(torch.nn.MaxPool2d(2))
            else:
                layers += [torch.nn.Conv2d(c, v, 3, padding=1), torch.nn.ReLU(inplace=True)]
                c = v
        net = torch.nn.Sequential(*layers).to(device)
        xt = torch.from_numpy(x.numpy()).to(device)

        def ref():
            net.zero_grad()
            net(xt).sum().backward()
            if device == 'cuda':
                torch.cuda.synchronize()
        t_ref = timeit(ref, 'cpu', repeats)
    return [(f'VGG16 trunk fwd+bwd 1x3x{size}x{size} ({device})', t_ours, t_ref)]


def run(device='cpu', only=None, repeats=3, out=print):
    """Run the benchmarks and print one row each; returns the rows."""
    from .ops.roi_pool import bench_roi_pool
    from .boxes import bench_nms
    suites = {
        'vgg': lambda: bench_vgg16_trunk(device, repeats=repeats),
        'roi_pool': lambda: [(n, t, None) for n, t in bench_roi_pool(device, repeats=repeats)],
        'nms': lambda: [(n, t, None) for n, t in bench_nms(device, repeats=repeats)],
    }
    if device == 'cpu':
        from .proposals.selective_search import bench_selective_search
        suites['selective_search'] = lambda: [
            ('selective search fast, per ~500x375 image (cpu)', bench_selective_search(), None)]
    names = list(suites) if not only else only
    unknown = [n for n in names if n not in suites]
    if unknown:
        raise ValueError(f'unknown benchmark(s) {unknown}; choose from {sorted(suites)}')
    torch = _torch(device)
    ref_name = f'torch {torch.__version__}' if torch is not None else 'no reference'
    out(f'tinyrcnn bench on {device}; reference: {ref_name}; threads: {_threads(torch)}')
    out(f"{'benchmark':<58} {'tinyrcnn':>10} {'reference':>10} {'ratio':>7}")
    rows = []
    for name in names:
        for label, ours, ref in suites[name]():
            ratio = f'{ours / ref:7.2f}' if ref else '      -'
            ref_text = f'{ref * 1e3:8.1f}ms' if ref else '         -'
            out(f'{label:<58} {ours * 1e3:8.1f}ms {ref_text} {ratio}')
            rows.append((label, ours, ref))
    return rows


def _threads(torch):
    import os
    n = os.cpu_count()
    return f'{n} cores' + (f', torch uses {torch.get_num_threads()}' if torch is not None else '')
