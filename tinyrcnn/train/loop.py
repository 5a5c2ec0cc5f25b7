"""The training loop shared by Fast and Faster R-CNN: seeded iterations, parts, checkpoints.

    trainer = FastRCNNTrainer(cfg, dataset, proposals, out_dir='runs/x')   # or FasterRCNNTrainer
    trainer.run()                     # progress bar, checkpoints, loss curve
    trainer.export('runs/x/model')    # model.npz + model.json, predicting raw box offsets

A run is a pure function of (settings, data, iteration): the images of iteration i, the RoIs
and anchors sampled from them, the flips and the dropout masks all come from generators seeded
by (seed, i), so a run resumed from a checkpoint continues exactly as an uninterrupted one.
A subclass says what one iteration computes: `parts` (the images of the mini-batch, as one or
several graphs), `part_losses` (one part's losses) and the names of those losses.
"""
import dataclasses
import os

import numpy as np

from .. import nn
from ..export import export_model
from ..optim import SGD, Adam, StepLR
from ..seed import manual_seed
from ..utils import atomic_write, progress
from ..viz import plot_losses
from .checkpoint import load_checkpoint, save_checkpoint
from .parts import backward_parts
from .pretrain import pretrain_on_dataset


def make_optimizer(params, cfg, lr=None):
    """SGD with momentum (the papers') or Adam (the CPU demos'), over (name, Parameter) pairs:
    biases learn at bias_lr_mult times the rate, without weight decay (Caffe's convention,
    which the released code keeps)."""
    lr = cfg.lr if lr is None else lr
    groups = [{'params': [p for n, p in params if not n.endswith('bias')]},
              {'params': [p for n, p in params if n.endswith('bias')],
               'lr_mult': cfg.bias_lr_mult, 'weight_decay': 0.0}]
    if cfg.optimizer == 'sgd':
        return SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == 'adam':
        return Adam(groups, lr=lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {cfg.optimizer!r}")


class Trainer:
    """Trains `model` on `dataset` (VOCDetection-like) with the settings `cfg`, writing into
    `out_dir` (None: nowhere). Subclasses define `parts`, `part_losses` and `loss_names`."""

    loss_names = ()        # the loss columns of `history`, after the iteration
    title = ''             # of the loss curve

    def __init__(self, cfg, dataset, model, out_dir):
        if not isinstance(model, nn.Module):
            raise TypeError(f'Trainer(cfg, dataset, model, out_dir) is the loop both detectors '
                            f'share, and needs a model, got {type(model).__name__}; train with '
                            f'FastRCNNTrainer(cfg, dataset, proposals, out_dir) or FasterRCNNTrainer')
        self.cfg, self.dataset, self.out_dir = cfg, dataset, out_dir
        self.class_names = list(dataset.class_names)
        self.num_classes = len(self.class_names)
        self.model = model
        if cfg.dropout is not None:
            for m in self.model.classifier:
                if hasattr(m, 'p'):
                    m.p = cfg.dropout
        self.model.to(cfg.device).train()
        self.optimizer = make_optimizer(self.model.trainable_parameters(), cfg)
        self.schedule = StepLR(self.optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
        self.iteration = 0
        self.history = []                    # (iteration, loss_1, ..., loss_k)
        self.means = self.stds = None        # the regression targets' statistics (Sec. 2.3)

    # ----- one iteration -----------------------------------------------------------------------
    def batch_indices(self, it):
        """Indices into self.roidb of iteration it's images: each epoch a permutation seeded
        by (seed, epoch)."""
        n, N = len(self.roidb), self.cfg.ims_per_batch
        per_epoch = max(1, n // N)
        epoch, k = divmod(it, per_epoch)
        order = np.random.default_rng([self.cfg.seed, 7, epoch]).permutation(n)
        return order[k * N:(k + 1) * N]

    def prepare_step(self, it):
        """Anything to set before iteration it (the alternating schedule switches steps)."""

    def step(self):
        """One SGD iteration: sample, forward, backward, update. Returns the history row."""
        it, cfg = self.iteration, self.cfg
        rng = np.random.default_rng([cfg.seed, 11, it])
        manual_seed(cfg.seed * 1_000_003 + it)               # dropout masks of this iteration
        self.prepare_step(it)
        parts = self.parts(self.batch_indices(it), rng)
        losses = backward_parts(self.part_losses, parts, self.model, cfg.threads)
        self.optimizer.step()
        self.schedule.step()
        self.iteration += 1
        self.history.append((self.iteration,) + tuple(losses))
        return self.history[-1]

    def parts(self, indices, rng):
        raise NotImplementedError

    def part_losses(self, model, part):
        """(list of loss Tensors, the first minimised; the part's weight in the step's loss)."""
        raise NotImplementedError

    def loss_text(self, m):
        """Progress-bar text for the running means m of the loss columns."""
        return (f"loss {m[0]:.3f} ({', '.join(f'{v:.3f}' for v in m[1:])}) "
                f'lr {self.optimizer.lr:.2g}')

    # ----- the run -----------------------------------------------------------------------------
    def run(self, iterations=None, show_progress=True):
        """Train up to `iterations` (default cfg.iterations), checkpointing as it goes; crop
        pretraining first when cfg.pretrain_iterations > 0 and the run starts afresh."""
        total = self.cfg.iterations if iterations is None else iterations
        if self.iteration == 0 and self.cfg.pretrain_iterations > 0:
            self.pretrain(show_progress)
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
        """Classify crops of the training objects first (`train.pretrain`): the stand-in for
        ImageNet initialisation when the trunk starts from scratch."""
        self.pretrain_history = pretrain_on_dataset(self.model, self.dataset, self.cfg, show_progress)
        return self.pretrain_history

    # ----- checkpoints and the trained model ---------------------------------------------------
    def checkpoint_path(self):
        return os.path.join(self.out_dir, 'checkpoint.npz')

    def save_checkpoint(self, path=None):
        """The checkpoint (`train.checkpoint`), the settings as JSON and the loss curve."""
        path = path or self.checkpoint_path()
        meta = {'iteration': self.iteration, 'history': self.history,
                'schedule': self.schedule.state_dict(), 'config': dataclasses.asdict(self.cfg),
                'class_names': self.class_names}
        save_checkpoint(path, self.model, self.optimizer, meta,
                        {'means': self.means, 'stds': self.stds})
        atomic_write(os.path.join(os.path.dirname(path), 'settings.json'),
                     lambda f: f.write(self.cfg.to_json().encode()))
        if self.history:
            plot_losses(self.history, self.loss_names, self.title,
                        os.path.join(os.path.dirname(path), 'loss.png'))
        return path

    def load_checkpoint(self, path=None):
        meta, arrays = load_checkpoint(path or self.checkpoint_path(), self.model, self.optimizer,
                                       ('means', 'stds'))
        self.means, self.stds = arrays['means'], arrays['stds']
        self.schedule.load_state_dict(meta['schedule'])
        self.iteration = meta['iteration']
        self.history = [tuple(h) for h in meta['history']]
        return self

    def export(self, path):
        """Save the model for detection: PATH.npz + PATH.json (`tinyrcnn.export`)."""
        return export_model(self.model, path, self.class_names, self.means, self.stds, self.cfg)
