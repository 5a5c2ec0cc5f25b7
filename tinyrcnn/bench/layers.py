"""Rows for the engine's hot ops: the VGG16 trunk, RoI pooling, NMS, each next to PyTorch
(torchvision for RoI pooling and NMS) where it is installed, values checked equal first."""
import numpy as np

from .. import backend, speed
from ..boxes import nms, random_clustered_boxes, random_rois
from ..ops.roi_pool import roi_pool
from ..seed import manual_seed
from ..tensor import Tensor, no_grad
from ..vgg import VGG16_CFG, make_features
from .common import timeit, timeit_pair, torch_or_none, torchvision_or_none


def bench_vgg16_trunk(device='cpu', size=(224, 224), repeats=3):
    """The 13 conv layers of VGG16 with their pools, forward + backward on one image; the
    reference gets the same weights and input, its output is checked before timing, and the
    two are timed in turns (`timeit_pair`)."""
    manual_seed(0)
    features = make_features(VGG16_CFG).to(device)
    H, W = size
    x = Tensor(np.random.default_rng(0).standard_normal((1, 3, H, W)).astype(np.float32))
    x = x.to(device)

    def ours():
        features.zero_grad()
        features(x).sum().backward()

    torch = torch_or_none(device)
    if torch is None:
        return [(f'VGG16 trunk fwd+bwd 1x3x{H}x{W} ({device})', timeit(ours, device, repeats), None)]
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
    t_ours, t_ref = timeit_pair(ours, ref, device, repeats)   # in turns: drift hits both
    return [(f'VGG16 trunk fwd+bwd 1x3x{H}x{W} ({device})', t_ours, t_ref)]


def bench_roi_pool_reference(device='cpu', shape=(2, 512, 38, 63), counts=(128, 2000), repeats=5):
    """RoI pooling forward + backward next to torchvision.ops.roi_pool (values checked equal)."""
    torch, torchvision = torchvision_or_none(device)
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
    torch, torchvision = torchvision_or_none(device)
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
