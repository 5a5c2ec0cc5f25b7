"""Every training setting in one place, with the papers' values as defaults.

`TrainConfig` is Fast R-CNN's (Girshick, 2015, Sec. 2.3, 3, 4); `FasterTrainConfig` adds the
RPN's (Ren et al., 2015, Sec. 3.1-3.3) and the released code's end-to-end values where they
differ. Both are dataclasses: `from_dict` reads one back from `settings.json` or `--set`. Every
setting is checked by type and range when a config is made (`RULES`): a wrong one is one
ValueError naming the key, the value and what is expected.
"""
import dataclasses
import json

from ..checks import (check_fields, choice, flag, integer, number, numbers_list, optional, sizes,
                      text)
from ..data.transforms import PREPROCESS
from ..faster_rcnn.network import RPN_DEFAULTS

FRACTION = number(0, 1)
POSITIVE = number(0, open_low=True)
RULES = {   # name -> (ok, what is expected); tests/train/test_config.py: every field has one
    'trunk': choice('vgg16', 'vgg-tiny'), 'weights': optional(text()),
    'source': choice(*PREPROCESS), 'freeze_stages': integer(0, 5),
    'dropout': optional(number(0, 1, open_high=True)),
    'ims_per_batch': integer(1), 'rois_per_batch': integer(1),
    'fg_fraction': FRACTION, 'fg_thresh': FRACTION, 'bg_thresh_lo': FRACTION,
    'bg_thresh_hi': FRACTION, 'use_gt_as_rois': flag(), 'flip': flag(),
    'scales': sizes(what='positive image sizes in pixels'), 'max_size': integer(1),
    'optimizer': choice('sgd', 'adam'), 'lr': POSITIVE, 'momentum': number(0, 1, open_high=True),
    'weight_decay': number(0), 'bias_lr_mult': number(0), 'step_size': integer(1),
    'gamma': POSITIVE, 'iterations': integer(0), 'loss_lambda': number(0),
    'smooth_l1_sigma': POSITIVE, 'normalize_targets': flag(),
    'pretrain_iterations': integer(0), 'pretrain_batch': integer(1), 'pretrain_crop': integer(8),
    'pretrain_lr': POSITIVE, 'seed': integer(0), 'checkpoint_every': integer(1),
    'keep_checkpoints': integer(1), 'skip_nonfinite': flag(), 'device': choice('cpu', 'cuda'),
    'threads': integer(1),
    # Faster R-CNN's
    'anchor_scales': numbers_list(), 'anchor_ratios': numbers_list(),
    'rpn_channels': optional(integer(1)), 'rpn_batch_size': integer(1),
    'rpn_fg_fraction': FRACTION, 'rpn_positive_overlap': FRACTION,
    'rpn_negative_overlap': FRACTION, 'rpn_allowed_border': integer(0), 'rpn_sigma': POSITIVE,
    'train_pre_nms_top_n': integer(), 'train_post_nms_top_n': integer(),
    'test_pre_nms_top_n': integer(), 'test_post_nms_top_n': integer(),
    'rpn_nms_thresh': FRACTION, 'rpn_min_size': number(0), 'schedule': choice('joint', 'alternating'),
}


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
    pretrain_iterations: int = 0         # > 0: first classify object crops (no ImageNet weights)
    pretrain_batch: int = 64
    pretrain_crop: int = 64
    pretrain_lr: float = 0.001
    seed: int = 0
    checkpoint_every: int = 1000
    device: str = 'cpu'
    threads: int = 1                     # CPU: > 1 computes a mini-batch image by image
                                         # (train/parts.py), on threads with tinyrcnn.speed
    keep_checkpoints: int = 2            # the newest K checkpoints stay on disk (train/checkpoint.py)
    skip_nonfinite: bool = False         # a NaN/inf loss skips its batch instead of stopping the run

    def __post_init__(self):
        """Check every setting (`RULES`), then the ones that depend on each other."""
        check_fields(dataclasses.asdict(self), RULES)
        if self.bg_thresh_lo > self.bg_thresh_hi:
            raise ValueError(f'setting bg_thresh_lo={self.bg_thresh_lo} is above bg_thresh_hi='
                             f'{self.bg_thresh_hi}: background is IoU in [bg_thresh_lo, bg_thresh_hi)')
        if self.rois_per_batch < self.ims_per_batch:
            raise ValueError(f'setting rois_per_batch={self.rois_per_batch}: expected at least one '
                             f'RoI per image (ims_per_batch={self.ims_per_batch})')
        self.scales = tuple(self.scales)

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f'unknown training settings {sorted(unknown)}')
        return cls(**d)


@dataclasses.dataclass
class FasterTrainConfig(TrainConfig):
    """Faster R-CNN settings: Fast R-CNN's (TrainConfig) with the released code's end-to-end values
    where they differ (one image per batch, background from IoU 0, fixed target statistics,
    70k iterations with a step at 50k), plus the RPN's (Sec. 3.1-3.3)."""
    ims_per_batch: int = 1               # N = 1 image, R = 128 RoIs from it (Sec. 3.1.3)
    bg_thresh_lo: float = 0.0            # the end-to-end code samples background from IoU [0, 0.5)
    iterations: int = 70000
    step_size: int = 50000
    checkpoint_every: int = 5000
    anchor_scales: tuple = (8, 16, 32)   # x16 pixels: 128, 256, 512 (Sec. 3.1.1)
    anchor_ratios: tuple = (0.5, 1, 2)
    rpn_channels: int = None             # None: the trunk's width (512 for VGG16)
    rpn_batch_size: int = 256            # anchors sampled per image ...
    rpn_fg_fraction: float = 0.5         # ... at most half positive (Sec. 3.1.3)
    rpn_positive_overlap: float = 0.7    # IoU >= 0.7: positive (Sec. 3.1.2)
    rpn_negative_overlap: float = 0.3    # IoU < 0.3 with every object: negative
    rpn_allowed_border: int = 0          # anchors crossing the border are ignored (Sec. 3.3)
    rpn_sigma: float = 3.0               # smooth L1 switches at 1/9 for the RPN (released code)
    train_pre_nms_top_n: int = RPN_DEFAULTS['train_pre_nms_top_n']
    train_post_nms_top_n: int = RPN_DEFAULTS['train_post_nms_top_n']
    test_pre_nms_top_n: int = RPN_DEFAULTS['test_pre_nms_top_n']
    test_post_nms_top_n: int = RPN_DEFAULTS['test_post_nms_top_n']
    rpn_nms_thresh: float = RPN_DEFAULTS['rpn_nms_thresh']
    rpn_min_size: float = RPN_DEFAULTS['rpn_min_size']   # in original image pixels
    schedule: str = 'joint'              # 'joint' (approximate joint) or 'alternating' (4-step)

    def __post_init__(self):
        super().__post_init__()
        self.anchor_scales, self.anchor_ratios = tuple(self.anchor_scales), tuple(self.anchor_ratios)

    def model_settings(self):
        """The FasterRCNN constructor's RPN arguments."""
        return dict(anchor_scales=self.anchor_scales, anchor_ratios=self.anchor_ratios,
                    rpn_channels=self.rpn_channels,
                    **{k: getattr(self, k) for k in RPN_DEFAULTS})
