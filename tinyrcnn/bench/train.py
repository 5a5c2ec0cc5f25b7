"""Row for one Fast R-CNN training iteration (Sec. 2.3): forward, backward and an SGD step on
N = 2 images and R = 128 RoIs, tinyrcnn next to the same network built from PyTorch layers.

Both sides get the same weights, images, RoIs and targets, and one step on each is checked to
give the same scores, losses, gradients and updated weights before anything is timed. The check
runs in float64, where the two agree to rounding (about 1e-15) on every CPU; in float32 they
differ by summation order, up to a few 1e-3 of a deep layer's gradient, and by how much depends
on the CPU and the thread count, so no float32 margin would be both honest and sharp. The
timed steps are float32. Each
side is then timed in a child process of its own (`common.in_child`), which also gives its peak
resident memory: weights, activations, the library itself. tinyrcnn computes the step as the
trainer does (`train.parts`: one part per image, on two threads with the CPU speed paths);
PyTorch as one batch on its own threads. Dropout is off on both sides (its masks cannot be
matched across the two, and it costs little); the demo trains without it anyway.
"""
import os
import tempfile

import numpy as np

from .. import backend, nn, speed
from ..boxes import random_rois
from ..fast_rcnn.loss import multitask_loss
from ..fast_rcnn.network import FastRCNN
from ..optim import SGD
from ..seed import manual_seed
from ..tensor import Tensor, no_grad
from ..train.parts import backward_parts
from . import torch_fast_rcnn
from .common import in_child, timeit, torch_or_none

SETTINGS = {
    # the CPU demo's Fast R-CNN (demo.CPU_DEMO): vgg-tiny, 6 shape classes, shorter side 288
    # (its images are 160-256 px a side; 4:3 here)
    'demo': dict(trunk='vgg-tiny', num_classes=6, freeze_stages=0, size=(288, 384)),
    # the paper's: VGG16, the 20 VOC classes, conv1 and conv2 frozen (Sec. 4.5), a 500x375
    # VOC image scaled to a shorter side of 600
    'paper': dict(trunk='vgg16', num_classes=20, freeze_stages=2, size=(600, 800)),
}
IMAGES, ROIS, LR = 2, 128, 0.001
TOLERANCE = 1e-9      # largest |tinyrcnn - torch| / max |torch| of any checked array (float64)


def make_model(trunk, num_classes, freeze_stages, seed=0):
    """The tinyrcnn FastRCNN of a setting, with its weights drawn from `seed`, dropout off."""
    manual_seed(seed)
    model = FastRCNN(trunk, num_classes, freeze_stages)
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model.train()


def make_batch(size, num_classes, N=IMAGES, R=ROIS, seed=0):
    """Random images (N, 3, H, W) and R RoIs over them (sorted by image), with a quarter
    foreground (Sec. 2.3) of random classes and regression targets on the true class's columns.
    Returns images, rois (R, 5), labels (R,), bbox_targets and bbox_weights (R, 4(K+1))."""
    rng = np.random.default_rng(seed)
    H, W = size
    images = rng.standard_normal((N, 3, H, W)).astype(np.float32)
    rois = random_rois(R, N, H, W, seed=seed)
    rois = rois[np.argsort(rois[:, 0], kind='stable')]
    labels = np.where(rng.random(R) < 0.25, rng.integers(1, num_classes + 1, R), 0)
    targets = np.zeros((R, 4 * (num_classes + 1)), np.float32)
    weights = np.zeros_like(targets)
    for i in np.flatnonzero(labels):
        cols = slice(4 * labels[i], 4 * labels[i] + 4)
        targets[i, cols] = rng.standard_normal(4)
        weights[i, cols] = 1
    return images, rois, labels.astype(np.int64), targets, weights


def _parts(batch, device='cpu'):
    """One part per image, weighted by its share of the RoIs (as `train.fast_rcnn` cuts a
    mini-batch for its threads). Images and targets on `device`; RoIs and labels stay on the
    host, as the trainer passes them (they are checked there, then uploaded)."""
    images, rois, labels, targets, weights = batch
    up = lambda a: backend.to_device(np.ascontiguousarray(a), device)   # noqa: E731
    parts = []
    for n in range(len(images)):
        mine = rois[:, 0] == n
        one = rois[mine].copy()
        one[:, 0] = 0
        parts.append(((up(images[n:n + 1]), one, labels[mine], up(targets[mine]),
                       up(weights[mine])), mine.sum() / len(rois)))
    return parts


def _part_loss(model, part):
    (images, rois, labels, targets, weights), share = part
    cls_score, bbox_pred = model(Tensor(images), rois)
    return list(multitask_loss(cls_score, bbox_pred, labels, targets, weights)), share


def tinyrcnn_optimizer(model):
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return SGD([{'params': [p for n, p in trainable if not n.endswith('bias')]},
                {'params': [p for n, p in trainable if n.endswith('bias')], 'lr_mult': 2.0,
                 'weight_decay': 0.0}], lr=LR, momentum=0.9, weight_decay=5e-4)


def tinyrcnn_step(model, optimizer, parts, threads=2):
    """Forward, backward (gradients left in .grad), SGD step; returns the losses."""
    losses = backward_parts(_part_loss, parts, model, threads)
    optimizer.step()
    return losses


def torch_batch(torch, batch, device='cpu'):
    """The batch as PyTorch takes it: tensors on `device`, the RoIs a NumPy array."""
    images, rois, labels, targets, weights = batch
    return (torch.from_numpy(images).to(device), rois,
            *(torch.from_numpy(a).to(device) for a in (labels, targets, weights)))


def torch_step(torch, net, optimizer, batch):
    """One step on a `torch_batch`; returns the loss tensors."""
    images, rois, labels, targets, weights = batch
    optimizer.zero_grad(set_to_none=True)
    cls_score, bbox_pred = net(images, rois)
    losses = torch_fast_rcnn.multitask_loss(torch, cls_score, bbox_pred, labels, targets, weights)
    losses[0].backward()
    optimizer.step()
    return losses


def check_same_step(torch, model, net, batch, device='cpu'):
    """One step of tinyrcnn's `model` (on `device`) and PyTorch's `net` (same weights, on its own
    device) on `batch`: the scores, losses, gradients and updated weights must agree. Returns
    the worst relative difference; raises RuntimeError naming the array where it exceeds
    TOLERANCE."""
    def rel(a, b):
        a = backend.to_device(a, 'cpu').astype(np.float64)
        b = (b.detach().cpu().numpy() if hasattr(b, 'detach') else np.asarray(b)).astype(np.float64)
        return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))

    images, rois = batch[:2]
    ref_batch = torch_batch(torch, batch, next(net.parameters()).device)
    with no_grad(), torch.no_grad():
        ours = [t.data for t in model(Tensor(backend.to_device(images, device)), rois)]
        ref = net(ref_batch[0], rois)
    errors = {'cls_score': rel(ours[0], ref[0]), 'bbox_pred': rel(ours[1], ref[1])}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    ours_opt, ref_opt = tinyrcnn_optimizer(model), torch_fast_rcnn.sgd(torch, net, trainable, LR)
    losses = backward_parts(_part_loss, _parts(batch, device), model, threads=1)
    ref_losses = [v.item() for v in torch_step(torch, net, ref_opt, ref_batch)]   # steps too
    errors['losses'] = rel(np.array(losses), ref_losses)
    params, ref_params = dict(model.named_parameters()), dict(net.named_parameters())
    for n in trainable:
        errors[n + ' gradient'] = rel(params[n].grad, ref_params[n].grad)
    ours_opt.step()
    for n in trainable:
        errors[n + ' after the step'] = rel(params[n].data, ref_params[n])
    worst = max(errors, key=errors.get)
    if errors[worst] > TOLERANCE:
        raise RuntimeError(f'tinyrcnn and PyTorch differ in {worst}: relative error '
                           f'{errors[worst]:.2e} > {TOLERANCE}')
    return errors[worst]


def float64_pair(torch, model, torch_device='cpu'):
    """Casts tinyrcnn's `model` to float64 in place and builds PyTorch's copy of it, in float64
    on `torch_device`, with the same parameters trainable. Returns (net, the torch RoI pool's
    name); `model` stays on its device."""
    model.to(dtype=np.float64)
    net, pool_name = torch_fast_rcnn.build(torch, torch_fast_rcnn.layout(model), model.state_dict())
    net = net.double().to(torch_device)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for n, p in net.named_parameters():
        p.requires_grad_(n in trainable)
    return net, pool_name


def float64_batch(size, num_classes, rois):
    """`make_batch` with its float arrays in float64."""
    return [a.astype(np.float64) if a.dtype == np.float32 else a
            for a in make_batch(size, num_classes, R=rois)]


def check_in_float64(torch, model, size, rois, device='cpu', torch_device=None):
    """`check_same_step` on `model` cast to float64 (in place, and stepped: pass one that is not
    needed afterwards) and its PyTorch copy, on a float64 batch; tinyrcnn's side on `device`,
    PyTorch's on `torch_device` (default the same). Returns the worst relative difference and
    the torch RoI pool's name."""
    net, pool_name = float64_pair(torch, model, torch_device or device)
    model.to(device)
    num_classes = model.cls_score.weight.shape[0] - 1
    batch = float64_batch(size, num_classes, rois)
    return check_same_step(torch, model, net, batch, device), pool_name


def _time_tinyrcnn(setting, state_path, size, rois, repeats, fast):
    """In a child: tinyrcnn's median step time for `setting` with the weights at state_path."""
    if fast:
        speed.enable()
    model = make_model(setting['trunk'], setting['num_classes'], setting['freeze_stages'])
    with np.load(state_path) as state:            # one array at a time, into the parameters
        for n, p in model.named_parameters():
            p.data[...] = state[n]
    parts = _parts(make_batch(size, setting['num_classes'], R=rois))
    optimizer = tinyrcnn_optimizer(model)
    return timeit(lambda: tinyrcnn_step(model, optimizer, parts), repeats=repeats)


def _time_torch(trunk, state_path, trainable, num_classes, size, rois, repeats):
    """In a child: PyTorch's median step time, the same network and weights."""
    import torch
    with np.load(state_path) as state:
        net, _ = torch_fast_rcnn.build(torch, trunk, state)
    for n, p in net.named_parameters():
        p.requires_grad_(n in trainable)
    batch = torch_batch(torch, make_batch(size, num_classes, R=rois))
    optimizer = torch_fast_rcnn.sgd(torch, net, trainable, LR)
    return timeit(lambda: torch_step(torch, net, optimizer, batch), repeats=repeats)


def _bench_train_cuda(setting, label, size, rois, repeats):
    """The GPU row, in this process: each side's step time and the most device memory its pool
    held (CuPy's pool emptied first, then its total after the steps; PyTorch's peak reserved),
    weights and optimiser state included."""
    cp = backend._cupy()
    pool = cp.get_default_memory_pool()
    model = make_model(setting['trunk'], setting['num_classes'], setting['freeze_stages'])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    state = {n: v.copy() for n, v in model.state_dict().items()}
    trunk = torch_fast_rcnn.layout(model)
    batch = make_batch(size, setting['num_classes'], R=rois)
    torch = torch_or_none('cuda')
    if torch is not None:           # on a model of its own: the check casts and steps it
        fresh = make_model(setting['trunk'], setting['num_classes'], setting['freeze_stages'])
        worst, pool_name = check_in_float64(torch, fresh, size, rois, 'cuda')
        fresh = None
    pool.free_all_blocks()
    model.to('cuda')
    parts, optimizer = _parts(batch, 'cuda'), tinyrcnn_optimizer(model)
    t_ours = timeit(lambda: tinyrcnn_step(model, optimizer, parts, threads=1), 'cuda', repeats)
    mem_ours = pool.total_bytes()
    model = parts = optimizer = None                # freed before the other side runs
    pool.free_all_blocks()
    if torch is None:
        return [(f'{label}; GPU pool {mem_ours / 2**20:.0f} MB; no PyTorch with CUDA: '
                 'tinyrcnn alone', t_ours, None)]
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    net, _ = torch_fast_rcnn.build(torch, trunk, state)
    net = net.cuda()
    for n, p in net.named_parameters():
        p.requires_grad_(n in trainable)
    optimizer = torch_fast_rcnn.sgd(torch, net, trainable, LR)
    tb = torch_batch(torch, batch, 'cuda')
    t_ref = timeit(lambda: torch_step(torch, net, optimizer, tb), 'cuda', repeats)
    mem_ref = torch.cuda.max_memory_reserved()
    return [(f'{label}; GPU memory {mem_ours / 2**20:.0f} MB vs PyTorch {mem_ref / 2**20:.0f} MB; '
             f'same step to {worst:.0e} in float64; torch RoI pool: {pool_name}', t_ours, t_ref)]


def bench_train(name='demo', repeats=2, size=None, rois=ROIS, device='cpu'):
    """The training-step row of SETTINGS[name] on `device` (`size` and `rois` shrink it for
    tests). Returns [(label, tinyrcnn seconds, PyTorch seconds or None)]."""
    setting = SETTINGS[name]
    size = size or setting['size']
    if device == 'cuda':
        label = (f"Fast R-CNN train step, {name}: {setting['trunk']}, N={IMAGES}, R={rois}, "
                 f'{size[0]}x{size[1]} (cuda)')
        return _bench_train_cuda(setting, label, size, rois, repeats)
    model = make_model(setting['trunk'], setting['num_classes'], setting['freeze_stages'])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    torch = torch_or_none()
    label = (f"Fast R-CNN train step, {name}: {setting['trunk']}, N={IMAGES}, R={rois}, "
             f'{size[0]}x{size[1]}')
    with tempfile.TemporaryDirectory() as tmp:
        state_path = os.path.join(tmp, 'state.npz')
        np.savez(state_path, **model.state_dict())
        if torch is not None:
            trunk = torch_fast_rcnn.layout(model)
            worst, pool_name = check_in_float64(torch, model, size, rois)   # casts and steps it
        model = None                                # the children build their own
        t_ours, mem_ours = in_child(_time_tinyrcnn, setting, state_path, size, rois, repeats,
                                    speed.is_enabled())
        if torch is None:
            return [(f'{label}; peak memory {mem_ours / 2**20:.0f} MB; no PyTorch installed: '
                     'tinyrcnn alone', t_ours, None)]
        t_ref, mem_ref = in_child(_time_torch, trunk, state_path, trainable,
                                  setting['num_classes'], size, rois, repeats)
    return [(f'{label}; peak memory {mem_ours / 2**20:.0f} MB vs PyTorch {mem_ref / 2**20:.0f} MB; '
             f'same step to {worst:.0e} in float64; torch RoI pool: {pool_name}', t_ours, t_ref)]
