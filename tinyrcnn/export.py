"""A trained detector on disk, Fast or Faster R-CNN: `NAME.npz` holds the weights and
`NAME.json` what the network is and how its images must be prepared (trunk, classes, scales,
preprocessing source, and for Faster R-CNN the anchors and proposal settings).

    path = export_model(trainer.model, 'runs/x/model', class_names, means, stds, cfg)
    model, info = load_model('runs/x/model')          # the right class, by info['architecture']
    detect(model, image, proposals, scales=info['scales'], max_size=info['max_size'],
           source=info['source'])

Training regresses normalised targets (Fast R-CNN, Sec. 2.3: zero mean, unit variance); the
export folds the normalisation into bbox_pred, W' = diag(stds) W and b' = stds * b + means, so
a saved model predicts raw box offsets, as the original code's snapshots do.
"""
import json
import os
import time

import numpy as np

from .checks import check_fields, choice, integer, number, numbers_list, optional, require, sizes
from .data.transforms import PREPROCESS
from .fast_rcnn.network import FastRCNN
from .faster_rcnn.network import RPN_DEFAULTS, FasterRCNN
from .utils import atomic_write
from .weights import load_into, save_npz

ARCHITECTURES = {'fast_rcnn': FastRCNN, 'faster_rcnn': FasterRCNN}
# The model the chapters and `detect` use when no other is given: the Fast R-CNN of the CPU
# demo (vgg-tiny, six shapes), weights in float16, shipped inside the package.
DEMO_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'assets', 'demo_model')
REQUIRED = ('architecture', 'trunk', 'num_classes', 'class_names', 'source', 'scales', 'max_size',
            'roi_size', 'spatial_scale')
FASTER_REQUIRED = ('anchor_scales', 'anchor_ratios', 'rpn_channels', *RPN_DEFAULTS)
RULES = {   # what a model description's values must be (`check_fields`)
    'architecture': choice(*ARCHITECTURES), 'trunk': choice('vgg16', 'vgg-tiny'),
    'num_classes': integer(1), 'source': choice(*PREPROCESS), 'scales': sizes(),
    'max_size': integer(1), 'freeze_stages': integer(0, 5), 'roi_size': sizes(),
    'spatial_scale': number(0, open_low=True), 'anchor_scales': numbers_list(),
    'anchor_ratios': numbers_list(), 'rpn_channels': optional(integer(1)),
    'train_pre_nms_top_n': integer(), 'train_post_nms_top_n': integer(),
    'test_pre_nms_top_n': integer(), 'test_post_nms_top_n': integer(),
    'rpn_nms_thresh': number(0, 1), 'rpn_min_size': number(0),
}


def check_info(info, where):
    """A model description (the JSON beside the weights) -> the same dict, or one ValueError
    naming the key, its value and what is expected."""
    if not isinstance(info, dict):
        raise ValueError(f'{where}: expected a JSON object describing a model')
    require(info, REQUIRED + (FASTER_REQUIRED if info.get('architecture') == 'faster_rcnn' else ()),
            where)
    check_fields(info, RULES, f'{where}:')
    names = info['class_names']
    if not (isinstance(names, list) and len(names) == info['num_classes']
            and all(isinstance(n, str) for n in names)):
        raise ValueError(f"{where}: class_names={names!r}: expected a list of num_classes="
                         f"{info['num_classes']} names")
    ids = info.get('category_ids')
    if ids is not None and not (isinstance(ids, list) and len(ids) == info['num_classes'] and
                                all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):
        raise ValueError(f"{where}: category_ids={ids!r}: expected a list of num_classes="
                         f"{info['num_classes']} integers")
    if len(info['roi_size']) != 2:
        raise ValueError(f"{where}: roi_size={info['roi_size']!r}: expected [height, width]")
    return info


def _base(path):
    path = os.fspath(path)
    return path[:-len(os.path.splitext(path)[1])] if path.endswith(('.npz', '.json')) else path


def export_model(model, path, class_names, means, stds, cfg, category_ids=None):
    """Save `model` as PATH.npz + PATH.json; returns the .npz path. category_ids: the COCO
    category id of each class, for a model trained on a COCO-format set (recorded, so that
    detections are written with the ids of its annotation file).

    means, stds: the (4,) target statistics the model was trained with. cfg: the training
    settings (`trunk`, `source`, `scales`, `max_size`, `freeze_stages`, and `schedule` for
    Faster R-CNN), recorded for detection and for rebuilding the network."""
    state = model.state_dict()
    K1 = model.num_classes + 1
    s = np.tile(np.asarray(stds, np.float32), K1)                      # (4(K+1),)
    m = np.tile(np.asarray(means, np.float32), K1)
    state['bbox_pred.weight'] = state['bbox_pred.weight'] * s[:, None]
    state['bbox_pred.bias'] = state['bbox_pred.bias'] * s + m
    base = _base(path)
    save_npz(state, base + '.npz')
    faster = isinstance(model, FasterRCNN)
    info = {'architecture': 'faster_rcnn' if faster else 'fast_rcnn', 'trunk': cfg.trunk,
            'num_classes': model.num_classes, 'class_names': list(class_names),
            'source': cfg.source, 'scales': list(cfg.scales), 'max_size': cfg.max_size,
            'freeze_stages': cfg.freeze_stages, 'roi_size': list(model.roi_pool.output_size),
            'spatial_scale': model.roi_pool.spatial_scale,
            'created': time.strftime('%Y-%m-%d %H:%M:%S')}
    if category_ids is not None:
        info['category_ids'] = [int(i) for i in category_ids]
    if faster:
        info.update(anchor_scales=list(model.anchor_scales), anchor_ratios=list(model.anchor_ratios),
                    rpn_channels=model.rpn_channels, schedule=getattr(cfg, 'schedule', 'joint'),
                    **model.settings)
    atomic_write(base + '.json', lambda f: f.write(json.dumps(info, indent=1).encode()))
    return base + '.npz'


def load_model(path, device='cpu'):
    """The model saved by `export_model` (PATH, PATH.npz or PATH.json), in eval mode on
    `device`, and its settings dict."""
    base = _base(path)
    if not os.path.exists(base + '.json') or not os.path.exists(base + '.npz'):
        raise FileNotFoundError(f'model not found: expected {base}.npz and {base}.json')
    with open(base + '.json') as f:
        try:
            info = json.load(f)
        except json.JSONDecodeError:
            raise ValueError(f'{base}.json is not a model description (not JSON)') from None
    check_info(info, f'{base}.json')
    architecture = info['architecture']
    args = (info['trunk'], info['num_classes'], info.get('freeze_stages', 0),
            tuple(info['roi_size']), info['spatial_scale'])
    if architecture == 'faster_rcnn':
        model = FasterRCNN(*args, anchor_scales=tuple(info['anchor_scales']),
                           anchor_ratios=tuple(info['anchor_ratios']),
                           rpn_channels=info['rpn_channels'], **{k: info[k] for k in RPN_DEFAULTS})
    else:
        model = FastRCNN(*args)
    load_into(model, base + '.npz')
    return model.to(device).eval(), info
