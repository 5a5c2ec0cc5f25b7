"""The 4-step alternating training of Faster R-CNN (Ren et al., 2015, Sec. 3.2, "4-Step
Alternating Training"), as the steps of one run.

    step 1  train the RPN, from the pretrained trunk
    step 2  train a separate Fast R-CNN detector on the step-1 RPN's proposals, its trunk again
            from the pretrained network
    step 3  fix the detector's trunk, fine-tune only the RPN's own layers: the two now share it
    step 4  trunk still fixed, fine-tune only the detector's own layers

The steps take 2/6, 1/6, 2/6 and 1/6 of the iterations, as the released code's
80k/40k/80k/40k; each is its own solver: the optimiser starts afresh and its learning rate
drops by gamma after 3/4 of the step. `FasterRCNNTrainer.prepare_step` calls `stage_at`,
`enter_step`, `set_trainable` and `lr_at` before every iteration.
"""
import numpy as np

from ..data.transforms import rescale
from ..tensor import no_grad
from ..utils import progress
from ..weights import save_npz

STEPS = ('rpn', 'head', 'rpn', 'head')      # what each step trains ...
STEP_FRACTIONS = (2, 1, 2, 1)               # ... and for how long (released code: 80k/40k/80k/40k)


def boundaries(cfg):
    """First iteration of each of the four steps, and the end: 5 numbers."""
    total, parts = cfg.iterations, np.cumsum((0,) + STEP_FRACTIONS)
    return [int(round(total * p / parts[-1])) for p in parts]


def stage_at(cfg, it):
    """(step index 0..3, 'rpn' or 'head') of iteration it; (None, 'joint') for joint training."""
    if cfg.schedule == 'joint':
        return None, 'joint'
    k = int(np.searchsorted(boundaries(cfg)[1:4], it, side='right'))
    return k, STEPS[k]


def lr_at(cfg, schedule, it, k):
    """Joint: the StepLR schedule. Alternating: each step is its own run, lr x gamma after
    3/4 of it (the released code's 60k of 80k, 30k of 40k)."""
    if k is None:
        return schedule.lr_at(it)
    b = boundaries(cfg)
    start, length = b[k], max(1, b[k + 1] - b[k])
    return cfg.lr * cfg.gamma ** int(it - start >= 0.75 * length)


def set_trainable(named_params, k):
    """Which parts learn in step k (None: joint training, all of them): the trunk
    (`features.`), the RPN (`rpn.`) or the detection head (the rest)."""
    def part(name):
        return 'trunk' if name.startswith('features.') else 'rpn' if name.startswith('rpn.') else 'head'
    allowed = {None: ('trunk', 'rpn', 'head'), 0: ('trunk', 'rpn'), 1: ('trunk', 'head'),
               2: ('rpn',), 3: ('head',)}[k]
    for n, p in named_params:
        p.requires_grad = part(n) in allowed


def reset_optimizer(optimizer):
    """Empty every buffer of the optimiser (SGD's momentum, Adam's moments and step count)."""
    state = optimizer.state_dict()
    for key, value in state.items():
        if isinstance(value, list):
            state[key] = [None] * len(value)
    if 'steps' in state:
        state['steps'] = 0
    optimizer.load_state_dict(state)


def enter_step(trainer, k):
    """At the start of step k: step 2 (k=1) generates the step-1 RPN's proposals (kept next to
    the checkpoints, for a resume inside step 2) and puts the trunk back to the pretrained one;
    from step 2 on, the optimiser starts afresh."""
    if k == 1:
        trainer.step1_proposals = rpn_proposals(trainer)
        if trainer.out_dir:
            save_npz(trainer.step1_proposals, trainer.proposals_path())
        trunk = {n: v for n, v in trainer.initial_state.items() if n.startswith('features.')}
        trainer.model.load_state_dict(trunk, strict=False)
    if k > 0:
        reset_optimizer(trainer.optimizer)


def rpn_proposals(trainer):
    """The current RPN's proposals (train top-N settings) for every training image, in
    original pixels, keyed by str(image index): what step 2 trains the detector on."""
    cfg, model, boxes = trainer.cfg, trainer.model, {}
    was_training = model.training
    model.eval()
    with no_grad():
        for e in progress(trainer.roidb, desc='step-1 proposals'):
            image = trainer.dataset[e['index']]['image']
            resized, _, factor = rescale(image, None, cfg.scales[0], cfg.max_size)
            logits, deltas = model.rpn(model.features(trainer.blob(resized)))
            props, _ = model.propose(logits.data, deltas.data, (*resized.shape[:2], factor),
                                     mode='train')
            boxes[str(e['index'])] = (props / np.float32(factor)).astype(np.float32)
    model.train(was_training)
    return boxes
