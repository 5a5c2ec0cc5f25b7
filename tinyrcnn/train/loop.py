"""The training loop shared by Fast and Faster R-CNN: seeded iterations, parts, checkpoints.

    trainer = FastRCNNTrainer(cfg, dataset, proposals, out_dir='runs/x')   # or FasterRCNNTrainer
    trainer.run()                     # progress bar, checkpoints, loss curve
    trainer.export('runs/x/model')    # model.npz + model.json, predicting raw box offsets

A run is a pure function of (settings, data, iteration): the images of iteration i, the RoIs
and anchors sampled from them, the flips and the dropout masks all come from generators seeded
by (seed, i), so a run resumed from a checkpoint continues exactly as an uninterrupted one.
A subclass says what one iteration computes: `parts` (the images of the mini-batch, as one or
several graphs), `part_losses` (one part's losses) and the names of those losses.

Nothing is lost on a long run: the newest checkpoints that read whole are kept (`checkpoint.py`),
a resume refuses other settings or another data set unless told to override them, and a loss
that stops being finite ends the run before the update it would poison (`Diverged`), or, with
skip_nonfinite, skips that batch and counts it.
"""
import contextlib
import dataclasses
import math
import os

import numpy as np

from .. import nn
from ..export import export_model
from ..optim import SGD, Adam, StepLR
from ..seed import manual_seed
from ..utils import atomic_write, progress
from ..viz import plot_losses
from .checkpoint import (checkpoint_files, data_fingerprint, differences, newest_checkpoint,
                         read_checkpoint, remove_temporaries, save_checkpoint)
from .parts import backward_parts
from .pretrain import pretrain_on_dataset


class Diverged(RuntimeError):
    """A loss became NaN or infinite; the model was not updated with it."""


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
        self.skipped = []                    # iterations whose loss was not finite (skip_nonfinite)
        self.means = self.stds = None        # the regression targets' statistics (Sec. 2.3)
        self.resumed = None                  # what load_checkpoint did: path, skipped, overridden

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
        """One SGD iteration: sample, forward, backward, update. Returns the history row (None
        for a batch skipped for its non-finite loss)."""
        it, cfg = self.iteration, self.cfg
        rng = np.random.default_rng([cfg.seed, 11, it])
        manual_seed(cfg.seed * 1_000_003 + it)               # dropout masks of this iteration
        self.prepare_step(it)
        parts = self.parts(self.batch_indices(it), rng)
        losses = backward_parts(self.part_losses, parts, self.model, cfg.threads)
        finite = all(math.isfinite(v) for v in losses)
        if not finite and not cfg.skip_nonfinite:      # keep what is good: the state before it
            saved = [os.path.basename(p) for p in checkpoint_files(self.out_dir or '.')]
            if self.out_dir and f'checkpoint_{it:08d}.npz' not in saved:
                self.save_checkpoint()
            raise Diverged(self.divergence_message(it + 1, losses))
        if finite:
            self.optimizer.step()
        self.schedule.step()
        self.iteration += 1
        if not finite:
            self.skipped.append(self.iteration)
            return None
        self.history.append((self.iteration,) + tuple(losses))
        return self.history[-1]

    def divergence_message(self, iteration, losses):
        named = ', '.join(f'{n} {v:.4g}' for n, v in zip(self.loss_names, losses))
        files = checkpoint_files(self.out_dir) if self.out_dir else []
        kept = (f'the state before it is saved, {os.path.basename(files[0])}; resume with a lower '
                f'lr (--set lr=... --override), or with skip_nonfinite=true to skip such batches'
                if files else 'nothing was saved (no output folder)')
        return (f'the loss is not finite at iteration {iteration} ({named}): training stopped '
                f'before that update; {kept}')

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
        pretraining first when cfg.pretrain_iterations > 0 and the run starts afresh (unless
        `pretrain` already ran)."""
        total = self.cfg.iterations if iterations is None else iterations
        fresh = self.iteration == 0 and self.pretrain_history is None
        if fresh and self.cfg.pretrain_iterations > 0:
            self.pretrain(show_progress)
        start = self.iteration

        def postfix():
            recent = [h[1:] for h in self.history[-20:]] or [(0.0,) * len(self.loss_names)]
            skipped = f' skipped {len(self.skipped)}' if self.skipped else ''
            return self.loss_text(np.mean(recent, axis=0)) + skipped

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

    pretrain_history = None       # (iteration, loss, accuracy) of the crop pretraining, once run

    def pretrain(self, show_progress=True):
        """Classify crops of the training objects first (`train.pretrain`): the stand-in for
        ImageNet initialisation when the trunk starts from scratch."""
        self.pretrain_history = pretrain_on_dataset(self.model, self.dataset, self.cfg, show_progress)
        return self.pretrain_history

    # ----- checkpoints and the trained model ---------------------------------------------------
    def save_checkpoint(self):
        """OUT/checkpoint_{iteration}.npz (`train.checkpoint`; the newest cfg.keep_checkpoints
        stay), the settings as JSON and the loss curve. Returns the checkpoint's path."""
        remove_temporaries(self.out_dir)
        meta = {'iteration': self.iteration, 'history': self.history, 'skipped': self.skipped,
                'schedule': self.schedule.state_dict(), 'config': dataclasses.asdict(self.cfg),
                'class_names': self.class_names, 'data': data_fingerprint(self.dataset)}
        path = save_checkpoint(self.out_dir, self.iteration, self.model, self.optimizer, meta,
                               {'means': self.means, 'stds': self.stds}, self.cfg.keep_checkpoints)
        atomic_write(os.path.join(self.out_dir, 'settings.json'),
                     lambda f: f.write(self.cfg.to_json().encode()))
        if self.history:
            plot_losses(self.history, self.loss_names, self.title,
                        os.path.join(self.out_dir, 'loss.png'))
        return path

    def load_checkpoint(self, path=None, override=False):
        """Continue from `path`, or from the newest checkpoint in out_dir that reads whole
        (damaged newer ones are skipped, and listed in self.resumed). A checkpoint made with
        other settings (but those in checkpoint.MAY_CHANGE) or another data set is refused
        with a ValueError listing the differences, unless override=True."""
        skipped = []
        if path is None:
            remove_temporaries(self.out_dir)
            path, (meta, state, opt, arrays), skipped = newest_checkpoint(self.out_dir)
        else:
            meta, state, opt, arrays = read_checkpoint(path)
        differ = differences(meta, dataclasses.asdict(self.cfg), data_fingerprint(self.dataset))
        if differ and not override:
            raise ValueError(f'{os.path.basename(path)} was made with other settings: '
                             f"{'; '.join(differ)} (--override resumes anyway)")
        base_lr, momentum = self.schedule.base_lr, self.optimizer.momentum   # this run's settings
        try:
            self.model.load_state_dict(state)
            self.optimizer.load_state_dict(opt)
        except ValueError as e:
            raise ValueError(f'{path}: {e}') from None
        self.means, self.stds = arrays['means'], arrays['stds']
        self.schedule.load_state_dict(meta['schedule'])
        # the checkpoint's buffers, this run's rates: the same numbers unless overridden
        self.schedule.base_lr, self.optimizer.momentum = base_lr, momentum
        self.optimizer.lr = self.schedule.lr_at(self.schedule.iteration)
        self.iteration = meta['iteration']
        self.history = [tuple(h) for h in meta['history']]
        self.skipped = list(meta.get('skipped', []))
        for bad, _ in skipped:                  # kept for a look, but no longer counted as kept
            with contextlib.suppress(OSError):
                os.replace(bad, bad + '.damaged')
        self.resumed = dict(path=path, skipped=skipped, overridden=differ if override else [])
        return self

    def export(self, path):
        """Save the model for detection: PATH.npz + PATH.json (`tinyrcnn.export`)."""
        return export_model(self.model, path, self.class_names, self.means, self.stds, self.cfg,
                            getattr(self.dataset, 'category_ids', None))
