"""`python -m tinyrcnn bench`: time tinyrcnn's hot paths, next to PyTorch where it is installed.

Each row prints tinyrcnn's median time, the reference's median time (when there is one) and
the ratio tinyrcnn / reference, measured in the same process on the same machine. Speed
targets live here, not in timed tests.
"""
import os
import time

import numpy as np

from . import backend, nn, speed
from .boxes import nms, random_clustered_boxes, random_rois
from .fast_rcnn.svd import svd_linear
from .ops.roi_pool import roi_pool
from .proposals.selective_search import selective_search
from .seed import manual_seed
from .tensor import Tensor, no_grad
from .vgg import VGG16_CFG, make_features


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


def bench_vgg16_trunk(device='cpu', size=(224, 224), repeats=3):
    """The 13 conv layers of VGG16 with their pools, forward + backward on one image; the
    reference gets the same weights and input, and its output is checked before timing."""
    manual_seed(0)
    features = make_features(VGG16_CFG).to(device)
    H, W = size
    x = Tensor(np.random.default_rng(0).standard_normal((1, 3, H, W)).astype(np.float32))
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
        net = torch.nn.Sequential(*layers)
        convs = [m for m in features if hasattr(m, 'weight')]
        with torch.no_grad():
            for ours_m, ref_m in zip(convs, [m for m in net if hasattr(m, 'weight')]):
                ref_m.weight.copy_(torch.from_numpy(ours_m.weight.numpy()))
                ref_m.bias.copy_(torch.from_numpy(ours_m.bias.numpy()))
        net = net.to(device)
        xt = torch.from_numpy(x.numpy()).to(device)
        with torch.no_grad(), no_grad():
            a, b = features(x).numpy(), net(xt).cpu().numpy()
        err = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
        if err > 1e-3:
            raise RuntimeError(f'VGG16 trunk disagrees with PyTorch: relative error {err:.2e}')

        def ref():
            net.zero_grad()
            net(xt).sum().backward()
            if device == 'cuda':
                torch.cuda.synchronize()
        t_ref = timeit(ref, 'cpu', repeats)
    return [(f'VGG16 trunk fwd+bwd 1x3x{H}x{W} ({device})', t_ours, t_ref)]


def _torchvision(device):
    torch = _torch(device)
    if torch is None:
        return None, None
    try:
        import torchvision.ops
        return torch, torchvision
    except Exception:
        return torch, None


def bench_roi_pool_reference(device='cpu', shape=(2, 512, 38, 63), counts=(128, 2000), repeats=5):
    """RoI pooling forward + backward next to torchvision.ops.roi_pool (values checked equal)."""
    torch, torchvision = _torchvision(device)
    N, C, H, W = shape
    x_np = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    rows = []
    for R in counts:
        rois_np = random_rois(R, N, H * 16, W * 16, seed=R)
        x = Tensor(backend.to_device(x_np, device), requires_grad=True)
        rois = backend.to_device(rois_np, device)
        gy = backend.to_device(np.ones((R, C, 7, 7), np.float32), device)

        def ours():
            x.grad = None
            roi_pool(x, rois, (7, 7), 1 / 16).backward(gy)
        t_ours, t_ref = timeit(ours, device, repeats), None
        if torchvision is not None:
            xt = torch.from_numpy(x_np).to(device).requires_grad_()
            rt = torch.from_numpy(rois_np).to(device)
            gt = torch.ones((R, C, 7, 7), device=device)
            y_ref = torchvision.ops.roi_pool(xt, rt, (7, 7), 1 / 16)
            y_ours = roi_pool(Tensor(backend.to_device(x_np, device)), rois, (7, 7), 1 / 16)
            if not np.array_equal(y_ours.numpy(), y_ref.detach().cpu().numpy()):
                raise RuntimeError(f'roi_pool differs from torchvision for {R} RoIs')

            def ref():
                xt.grad = None
                torchvision.ops.roi_pool(xt, rt, (7, 7), 1 / 16).backward(gt)
                if device == 'cuda':
                    torch.cuda.synchronize()
            t_ref = timeit(ref, 'cpu', repeats)
        rows.append((f'roi_pool fwd+bwd {R} RoIs on {shape} ({device})', t_ours, t_ref))
    return rows


def bench_nms_reference(device='cpu', sizes=(2000, 12000), iou_threshold=0.7, repeats=5):
    """NMS next to torchvision.ops.nms; kept indices checked equal first. torchvision measures
    widths as x2 - x1, tinyrcnn (like the original code) as x2 - x1 + 1, so torchvision gets the
    boxes with x2 + 1, y2 + 1: the same IoU."""
    torch, torchvision = _torchvision(device)
    rows = []
    for n in sizes:
        b_np, s_np = random_clustered_boxes(n)
        b, s = backend.to_device(b_np, device), backend.to_device(s_np, device)
        t_ours, t_ref = timeit(lambda: nms(b, s, iou_threshold), device, repeats), None
        if torchvision is not None:
            bt = torch.from_numpy(b_np + np.array([0, 0, 1, 1], np.float32)).to(device)
            st = torch.from_numpy(s_np).to(device)
            keep_ref = torchvision.ops.nms(bt, st, iou_threshold).cpu().numpy()
            keep = backend.to_device(nms(b, s, iou_threshold), 'cpu')
            if not np.array_equal(np.sort(keep), np.sort(keep_ref)):
                raise RuntimeError(f'nms keeps different boxes from torchvision for {n} boxes')
            t_ref = timeit(lambda: torchvision.ops.nms(bt, st, iou_threshold), device, repeats)
        rows.append((f'nms {n} boxes @ {iou_threshold} ({device})', t_ours, t_ref))
    return rows


def bench_svd_head(device='cpu', rois=256, fc6_rank=1024, fc7_rank=256, repeats=3):
    """Fast R-CNN's VGG16 head (fc6, fc7, cls_score, bbox_pred) on `rois` pooled RoIs, before and
    after truncated SVD (Sec. 3.1), with parameter counts and the change in class scores."""
    manual_seed(0)
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
    x = Tensor(rng.standard_normal((rois, 25088)).astype(np.float32)).to(device)

    def run_head():
        with no_grad():
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


def bench_roi_pool(device='cpu', repeats=3, roi_counts=(128, 2000), shape=(2, 512, 38, 50)):
    """Time RoI pooling forward and forward + backward (7x7, scale 1/16) on a VGG16-sized map,
    as it runs now (with or without `tinyrcnn.speed`); on the CPU with the speed paths on, the
    reference forward (`ops/roi_pool.py`'s loop over bins) too, for the price of reading.

    Returns rows (name, seconds), the median of `repeats` runs after one warm-up."""
    backend.check_device(device)
    xp = backend.get_array_module(backend.to_device(np.zeros(1), device))
    N, C, H, W = shape
    x_np = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    x = Tensor(backend.to_device(x_np, device), requires_grad=True)
    rows = []
    for R in roi_counts:
        rois = backend.to_device(random_rois(R, N, H * 16, W * 16, seed=R), device)
        gy = xp.ones((R, C, 7, 7), dtype=np.float32)

        def forward():
            return roi_pool(x, rois)

        def forward_backward():
            x.grad = None
            roi_pool(x, rois).backward(gy)

        for name, fn in ((f'roi_pool forward, {R} RoIs', forward),
                         (f'roi_pool forward+backward, {R} RoIs', forward_backward)):
            rows.append((f'{name} ({device})', timeit(fn, device, repeats)))
        if device == 'cpu' and speed.is_enabled():
            with speed.enabled(False):
                rows.append((f'roi_pool forward, {R} RoIs, reference loop (cpu)',
                             timeit(forward, device, 1)))
    return rows


def bench_selective_search(mode='fast', repeats=3):
    """Seconds per image of selective_search on skimage's coffee photograph resized to 500x375."""
    from skimage import data
    from skimage.transform import resize
    image = (resize(data.coffee(), (375, 500), anti_aliasing=True) * 255).round().astype(np.uint8)
    selective_search(image, mode)                             # warm-up (imports, caches)
    start = time.perf_counter()
    for _ in range(repeats):
        selective_search(image, mode)
    return (time.perf_counter() - start) / repeats


def run(device='cpu', only=None, repeats=3, out=print):
    """Run the benchmarks and print one row each; returns the rows."""
    suites = {
        'vgg': lambda: bench_vgg16_trunk(device, (224, 224) if device == 'cpu' else (600, 1000),
                                         repeats=repeats),
        'roi_pool': lambda: ([(n, t, None) for n, t in bench_roi_pool(device, repeats=repeats)]
                             + (bench_roi_pool_reference(device, repeats=repeats)
                                if _torchvision(device)[1] is not None else [])),
        'nms': lambda: bench_nms_reference(device, repeats=repeats),
        'svd': lambda: bench_svd_head(device, repeats=repeats),
    }
    if device == 'cpu':
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
    n = os.cpu_count()
    return f'{n} cores' + (f', torch uses {torch.get_num_threads()}' if torch is not None else '')
