"""Training: the settings, one loop for both detectors, the alternating schedule, crop pretraining.

    config.py       TrainConfig (Fast R-CNN, the paper's defaults), FasterTrainConfig (+ the RPN's)
    loop.py         Trainer: seeded iterations, the optimiser, progress, checkpoints, export
    fast_rcnn.py    FastRCNNTrainer: hierarchical mini-batches and the multi-task loss
    faster_rcnn.py  FasterRCNNTrainer: approximate joint training (or the 4-step schedule)
    alternating.py  the 4-step alternating schedule of Faster R-CNN
    parts.py        a step's gradient as a sum over parts (images, chunks of crops)
    checkpoint.py   save and resume exactly
    pretrain.py     crop pretraining, the CPU demos' stand-in for ImageNet
"""
from .config import FasterTrainConfig, TrainConfig
from .fast_rcnn import FastRCNNTrainer
from .faster_rcnn import FasterRCNNTrainer
from .loop import Trainer

__all__ = ['TrainConfig', 'FasterTrainConfig', 'Trainer', 'FastRCNNTrainer', 'FasterRCNNTrainer',
           'make_trainer']


def make_trainer(cfg, dataset, out_dir, *, proposals=None):
    """The trainer for `cfg`: Faster R-CNN's for a FasterTrainConfig (no proposals needed),
    else Fast R-CNN's, which needs `proposals` (dict image id -> (P, 4) boxes)."""
    if isinstance(cfg, FasterTrainConfig):
        return FasterRCNNTrainer(cfg, dataset, out_dir)
    if proposals is None:
        raise ValueError('Fast R-CNN trains on precomputed proposals: pass proposals= '
                         '(e.g. tinyrcnn.proposals.dataset_proposals(dataset, root))')
    return FastRCNNTrainer(cfg, dataset, proposals, out_dir)
