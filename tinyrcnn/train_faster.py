"""Training Faster R-CNN (Ren et al., 2015, Sec. 3.2): one network, RPN and Fast R-CNN together.

    cfg = FasterTrainConfig(trunk='vgg-tiny', iterations=2000, anchor_scales=(2, 4, 8))
    trainer = FasterTrainer(cfg, dataset, out_dir='runs/x')
    trainer.run()                      # progress bar, checkpoints, loss curve
    trainer.export('runs/x/model')     # model.npz + model.json ('architecture': 'faster_rcnn')
    model, info = load_faster_model('runs/x/model')

schedule='joint' (default) is approximate joint training (Sec. 3.2 (ii)): each iteration takes
one image (N = 1), computes the RPN loss on 256 sampled anchors and the Fast R-CNN loss on
R = 128 RoIs sampled from the RPN's own proposals, and back-propagates their sum; the proposals
are treated as constants (no gradient through the box coordinates). schedule='alternating' is
the paper's 4-step training (Sec. 3.2, "4-Step Alternating Training"); its four steps take 2/6,
1/6, 2/6 and 1/6 of the iterations, as the released code's 80k/40k/80k/40k.

`FasterTrainer` is the Fast R-CNN `Trainer` with another step: the same seeded per-iteration
generators (sampling, flips, dropout), checkpoints and resume, optimiser and export.
"""
import dataclasses
import json
import os

import numpy as np

from . import backend
from . import boxes as bx
from .data.transforms import hflip, preprocess, rescale
from .models.faster_rcnn import RPN_DEFAULTS, FasterRCNN
from .tensor import Tensor, no_grad
from .train import TrainConfig, Trainer, export_model
from .utils import atomic_write, manual_seed, progress

STEPS = ('rpn', 'head', 'rpn', 'head')      # what each alternating step trains ...
STEP_FRACTIONS = (2, 1, 2, 1)               # ... and for how long (released code: 80k/40k/80k/40k)
LOSS_NAMES = ('loss', 'rpn_cls', 'rpn_loc', 'cls', 'loc')   # the columns of `history` after the iteration


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
        self.scales = tuple(self.scales)
        self.anchor_scales, self.anchor_ratios = tuple(self.anchor_scales), tuple(self.anchor_ratios)
        if self.schedule not in ('joint', 'alternating'):
            raise ValueError(f"schedule must be 'joint' or 'alternating', got {self.schedule!r}")
        if self.ims_per_batch < 1:
            raise ValueError(f'ims_per_batch must be >= 1, got {self.ims_per_batch}')

    def model_settings(self):
        """The FasterRCNN constructor's RPN arguments."""
        return dict(anchor_scales=self.anchor_scales, anchor_ratios=self.anchor_ratios,
                    rpn_channels=self.rpn_channels,
                    **{k: getattr(self, k) for k in RPN_DEFAULTS})


def _no_proposals(i):
    return np.zeros((0, 4), np.float32)


class FasterTrainer(Trainer):
    """Trains a FasterRCNN on `dataset` (VOCDetection-like); no precomputed proposals."""

    def __init__(self, cfg, dataset, out_dir, model=None):
        manual_seed(cfg.seed)
        model = model or FasterRCNN(cfg.trunk, len(dataset.class_names), cfg.freeze_stages,
                                    weights=cfg.weights, **cfg.model_settings())
        # the parent's roidb holds each image's ground truth (difficult objects left out)
        super().__init__(cfg, dataset, _no_proposals, out_dir, model=model)
        self.means = np.asarray(bx.BBOX_NORMALIZE_MEANS, np.float32)
        self.stds = np.asarray(bx.BBOX_NORMALIZE_STDS, np.float32)
        self.trainable = self.model.trainable_parameters()
        self.initial_state = self.model.state_dict()  # step 2 restarts the trunk from here
        self.step1_proposals = None                   # alternating: boxes of the step-1 RPN

    # ----- the alternating schedule ------------------------------------------------------------
    def boundaries(self):
        """First iteration of each alternating step (4 numbers) and the end."""
        total, parts = self.cfg.iterations, np.cumsum((0,) + STEP_FRACTIONS)
        return [int(round(total * p / parts[-1])) for p in parts]

    def stage_at(self, it):
        """(step index 0..3, 'rpn' or 'head') of iteration it; (None, 'joint') for joint."""
        if self.cfg.schedule == 'joint':
            return None, 'joint'
        k = int(np.searchsorted(self.boundaries()[1:4], it, side='right'))
        return k, STEPS[k]

    def _enter_step(self, k):
        """Sec. 3.2, 4-step training. Step 2 (k=1): a separate detector starts again from the
        initial trunk and trains on the step-1 RPN's proposals; step 3: the detector's trunk is
        fixed and only the RPN's own layers train; step 4: trunk fixed, the head trains.
        The optimiser starts afresh with each step, as a new solver would."""
        if k == 1:
            self.step1_proposals = self.generate_proposals()
            trunk = {n: v for n, v in self.initial_state.items() if n.startswith('features.')}
            self.model.load_state_dict(trunk, strict=False)
        if k > 0:
            self._reset_optimizer()

    def _reset_optimizer(self):
        """Empty every buffer of the optimiser (SGD's momentum, Adam's moments and step count)."""
        state = self.optimizer.state_dict()
        for key, value in state.items():
            if isinstance(value, list):
                state[key] = [None] * len(value)
        if 'steps' in state:
            state['steps'] = 0
        self.optimizer.load_state_dict(state)

    def _set_trainable(self, k):
        """Which parts learn in alternating step k (None: joint training, all of them)."""
        def part(name):
            return 'trunk' if name.startswith('features.') else 'rpn' if name.startswith('rpn.') else 'head'
        allowed = {None: ('trunk', 'rpn', 'head'), 0: ('trunk', 'rpn'), 1: ('trunk', 'head'),
                   2: ('rpn',), 3: ('head',)}[k]
        for n, p in self.trainable:
            p.requires_grad = part(n) in allowed

    def _lr_at(self, it, k):
        """Joint: the StepLR schedule. Alternating: each step is its own run, lr x gamma after
        3/4 of it (the released code's 60k of 80k, 30k of 40k)."""
        if k is None:
            return self.schedule.lr_at(it)
        b = self.boundaries()
        start, length = b[k], max(1, b[k + 1] - b[k])
        return self.cfg.lr * self.cfg.gamma ** int(it - start >= 0.75 * length)

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
            from .weights import save_npz
            os.makedirs(self.out_dir, exist_ok=True)
            save_npz(self.initial_state, self.pretrained_path())
        return history

    def load_checkpoint(self, path=None):
        """Trainer.load_checkpoint, plus what the alternating schedule keeps beside the
        checkpoint: the pretrained trunk that step 2 restarts from, and, when resuming inside
        step 2, the step-1 RPN's proposals it trains on."""
        super().load_checkpoint(path)
        if self.out_dir and os.path.exists(self.pretrained_path()):
            from .weights import load_weights
            self.initial_state = load_weights(self.pretrained_path())
        b = self.boundaries()
        if self.cfg.schedule == 'alternating' and b[1] < self.iteration < b[2] \
                and self.proposals_path() and os.path.exists(self.proposals_path()):
            with np.load(self.proposals_path()) as z:
                self.step1_proposals = {n: z[n] for n in z.files}
        return self

    def generate_proposals(self):
        """The current RPN's proposals (train top-N settings) for every training image, in
        original pixels: what step 2 trains the detector on. Saved next to the checkpoints."""
        cfg, boxes = self.cfg, {}
        was_training = self.model.training
        self.model.eval()
        with no_grad():
            for e in progress(self.roidb, desc='step-1 proposals'):
                image = self.dataset[e['index']]['image']
                resized, _, factor = rescale(image, None, cfg.scales[0], cfg.max_size)
                feats = self.model.features(self._blob(resized))
                logits, deltas = self.model.rpn(feats)
                props, _ = self.model.propose(logits.data, deltas.data,
                                              (*resized.shape[:2], factor), mode='train')
                boxes[str(e['index'])] = (props / np.float32(factor)).astype(np.float32)
        self.model.train(was_training)
        if self.proposals_path():
            atomic_write(self.proposals_path(), lambda f: np.savez(f, **boxes))
        return boxes

    # ----- one iteration -----------------------------------------------------------------------
    def _blob(self, image):
        param = self.trainable[0][1] if self.trainable else next(iter(self.model.parameters()))
        blob = preprocess(image, self.cfg.source)[None].astype(param.dtype)     # (1, 3, H, W)
        return Tensor(backend.to_device(blob, param.device))

    def step(self):
        it, cfg = self.iteration, self.cfg
        rng = np.random.default_rng([cfg.seed, 11, it])
        manual_seed(cfg.seed * 1_000_003 + it)               # dropout masks of this iteration
        k, stage = self.stage_at(it)
        if k is not None and it in self.boundaries()[:4]:
            self._enter_step(k)
        self._set_trainable(k)
        self.optimizer.lr = self._lr_at(it, k)

        indices = self.batch_indices(it)
        if len(indices) == 1:                      # the paper's setting: one image, one graph
            losses = self.image_losses(self.roidb[indices[0]], rng, k, stage)
            self.optimizer.zero_grad()
            losses['loss'].backward()
            values = [float(losses[n].item()) for n in LOSS_NAMES]
        else:                                      # N images: the mean of their losses
            # each image draws from its own generator, so threads cannot change what it draws
            parts = [(self.roidb[i], np.random.default_rng([cfg.seed, 11, it, j]))
                     for j, i in enumerate(indices)]

            def run(part):
                losses = self.image_losses(*part, k, stage)
                return [losses[n] for n in LOSS_NAMES], 1 / len(parts)

            values = self.backward_parts(run, parts)
        return self.finish_step(values)

    def image_losses(self, e, rng, k, stage):
        """The losses dict of one training image (roidb entry e): flip, rescale, forward."""
        cfg = self.cfg
        image, gt = self.dataset[e['index']]['image'], e['gt_boxes']
        props = self.step1_proposals[str(e['index'])] if k == 1 else None
        boxes = gt if props is None else np.concatenate([gt, props])
        if cfg.flip and rng.random() < 0.5:
            image, boxes = hflip(image, boxes)
        scale = cfg.scales[rng.integers(len(cfg.scales))]
        image, boxes, factor = rescale(image, boxes, scale, cfg.max_size)
        gt, props = boxes[:len(gt)], (None if props is None else boxes[len(gt):])
        return self.model(self._blob(image), (*image.shape[:2], factor), gt, e['gt_labels'],
                          cfg, rng, proposals=props, stage=stage)

    loss_names = ('total', 'RPN objectness', 'RPN box', 'head class', 'head box')

    def loss_text(self, m):
        return (f'loss {m[0]:.3f} (rpn {m[1]:.3f}/{m[2]:.3f}, head {m[3]:.3f}/{m[4]:.3f}) '
                f'lr {self.optimizer.lr:.2g}')

    def plot_title(self):
        return f'Faster R-CNN losses ({self.cfg.schedule})'

    def export(self, path):
        return export_faster_model(self.model, path, self.class_names, self.cfg)


def export_faster_model(model, path, class_names, cfg):
    """`train.export_model` (fixed target statistics folded into bbox_pred), then the JSON
    marked 'faster_rcnn' with the anchor and proposal settings the model needs to rebuild."""
    npz = export_model(model, path, class_names, bx.BBOX_NORMALIZE_MEANS, bx.BBOX_NORMALIZE_STDS, cfg)
    json_path = npz[:-4] + '.json'
    with open(json_path) as f:
        info = json.load(f)
    info.update(architecture='faster_rcnn', anchor_scales=list(model.anchor_scales),
                anchor_ratios=list(model.anchor_ratios), rpn_channels=model.rpn_channels,
                schedule=cfg.schedule, **model.settings)
    atomic_write(json_path, lambda f: f.write(json.dumps(info, indent=1).encode()))
    return npz


def load_faster_model(path, device='cpu'):
    """A FasterRCNN saved by `export_faster_model` (path to its .npz, .json or the base name),
    in eval mode, with its settings dict (scales, max_size, source for `detect`)."""
    base = path[:-4] if path.endswith(('.npz', '.json')) else path
    if not os.path.exists(base + '.json') or not os.path.exists(base + '.npz'):
        raise FileNotFoundError(f'model not found: expected {base}.npz and {base}.json')
    with open(base + '.json') as f:
        info = json.load(f)
    if info.get('architecture') != 'faster_rcnn':
        raise ValueError(f'{base}.json is not a Faster R-CNN model description '
                         f"(architecture {info.get('architecture')!r})")
    model = FasterRCNN(info['trunk'], info['num_classes'], info.get('freeze_stages', 0),
                       tuple(info['roi_size']), info['spatial_scale'],
                       anchor_scales=tuple(info['anchor_scales']),
                       anchor_ratios=tuple(info['anchor_ratios']), rpn_channels=info['rpn_channels'],
                       **{k: info[k] for k in RPN_DEFAULTS})
    from .weights import load_weights
    model.load_state_dict(load_weights(base + '.npz'))
    return model.to(device).eval(), info
