"""Training Faster R-CNN (Ren et al., 2015, Sec. 3.2): one network, RPN and Fast R-CNN together.

    cfg = FasterTrainConfig(trunk='vgg-tiny', iterations=2000, anchor_scales=(2, 4, 8))
    trainer = FasterRCNNTrainer(cfg, dataset, out_dir='runs/x')      # no precomputed proposals
    trainer.run()

schedule='joint' (default) is approximate joint training (Sec. 3.2 (ii)): each iteration takes
one image (N = 1), computes the RPN loss on 256 sampled anchors and the Fast R-CNN loss on
R = 128 RoIs sampled from the RPN's own proposals, and back-propagates their sum
(`faster_rcnn.loss`). With N > 1 images the step's loss is the mean of theirs, each image its
own graph. schedule='alternating' is the paper's 4-step training (`train.alternating`).
"""
import os

import numpy as np

from .. import backend
from .. import boxes as bx
from ..data.transforms import hflip, preprocess, rescale
from ..fast_rcnn.minibatch import prepare_roidb
from ..faster_rcnn.loss import faster_rcnn_losses
from ..faster_rcnn.network import FasterRCNN
from ..seed import manual_seed
from ..tensor import Tensor
from ..weights import load_weights, save_npz
from . import alternating
from .loop import Trainer

LOSS_KEYS = ('loss', 'rpn_cls', 'rpn_loc', 'cls', 'loc')   # faster_rcnn_losses' keys, in order


def _no_proposals(i):
    return np.zeros((0, 4), np.float32)


class FasterRCNNTrainer(Trainer):
    """Trains a FasterRCNN on `dataset` (VOCDetection-like)."""

    loss_names = ('total', 'RPN objectness', 'RPN box', 'head class', 'head box')

    def __init__(self, cfg, dataset, out_dir, model=None):
        manual_seed(cfg.seed)
        model = model or FasterRCNN(cfg.trunk, len(dataset.class_names), cfg.freeze_stages,
                                    weights=cfg.weights, **cfg.model_settings())
        super().__init__(cfg, dataset, model, out_dir)
        # each image's ground truth (difficult objects left out; images with none skipped)
        self.roidb = prepare_roidb(dataset, _no_proposals, cfg)
        # the released code's fixed target statistics: no pass over the data needed
        self.means = np.asarray(bx.BBOX_NORMALIZE_MEANS, np.float32)
        self.stds = np.asarray(bx.BBOX_NORMALIZE_STDS, np.float32)
        self.trainable = self.model.trainable_parameters()
        self.initial_state = self.model.state_dict()   # alternating step 2 restarts the trunk here
        self.step1_proposals = None                    # alternating: boxes of the step-1 RPN
        self.step_index, self.stage = None, 'joint'

    @property
    def title(self):
        return f'Faster R-CNN losses ({self.cfg.schedule})'

    def loss_text(self, m):
        return (f'loss {m[0]:.3f} (rpn {m[1]:.3f}/{m[2]:.3f}, head {m[3]:.3f}/{m[4]:.3f}) '
                f'lr {self.optimizer.lr:.2g}')

    def prepare_step(self, it):
        self.step_index, self.stage = alternating.stage_at(self.cfg, it)
        if self.step_index is not None and it in alternating.boundaries(self.cfg)[:4]:
            alternating.enter_step(self, self.step_index)
        alternating.set_trainable(self.trainable, self.step_index)
        self.optimizer.lr = alternating.lr_at(self.cfg, self.schedule, it, self.step_index)

    def parts(self, indices, rng):
        """One part per image, each with its share 1/N of the loss. With one image (the paper's
        N = 1) it draws from the iteration's generator; with several, image j from its own
        (seed, 11, it, j), so that no image's draws depend on another's."""
        if len(indices) == 1:
            return [(self.roidb[indices[0]], rng, 1.0)]
        seeds = [np.random.default_rng([self.cfg.seed, 11, self.iteration, j]) for j in range(len(indices))]
        return [(self.roidb[i], r, 1 / len(indices)) for i, r in zip(indices, seeds)]

    def part_losses(self, model, part):
        """One training image (roidb entry e): flip, rescale, and its losses."""
        e, rng, weight = part
        cfg = self.cfg
        image, gt = self.dataset[e['index']]['image'], e['gt_boxes']
        props = self.step1_proposals[str(e['index'])] if self.step_index == 1 else None
        boxes = gt if props is None else np.concatenate([gt, props])
        if cfg.flip and rng.random() < 0.5:
            image, boxes = hflip(image, boxes)
        scale = cfg.scales[rng.integers(len(cfg.scales))]
        image, boxes, factor = rescale(image, boxes, scale, cfg.max_size)
        gt, props = boxes[:len(gt)], (None if props is None else boxes[len(gt):])
        losses = faster_rcnn_losses(model, self.blob(image), (*image.shape[:2], factor), gt,
                                    e['gt_labels'], cfg, rng, proposals=props, stage=self.stage)
        return [losses[k] for k in LOSS_KEYS], weight

    def blob(self, image):
        """One resized (H, W, 3) image -> the network's (1, 3, H, W) input Tensor."""
        param = self.trainable[0][1] if self.trainable else next(iter(self.model.parameters()))
        blob = preprocess(image, self.cfg.source)[None].astype(param.dtype)     # (1, 3, H, W)
        return Tensor(backend.to_device(blob, param.device))

    # ----- what the alternating schedule keeps beside the checkpoints --------------------------
    def proposals_path(self):
        return os.path.join(self.out_dir, 'step1_proposals.npz') if self.out_dir else None

    def pretrained_path(self):
        return os.path.join(self.out_dir, 'pretrained.npz') if self.out_dir else None

    def pretrain(self, show_progress=True):
        """Trainer.pretrain, then remember the result: the alternating schedule's step 2
        restarts the trunk from the pretrained network (Sec. 3.2), not from its initialisation.
        Kept in OUT/pretrained.npz so that a resumed run restarts from the same trunk."""
        history = super().pretrain(show_progress)
        self.initial_state = self.model.state_dict()
        if self.out_dir:
            save_npz(self.initial_state, self.pretrained_path())
        return history

    def load_checkpoint(self, path=None, override=False):
        """Trainer.load_checkpoint, plus the pretrained trunk that step 2 restarts from and,
        when resuming inside step 2, the step-1 RPN's proposals it trains on."""
        super().load_checkpoint(path, override)
        if self.out_dir and os.path.exists(self.pretrained_path()):
            self.initial_state = load_weights(self.pretrained_path())
        b = alternating.boundaries(self.cfg)
        if self.cfg.schedule == 'alternating' and b[1] < self.iteration < b[2] \
                and self.proposals_path() and os.path.exists(self.proposals_path()):
            self.step1_proposals = load_weights(self.proposals_path())   # arrays by name
        return self
