"""Training Fast R-CNN (Girshick, 2015, Sec. 2.3): single-stage, multi-task, hierarchical batches.

    cfg = TrainConfig(trunk='vgg-tiny', iterations=2000)
    trainer = FastRCNNTrainer(cfg, dataset, proposals, out_dir='runs/x')   # proposals: id -> (P, 4)
    trainer.run()

Each iteration samples N images and R/N RoIs from each (`fast_rcnn.minibatch`) and minimises
the multi-task loss (`fast_rcnn.loss`) over the R RoIs, back-propagating through RoI pooling
into the conv layers. With cfg.threads > 1 on the CPU the N images are computed as separate
graphs (`train.parts`), each image's loss weighted by its share of the RoIs: the same sum, up
to float rounding and the zero padding a shared blob would give the smaller image.
"""
from .. import backend
from ..fast_rcnn.loss import multitask_loss
from ..fast_rcnn.minibatch import make_minibatch, prepare_roidb, target_stats
from ..fast_rcnn.network import FastRCNN
from ..seed import manual_seed
from ..tensor import Tensor
from .loop import Trainer
from .parts import usable_threads


class FastRCNNTrainer(Trainer):
    """Trains a FastRCNN on `dataset` with `proposals` (dict image id -> (P, 4) boxes)."""

    loss_names = ('total', 'classification', 'box regression')
    title = 'Fast R-CNN multi-task loss'

    def __init__(self, cfg, dataset, proposals, out_dir, model=None):
        manual_seed(cfg.seed)
        model = model or FastRCNN(cfg.trunk, len(dataset.class_names), cfg.freeze_stages,
                                  weights=cfg.weights)
        super().__init__(cfg, dataset, model, out_dir)
        self.roidb = prepare_roidb(dataset, proposals, cfg)
        self.means, self.stds = target_stats(self.roidb, cfg)

    def parts(self, indices, rng):
        """The mini-batch (Sec. 2.3) as one part, or as one part per image when cfg.threads
        allows (`train.parts.usable_threads`): the same images, RoIs and flips either way, each
        part weighted by its share of the RoIs."""
        cfg = self.cfg
        minibatch = lambda images, **kw: make_minibatch(  # noqa: E731
            self.dataset, self.roidb, images, cfg, self.num_classes, self.means, self.stds, rng, **kw)
        if usable_threads(self.model, cfg.threads, len(indices), cfg.device) == 1:
            return [(minibatch(indices), 1.0)]
        per_image = cfg.rois_per_batch // len(indices)
        batches = [minibatch([i], rois_per_image=per_image) for i in indices]
        total = sum(len(labels) for _, _, labels, _, _ in batches)
        return [(b, len(b[2]) / total) for b in batches]

    def part_losses(self, model, part):
        """The multi-task loss (L, L_cls, L_loc) of one part, and its weight."""
        batch, weight = part
        images, rois, labels, targets, weights = batch
        # rois and labels go as they are: RoI pooling and the log loss check them on the host
        # and upload them after, where a check on the GPU would make the host wait for it
        images, targets, weights = (backend.to_device(a, self.cfg.device)
                                    for a in (images, targets, weights))
        cls_score, bbox_pred = model(Tensor(images), rois)
        losses = multitask_loss(cls_score, bbox_pred, labels, targets, weights, self.cfg)
        return list(losses), weight
