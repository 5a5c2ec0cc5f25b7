"""Training Fast R-CNN (Girshick, 2015, Sec. 2.3): single-stage, multi-task, hierarchical batches.

    cfg = TrainConfig(trunk='vgg-tiny', iterations=2000)
    trainer = Trainer(cfg, dataset, proposals, out_dir='runs/x')
    trainer.run()                     # progress bar, checkpoints, loss curve
    trainer.export('runs/x/model')    # model.npz + model.json, predicting raw box offsets

Every setting lives in `TrainConfig`, with the paper's values as defaults. A run is a pure
function of (config, data, iteration): the images of iteration i, the RoIs sampled from them,
the flips and the dropout masks all come from generators seeded by (seed, i), so a run resumed
from a checkpoint continues exactly as an uninterrupted one.
"""
import dataclasses
import json
import os
import time

import numpy as np

from . import backend, boxes as bx
from . import functional as F
from .data.transforms import hflip, preprocess, rescale, im_list_to_blob
from .models.fast_rcnn import FastRCNN
from .optim import SGD, Adam, StepLR
from .parallel import backward_parts, usable_threads
from .tensor import Tensor
from .utils import atomic_write, manual_seed, progress


@dataclasses.dataclass
class TrainConfig:
    """Fast R-CNN training settings; defaults are the paper's (Sec. 2.3, 3, 4)."""
    trunk: str = 'vgg16'                 # 'vgg16' or 'vgg-tiny'
    weights: str = None                  # pretrained trunk (torchvision .pth or tinyrcnn .npz)
    source: str = 'torchvision'          # preprocessing of the weights' origin (data.transforms)
    freeze_stages: int = 2               # conv1 and conv2 stay fixed (Sec. 4.5)
    dropout: float = None                # fc6/fc7 dropout; None keeps the trunk's (0.5)
    ims_per_batch: int = 2               # N images per mini-batch ...
    rois_per_batch: int = 128            # ... and R RoIs in all, R/N from each image
    fg_fraction: float = 0.25            # 25% foreground RoIs ...
    fg_thresh: float = 0.5               # ... with IoU >= 0.5 with a ground-truth box
    bg_thresh_lo: float = 0.1            # background: max IoU in [0.1, 0.5)
    bg_thresh_hi: float = 0.5
    use_gt_as_rois: bool = True          # ground-truth boxes join the proposals
    flip: bool = True                    # horizontal flip with probability 0.5
    scales: tuple = (600,)               # shorter side; several = multi-scale training (Sec. 2.4)
    max_size: int = 1000                 # longer side at most
    optimizer: str = 'sgd'               # 'sgd' (the paper's) or 'adam' (from-scratch demo)
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0005
    bias_lr_mult: float = 2.0            # biases learn at twice the rate, without decay
    step_size: int = 30000               # lr x gamma every step_size iterations
    gamma: float = 0.1
    iterations: int = 40000
    loss_lambda: float = 1.0             # L = L_cls + lambda [u >= 1] L_loc
    smooth_l1_sigma: float = 1.0
    normalize_targets: bool = True       # regression targets to zero mean, unit variance
    pretrain_iterations: int = 0         # > 0: first classify object crops (no-ImageNet demo)
    pretrain_batch: int = 64
    pretrain_crop: int = 64
    pretrain_lr: float = 0.001
    seed: int = 0
    checkpoint_every: int = 1000
    device: str = 'cpu'
    threads: int = 1                     # CPU: the N images of a mini-batch on this many threads

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f'unknown training settings {sorted(unknown)}')
        d = dict(d)
        if 'scales' in d:
            d['scales'] = tuple(d['scales'])
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# Regions of interest for each training image
# ---------------------------------------------------------------------------------------------
def prepare_roidb(dataset, proposals, cfg):
    """For each image: candidate RoIs (ground truth + proposals), each with its best-matching
    ground-truth box, that IoU, and the label. Difficult objects are left out, as in the
    original code, and so are images with no RoI to sample. Returns a list of dicts."""
    roidb = []
    for i in range(len(dataset)):
        gt = dataset.annotation(i)
        keep = ~np.asarray(gt['difficult'], bool)
        gt_boxes = np.asarray(gt['boxes'], np.float32)[keep]             # (G, 4)
        gt_labels = np.asarray(gt['labels'], np.int64)[keep]             # (G,)
        props = proposals[gt['id']] if isinstance(proposals, dict) else proposals(i)
        props = np.asarray(props, np.float32).reshape(-1, 4)
        rois = np.concatenate([gt_boxes, props]) if cfg.use_gt_as_rois else props
        if len(gt_boxes) and len(rois):
            iou = bx.box_iou(rois, gt_boxes)                             # (P, G)
            assignment, max_iou = iou.argmax(axis=1), iou.max(axis=1)
        else:
            assignment = np.zeros(len(rois), np.int64)
            max_iou = np.zeros(len(rois), np.float32)
        usable = (max_iou >= cfg.fg_thresh).any() or (
            (max_iou < cfg.bg_thresh_hi) & (max_iou >= cfg.bg_thresh_lo)).any()
        if not usable:    # nothing to sample (e.g. only difficult objects): skip, as the original
            continue      # code's filter_roidb does
        roidb.append({'index': i, 'id': gt['id'], 'rois': rois, 'gt_boxes': gt_boxes,
                      'gt_labels': gt_labels, 'assignment': assignment, 'max_iou': max_iou})
    if not roidb:
        raise ValueError('no training image has a usable RoI (foreground IoU >= '
                         f'{cfg.fg_thresh} or background IoU in [{cfg.bg_thresh_lo}, {cfg.bg_thresh_hi}))')
    return roidb


def target_stats(roidb, cfg):
    """Mean and std of the regression targets of all foreground RoIs (Sec. 2.3: normalised to
    zero mean and unit variance)."""
    targets = [bx.encode(e['rois'][m], e['gt_boxes'][e['assignment'][m]])
               for e in roidb for m in [e['max_iou'] >= cfg.fg_thresh] if m.any()]
    if not targets or not cfg.normalize_targets:
        return np.zeros(4, np.float32), np.ones(4, np.float32)
    means, stds = bx.compute_target_stats(np.concatenate(targets))
    return np.asarray(means, np.float32), np.asarray(stds, np.float32)


def sample_rois(entry, rois_per_image, cfg, rng):
    """Sec. 2.3, "Mini-batch sampling": up to fg_fraction of the RoIs from IoU >= fg_thresh,
    the rest from IoU in [bg_thresh_lo, bg_thresh_hi), all without replacement. Returns the
    indices into entry['rois'] (foreground first) and the labels (0 for background)."""
    max_iou = entry['max_iou']
    fg = np.flatnonzero(max_iou >= cfg.fg_thresh)
    bg = np.flatnonzero((max_iou < cfg.bg_thresh_hi) & (max_iou >= cfg.bg_thresh_lo))
    n_fg = min(int(round(cfg.fg_fraction * rois_per_image)), len(fg))
    fg = rng.choice(fg, n_fg, replace=False) if n_fg < len(fg) else fg
    n_bg = min(rois_per_image - n_fg, len(bg))
    bg = rng.choice(bg, n_bg, replace=False) if n_bg < len(bg) else bg
    keep = np.concatenate([fg, bg]).astype(np.int64)
    labels = np.zeros(len(keep), np.int64)
    labels[:n_fg] = entry['gt_labels'][entry['assignment'][fg]]
    return keep, labels


def expand_targets(targets, labels, num_classes):
    """(R, 4) targets -> (R, 4(K+1)) with the four numbers in the columns of each RoI's class,
    and weights that are 1 there for foreground RoIs ([u >= 1] in the loss), 0 elsewhere."""
    R = len(labels)
    full = np.zeros((R, 4 * (num_classes + 1)), np.float32)
    weights = np.zeros_like(full)
    for r in np.flatnonzero(labels > 0):
        c = 4 * labels[r]
        full[r, c:c + 4] = targets[r]
        weights[r, c:c + 4] = 1.0
    return full, weights


def make_minibatch(dataset, roidb, indices, cfg, num_classes, means, stds, rng,
                   rois_per_image=None):
    """The hierarchical mini-batch (Sec. 2.3): N images, R/N RoIs from each.

    Returns images (N, 3, H, W) float32, rois (R, 5) in the rescaled images' pixels, labels
    (R,), bbox_targets and bbox_weights (R, 4(K+1))."""
    if rois_per_image is None:
        rois_per_image = cfg.rois_per_batch // len(indices)
    ims, all_rois, all_labels, all_targets = [], [], [], []
    for n, idx in enumerate(indices):
        entry = roidb[idx]
        keep, labels = sample_rois(entry, rois_per_image, cfg, rng)
        rois = entry['rois'][keep]
        gt = entry['gt_boxes'][entry['assignment'][keep]] if len(entry['gt_boxes']) else rois
        image = dataset[entry['index']]['image']
        if cfg.flip and rng.random() < 0.5:                          # flip RoIs and their gt together
            image, both = hflip(image, np.concatenate([rois, gt]))
            rois, gt = both[:len(rois)], both[len(rois):]
        targets = (bx.encode(rois, gt) - means) / stds if len(rois) else np.zeros((0, 4))
        scale = cfg.scales[rng.integers(len(cfg.scales))]
        image, rois, factor = rescale(image, rois, scale, cfg.max_size)
        ims.append(preprocess(image, cfg.source))
        all_rois.append(np.hstack([np.full((len(rois), 1), n, np.float32), rois]))
        all_labels.append(labels)
        all_targets.append(targets.astype(np.float32))
    labels = np.concatenate(all_labels)
    targets, weights = expand_targets(np.concatenate(all_targets), labels, num_classes)
    return (im_list_to_blob(ims), np.concatenate(all_rois).astype(np.float32), labels,
            targets, weights)


def multitask_loss(cls_score, bbox_pred, labels, bbox_targets, bbox_weights, cfg):
    """L = L_cls(p, u) + lambda [u >= 1] L_loc(t^u, v) (Sec. 2.3, eq. 1)."""
    loss_cls = F.cross_entropy(cls_score, labels)
    loss_loc = F.smooth_l1_loss(bbox_pred, bbox_targets, bbox_weights, sigma=cfg.smooth_l1_sigma)
    return loss_cls + loss_loc * cfg.loss_lambda, loss_cls, loss_loc


# ---------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------
class Trainer:
    """Trains a FastRCNN on `dataset` (VOCDetection-like) with `proposals` (dict id -> (P, 4))."""

    def __init__(self, cfg, dataset, proposals, out_dir, model=None):
        self.cfg, self.dataset, self.out_dir = cfg, dataset, out_dir
        self.class_names = list(dataset.class_names)
        self.num_classes = len(self.class_names)
        manual_seed(cfg.seed)
        self.model = model or FastRCNN(cfg.trunk, self.num_classes, cfg.freeze_stages,
                                       weights=cfg.weights)
        if cfg.dropout is not None:
            for m in self.model.classifier:
                if hasattr(m, 'p'):
                    m.p = cfg.dropout
        self.model.to(cfg.device).train()
        self.roidb = prepare_roidb(dataset, proposals, cfg)
        self.means, self.stds = target_stats(self.roidb, cfg)
        params = self.model.trainable_parameters()
        weights = [p for n, p in params if not n.endswith('bias')]
        biases = [p for n, p in params if n.endswith('bias')]
        groups = [{'params': weights},
                  {'params': biases, 'lr_mult': cfg.bias_lr_mult, 'weight_decay': 0.0}]
        if cfg.optimizer == 'sgd':
            self.optimizer = SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        elif cfg.optimizer == 'adam':
            self.optimizer = Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {cfg.optimizer!r}")
        self.schedule = StepLR(self.optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
        self.iteration = 0
        self.history = []                    # (iteration, loss, loss_cls, loss_loc)

    # The image indices of iteration it: epochs are permutations seeded by (seed, epoch).
    def batch_indices(self, it):
        n, N = len(self.roidb), self.cfg.ims_per_batch
        per_epoch = max(1, n // N)
        epoch, k = divmod(it, per_epoch)
        order = np.random.default_rng([self.cfg.seed, 7, epoch]).permutation(n)
        return order[k * N:(k + 1) * N]

    def step(self):
        it, cfg = self.iteration, self.cfg
        rng = np.random.default_rng([cfg.seed, 11, it])
        manual_seed(cfg.seed * 1_000_003 + it)               # dropout masks of this iteration
        indices = self.batch_indices(it)
        if self.parallel_images(len(indices)):
            losses = self.forward_backward_per_image(indices, rng)
        else:
            images, rois, labels, targets, weights = make_minibatch(
                self.dataset, self.roidb, indices, cfg, self.num_classes, self.means, self.stds, rng)
            dev = cfg.device
            cls_score, bbox_pred = self.model(Tensor(backend.to_device(images, dev)),
                                              backend.to_device(rois, dev))
            losses = multitask_loss(
                cls_score, bbox_pred, backend.to_device(labels, dev), backend.to_device(targets, dev),
                backend.to_device(weights, dev), cfg)
            self.optimizer.zero_grad()
            losses[0].backward()
            losses = [v.item() for v in losses]
        return self.finish_step(losses)

    def finish_step(self, losses):
        """Apply the gradients, advance the schedule and record the step's losses (floats);
        returns the new history row."""
        self.optimizer.step()
        self.schedule.step()
        self.iteration += 1
        row = (self.iteration,) + tuple(losses)
        self.history.append(row)
        return row

    # ----- two cores: the images of a mini-batch on parallel threads ---------------------------
    def parallel_images(self, n):
        """Whether this step runs its n images on threads (`parallel.usable_threads`: cfg.threads
        > 1, on the CPU, no active dropout)."""
        return self.image_threads(n) > 1

    def image_threads(self, n):
        return usable_threads(self.model, self.cfg.threads, n, self.cfg.device)

    def forward_backward_per_image(self, indices, rng):
        """The step's loss and gradients with each image in its own graph, on its own thread.

        The same RoIs, flips and scales as the batched step are drawn (in the same order, from
        the same generator); each image's loss is weighted by its share of the RoIs, so the sum
        is the mini-batch's loss (Sec. 2.3; exactly so when the images have one size, else the
        batched blob's zero padding makes a small difference at the borders of the smaller
        image), and the images' gradients are added in image order,
        which makes the result independent of thread timing. NumPy and OpenBLAS release
        Python's lock, so on two cores two images take little longer than one. Returns the
        three losses as floats."""
        cfg = self.cfg
        per_image = cfg.rois_per_batch // len(indices)
        parts = [make_minibatch(self.dataset, self.roidb, [i], cfg, self.num_classes, self.means,
                                self.stds, rng, rois_per_image=per_image) for i in indices]
        total = sum(len(part[2]) for part in parts)

        def run(part):
            images, rois, labels, targets, weights = part
            cls_score, bbox_pred = self.model(Tensor(images), rois)
            losses = multitask_loss(cls_score, bbox_pred, labels, targets, weights, cfg)
            return losses, len(labels) / total

        return self.backward_parts(run, parts)

    def backward_parts(self, run, parts):
        """`parallel.backward_parts` over this model's parameters, on threads where
        `parallel_images` allows."""
        return backward_parts(run, parts, self.model.parameters(), self.image_threads(len(parts)))

    # the columns of history after the iteration, for the progress bar and the loss curve
    loss_names = ('total', 'classification', 'box regression')

    def loss_text(self, m):
        """Progress-bar text for the running means m of the loss columns."""
        return f'loss {m[0]:.3f} (cls {m[1]:.3f}, loc {m[2]:.3f}) lr {self.optimizer.lr:.2g}'

    def plot_title(self):
        return 'Fast R-CNN multi-task loss'

    def run(self, iterations=None, show_progress=True):
        """Train up to `iterations` (default cfg.iterations), checkpointing as it goes."""
        total = self.cfg.iterations if iterations is None else iterations
        if self.iteration == 0 and self.cfg.pretrain_iterations > 0:
            self.pretrain(show_progress)
        return self.train_loop(total, show_progress)

    def train_loop(self, total, show_progress=True):
        """Steps from the current iteration up to `total`, with a progress bar and checkpoints."""
        start = self.iteration

        def postfix():
            recent = [h[1:] for h in self.history[-20:]] or [(0.0,) * len(self.loss_names)]
            return self.loss_text(np.mean(recent, axis=0))

        steps = range(start, total)
        if show_progress:
            steps = progress(steps, total=total - start, desc='train', postfix=postfix)
        for _ in steps:
            self.step()
            if self.out_dir and self.iteration % self.cfg.checkpoint_every == 0:
                self.save_checkpoint()
        if self.out_dir and self.iteration > start:
            self.save_checkpoint()
        return self.history

    def pretrain(self, show_progress=True):
        """Classify crops of the training objects first (`tinyrcnn.pretrain`): the stand-in for
        ImageNet initialisation when the trunk starts from scratch."""
        from .pretrain import object_crops, pretrain_on_crops
        cfg = self.cfg
        crops, labels = object_crops(self.dataset, cfg.pretrain_crop, seed=cfg.seed)
        params = [p for _, p in self.model.trainable_parameters()]
        opt = (Adam(params, lr=cfg.pretrain_lr) if cfg.optimizer == 'adam'
               else SGD(params, lr=cfg.pretrain_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay))
        self.pretrain_history = pretrain_on_crops(
            self.model, crops, labels, opt, cfg.pretrain_iterations, cfg.pretrain_batch, cfg.source,
            cfg.seed, cfg.device, show_progress, threads=cfg.threads)
        return self.pretrain_history

    # ----- checkpoints -------------------------------------------------------------------------
    def checkpoint_path(self):
        return os.path.join(self.out_dir, 'checkpoint.npz')

    def save_checkpoint(self, path=None):
        """Everything needed to continue exactly: parameters, momentum, iteration, history, the
        target statistics and the settings; one atomic file plus a readable settings JSON."""
        path = path or self.checkpoint_path()
        arrays = {f'param/{k}': v for k, v in self.model.state_dict().items()}
        opt, opt_scalars = self.optimizer.state_dict(), {}
        for key, value in opt.items():               # buffers (lists of arrays) and scalars
            if isinstance(value, list):
                opt_scalars[key] = {'buffers': len(value)}
                arrays.update({f'opt/{key}/{i}': v for i, v in enumerate(value) if v is not None})
            else:
                opt_scalars[key] = value
        meta = {'iteration': self.iteration, 'history': self.history, 'optimizer': opt_scalars,
                'schedule': self.schedule.state_dict(), 'config': dataclasses.asdict(self.cfg),
                'class_names': self.class_names}
        arrays['meta'] = np.array(json.dumps(meta))
        arrays['means'], arrays['stds'] = self.means, self.stds
        atomic_write(path, lambda f: np.savez(f, **arrays))
        atomic_write(os.path.join(os.path.dirname(path), 'settings.json'),
                     lambda f: f.write(self.cfg.to_json().encode()))
        self.plot_losses()
        return path

    def load_checkpoint(self, path=None):
        path = path or self.checkpoint_path()
        if not os.path.exists(path):
            raise FileNotFoundError(f'no checkpoint to resume from: {path}')
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z['meta']))
            self.model.load_state_dict({k[6:]: z[k] for k in z.files if k.startswith('param/')})
            opt = {}
            for key, value in meta['optimizer'].items():
                if isinstance(value, dict):
                    names = [f'opt/{key}/{i}' for i in range(value['buffers'])]
                    value = [z[name] if name in z.files else None for name in names]
                opt[key] = value
            self.means, self.stds = z['means'], z['stds']
        self.optimizer.load_state_dict(opt)
        self.schedule.load_state_dict(meta['schedule'])
        self.iteration = meta['iteration']
        self.history = [tuple(h) for h in meta['history']]
        return self

    def plot_losses(self, path=None):
        if not self.history:
            return None
        from matplotlib.figure import Figure
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        h = np.array(self.history)
        fig = Figure(figsize=(6, 3.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        k = max(1, len(h) // 50)                          # running mean over ~2% of the run
        smooth = lambda v: np.convolve(v, np.ones(k) / k, mode='valid')  # noqa: E731
        for col, name in enumerate(self.loss_names, start=1):
            ax.plot(h[k - 1:, 0], smooth(h[:, col]), label=name)
        ax.set_xlabel('iteration')
        ax.set_ylabel('loss')
        ax.set_title(self.plot_title())
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = path or os.path.join(self.out_dir, 'loss.png')
        atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=100))
        return path

    # ----- the trained model -------------------------------------------------------------------
    def export(self, path):
        """Save the model for detection: `path.npz` + `path.json`. The target normalisation is
        folded into bbox_pred (W' = diag(stds) W, b' = stds * b + means) so that the saved model
        predicts raw offsets."""
        return export_model(self.model, path, self.class_names, self.means, self.stds, self.cfg)


def export_model(model, path, class_names, means, stds, cfg):
    state = model.state_dict()
    K1 = model.num_classes + 1
    s = np.tile(np.asarray(stds, np.float32), K1)                      # (4(K+1),)
    m = np.tile(np.asarray(means, np.float32), K1)
    state['bbox_pred.weight'] = state['bbox_pred.weight'] * s[:, None]
    state['bbox_pred.bias'] = state['bbox_pred.bias'] * s + m
    base = path[:-4] if path.endswith('.npz') else path
    from .weights import save_npz
    save_npz(state, base + '.npz')
    info = {'architecture': 'fast_rcnn', 'trunk': cfg.trunk, 'num_classes': model.num_classes,
            'class_names': list(class_names), 'source': cfg.source, 'scales': list(cfg.scales),
            'max_size': cfg.max_size, 'freeze_stages': cfg.freeze_stages,
            'roi_size': list(model.roi_pool.output_size),
            'spatial_scale': model.roi_pool.spatial_scale,
            'created': time.strftime('%Y-%m-%d %H:%M:%S')}
    atomic_write(base + '.json', lambda f: f.write(json.dumps(info, indent=1).encode()))
    return base + '.npz'


def load_model(path, device='cpu'):
    """A FastRCNN saved by `export_model` (path to its .npz or .json), with its settings dict."""
    base = os.path.splitext(path)[0] if path.endswith(('.npz', '.json')) else path
    if not os.path.exists(base + '.json') or not os.path.exists(base + '.npz'):
        raise FileNotFoundError(f'model not found: expected {base}.npz and {base}.json')
    with open(base + '.json') as f:
        info = json.load(f)
    if info.get('architecture') != 'fast_rcnn':
        raise ValueError(f"{base}.json is not a Fast R-CNN model description")
    model = FastRCNN(info['trunk'], info['num_classes'], info.get('freeze_stages', 0),
                     tuple(info['roi_size']), info['spatial_scale'])
    from .weights import load_weights
    model.load_state_dict(load_weights(base + '.npz'))
    return model.to(device).eval(), info
