"""`python -m tinyrcnn bench`: time tinyrcnn's hot paths, next to a reference where it is installed.

Each row prints tinyrcnn's median time, the reference's (PyTorch, torchvision, OpenCV, or the
slower exact method) and the ratio tinyrcnn / reference, measured on the same machine, and
checks that both sides agree before it times them. Speed targets live here, not in timed tests.

    layers.py           the VGG16 trunk, RoI pooling, NMS               --only vgg,roi_pool,nms
    svd.py              truncated SVD: computing it, and the RoI head    --only svd
    train.py            one Fast R-CNN training step, with peak memory   --only train
    detect.py           detection per image, both detectors              --only detect
    proposals.py        selective search next to OpenCV's, with recall  --only selective_search
"""
from .common import cpu_text, threads_text, timeit, torch_or_none, torchvision_or_none
from .detect import bench_detect
from .layers import bench_nms_reference, bench_roi_pool, bench_roi_pool_reference, bench_vgg16_trunk
from .proposals import bench_selective_search
from .svd import bench_svd_head, bench_truncated_svd
from .train import bench_train

__all__ = ['run', 'timeit', 'bench_vgg16_trunk', 'bench_roi_pool', 'bench_roi_pool_reference',
           'bench_nms_reference', 'bench_svd_head', 'bench_truncated_svd', 'bench_train',
           'bench_selective_search', 'bench_detect']


def run(device='cpu', only=None, repeats=3, out=print, quick=False):
    """Run the benchmarks and print one row each; returns the rows. quick=True shrinks the
    slow rows to see that they run: the VGG16 trunk on 64x64, 128 RoIs on 64 channels, NMS of
    2000 boxes, training steps at a quarter of the pixels and one repeat (a toy size on the
    GPU), detection with vgg-tiny on 96x128, the SVD of fc7's size rather than fc6's without
    the full SVD nor the RoI head."""
    pool = dict(roi_counts=(128,), shape=(2, 64, 38, 50)) if quick else {}
    pool_ref = dict(counts=(128,), shape=(2, 64, 38, 63)) if quick else {}
    nms_sizes = dict(sizes=(2000,)) if quick else {}
    suites = {
        'vgg': lambda: bench_vgg16_trunk(device, (64, 64) if quick else (224, 224) if device == 'cpu'
                                         else (600, 1000), repeats=repeats),
        'roi_pool': lambda: ([(n, t, None) for n, t in bench_roi_pool(device, repeats=repeats, **pool)]
                             + (bench_roi_pool_reference(device, repeats=repeats, **pool_ref)
                                if torchvision_or_none(device)[1] is not None else [])),
        'nms': lambda: bench_nms_reference(device, repeats=repeats, **nms_sizes),
        'svd': lambda: (bench_truncated_svd((1024, 4096), 256, full=False) if quick
                        else bench_truncated_svd() + bench_svd_head(device, repeats=repeats)),
    }
    def train():
        if quick and device == 'cuda':        # toy size: on the CuPy stand-in, kernels run on one thread
            return bench_train('demo', 1, (48, 64), rois=16, device=device)
        rows = []
        for name, (H, W) in (('demo', (288, 384)), ('paper', (600, 800))):
            size = (H // 2, W // 2) if quick else (H, W)
            slow = quick or (name == 'paper' and device == 'cpu')
            rows += bench_train(name, 1 if slow else repeats, size, device=device)
        return rows
    suites['train'] = train
    suites['detect'] = lambda: (bench_detect(device, 'vgg-tiny', (96, 128), 96, repeats=1) if quick
                                else bench_detect(device, repeats=repeats))
    if device == 'cpu':
        suites['selective_search'] = lambda: bench_selective_search(repeats=1 if quick else repeats)
    names = list(suites) if not only else only
    unknown = [n for n in names if n not in suites]
    if unknown:
        raise ValueError(f'unknown benchmark(s) {unknown}; choose from {sorted(suites)}')
    torch = torch_or_none(device)
    ref_name = f'torch {torch.__version__}' if torch is not None else 'no PyTorch'
    out(f'tinyrcnn bench on {device} ({cpu_text()}); reference: {ref_name}; '
        f'threads: {threads_text(torch)}')
    out(f"{'benchmark':<58} {'tinyrcnn':>10} {'reference':>10} {'ratio':>7}")
    rows = []
    for name in names:
        for label, ours, ref in suites[name]():
            ratio = f'{ours / ref:7.2f}' if ref else '      -'
            ref_text = f'{ref * 1e3:8.1f}ms' if ref else '         -'
            out(f'{label:<58} {ours * 1e3:8.1f}ms {ref_text} {ratio}')
            rows.append((label, ours, ref))
    return rows
