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


def bench_svd_head(device='cpu', rois=256, fc6_rank=1024, fc7_rank=256, repeats=3):
    """Fast R-CNN's VGG16 head (fc6, fc7, cls_score, bbox_pred) on `rois` pooled RoIs, before and
    after truncated SVD (Sec. 3.1), with parameter counts and the change in class scores."""
    import tinyrcnn as tr
    from .models.fast_rcnn import svd_linear
    from . import nn
    tr.manual_seed(0)
    rng = np.random.default_rng(0)
    # fc6/fc7 with VGG16's shapes; weights drawn with a decaying spectrum, like trained layers
    def layer(out_f, in_f):
        lin = nn.Linear(in_f, out_f)
        U = np.linalg.qr(rng.standard_normal((out_f, min(out_f, 512))))[0]
        V = rng.standard_normal((min(out_f, 512), in_f)) / np.sqrt(in_f)
        spectrum = 1.0 / (1.0 + np.arange(U.shape[1]) / 32.0)
        lin.weight.data = ((U * spectrum) @ V).astype(np.float32)
        return lin
    head = nn.Sequential(layer(4096, 25088), nn.ReLU(), layer(4096, 4096), nn.ReLU(),
                         nn.Linear(4096, 21))
    head.to(device).eval()
    x = tr.Tensor(rng.standard_normal((rois, 25088)).astype(np.float32)).to(device)

    def run_head():
        with tr.no_grad():
            return head(x)
    before_params = head.num_parameters()
    t_full = timeit(run_head, device, repeats)
    scores_full = run_head().numpy()
    start = time.perf_counter()
    setattr(head, '0', svd_linear(head[0], fc6_rank))           # offline, once per model
    setattr(head, '2', svd_linear(head[2], fc7_rank))
    t_factor = time.perf_counter() - start
    t_svd = timeit(run_head, device, repeats)
    scores_svd = run_head().numpy()
    change = float(np.abs(scores_svd - scores_full).max() / np.abs(scores_full).max())
    return [(f'RoI head, {rois} RoIs, full ({before_params / 1e6:.1f}M params) ({device})', t_full, None),
            (f'RoI head, SVD {fc6_rank}/{fc7_rank} ({head.num_parameters() / 1e6:.1f}M params, '
             f'score change {change:.1e}; SVD itself {t_factor:.0f} s)', t_svd, t_full)]


def run(device='cpu', only=None, repeats=3, out=print):
    """Run the benchmarks and print one row each; returns the rows."""
    from .ops.roi_pool import bench_roi_pool
    from .boxes import bench_nms
    suites = {
        'vgg': lambda: bench_vgg16_trunk(device, repeats=repeats),
        'roi_pool': lambda: [(n, t, None) for n, t in bench_roi_pool(device, repeats=repeats)],
        'nms': lambda: [(n, t, None) for n, t in bench_nms(device, repeats=repeats)],
        'svd': lambda: bench_svd_head(device, repeats=repeats),
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
