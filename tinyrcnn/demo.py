"""`python -m tinyrcnn demo [--model fast|faster]`: a whole detector, end to end, on synthetic data.

1. write a synthetic VOC-format data set of shapes (`data.make_shapes_voc`);
2. Fast R-CNN: compute selective-search proposals for it, cached next to it; Faster R-CNN has
   none to compute (its RPN proposes), which affords it more training images;
3. fine-tune the shipped crop-pretrained vgg-tiny (`assets/vgg_tiny_shapes.npz`) for detection
   (on the GPU where CuPy sees one, the same recipe);
4. evaluate on the test split with the VOC07 11-point metric, and draw pictures. Faster R-CNN
   then times its detection against selective search + Fast R-CNN with the same network
   (Sec. 4: proposals become nearly free).

It prints the time of each phase; the last line is `mAP@0.5 (VOC07 11-point): 0.xxx`.
"""
import dataclasses
import hashlib
import json
import os
import time

import numpy as np

from . import backend, speed
from .data import VOCDetection, make_shapes_voc
from .eval import format_ap_table
from .export import load_model
from .fast_rcnn.detect import detect, evaluate
from .proposals import dataset_proposals, selective_search
from .train import FasterTrainConfig, TrainConfig, make_trainer
from .viz import draw_detections, plot_pr_curves

# The CPU demos: a small trunk, and a demo of three to five minutes on two cores. Sec. 2.2 starts
# from an ImageNet classifier; the small trunk's stand-in is shipped: vgg-tiny with fc6/fc7
# trained to classify crops of shapes in 2000 rendered images that are not demo images
# (`assets/vgg_tiny_shapes.npz`, made by `python -m tinyrcnn pretrain --out PRETRAINED`, 8
# to 10 minutes on two cores; `train.pretrain.pretrain_vgg_tiny`). The demo fine-tunes it for
# detection, with a new classifier and box regressor as in Sec. 2.2. Adam, no dropout and no
# weight decay: settings for a short run, not the papers'. The two images of a mini-batch are
# computed as two parts, on two threads (`train.parts`, `tinyrcnn.speed`).
# Fast R-CNN: the images enlarged 1.5x (shorter side 288) so that objects of 30-120 pixels span
# more than a few cells of the stride-16 feature map.
PRETRAINED = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'assets',
                          'vgg_tiny_shapes.npz')
CPU_DEMO = dict(trunk='vgg-tiny', weights=PRETRAINED, freeze_stages=0, scales=(288,), max_size=480,
                optimizer='adam', lr=0.001, weight_decay=0.0, dropout=0.0, iterations=1000,
                step_size=750, checkpoint_every=250, source='tiny', threads=2)
# The GPU demos run the very same recipe on the GPU (one part per step: `train.parts` splits
# only on the CPU), so their mAP answers to the CPU's. A VGG16 trained from scratch with the
# default uniform initialisation and no pretraining would hardly learn in a demo's length: at
# that initialisation conv5_3's input-dependent signal is about 3e-4 of its spread.
GPU_DEMO = dict(CPU_DEMO, device='cuda')
# Faster R-CNN: the images' own scale (shorter side 192), anchors of 32, 64 and 128 pixels for
# objects of 30-120 pixels (scales 2, 4, 8 of the 16-pixel cell). Such a map has only ~1700
# anchors, so fewer boxes go through NMS (600/300 before/after it in training, 1000/100 at test)
# than the paper's 12000/2000 and 6000/300: 300 proposals are plenty to sample 128 RoIs from,
# and 100 per test image suffice for at most four objects (Sec. 4.1: 100 close to 300). Two
# images per iteration, where the paper uses one.
CPU_FASTER_DEMO = dict(trunk='vgg-tiny', weights=PRETRAINED, freeze_stages=0, scales=(192,),
                       max_size=320, optimizer='adam', lr=0.001, weight_decay=0.0, dropout=0.0,
                       iterations=1500, step_size=1125, checkpoint_every=250, source='tiny',
                       anchor_scales=(2, 4, 8), train_pre_nms_top_n=600,
                       train_post_nms_top_n=300, test_pre_nms_top_n=1000, test_post_nms_top_n=100,
                       ims_per_batch=2, threads=2)
GPU_FASTER_DEMO = dict(CPU_FASTER_DEMO, device='cuda')

# Fast R-CNN's training images get selective search's 'single' strategy (one hierarchy, about
# 60 boxes per demo image, under half the time of 'fast'), its test images the 'fast' mode
# (8 hierarchies, about 400 boxes): 'fast' on the training images too would add about 25 s with
# the felzenszwalb speed path (70 s without). In one comparison (seed 0, 1000 iterations) the
# cheaper training boxes cost 0.02 mAP: 0.818 against 0.838.
DEMOS = {  # model -> (settings class, CPU settings, GPU settings, data set and proposals)
    'fast': (TrainConfig, CPU_DEMO, GPU_DEMO,
             dict(num_train=1000, num_test=100, train_proposals='single', test_proposals='fast')),
    'faster': (FasterTrainConfig, CPU_FASTER_DEMO, GPU_FASTER_DEMO, dict(num_train=1200, num_test=100)),
}
DATA = DEMOS['fast'][3]            # the Fast R-CNN demo's data set (chapters 6 and 7 redraw it)
SPEED_IMAGES = 5                   # test images timed with selective search (slow on a CPU)


def demo_settings(device='cpu', model='fast'):
    """The demo's training settings (a dict of the settings class's fields)."""
    config, cpu, gpu, _ = DEMOS[model]
    return dataclasses.asdict(config(**(gpu if device == 'cuda' else cpu)))


def demo_data(out, num_train, num_test, seed=0):
    """The synthetic VOC-format data set of the demos in OUT/data: (root, trainval, test)."""
    root = make_shapes_voc(os.path.join(out, 'data'), num_train, num_test, seed=seed)
    return root, VOCDetection(root, 'trainval'), VOCDetection(root, 'test')


def save_pictures(out, test_set, detections, result, count=6):
    """PR curves and the first `count` test images with their detections, into `out`."""
    plot_pr_curves(result, os.path.join(out, 'pr_curves.png'))
    for i in range(min(count, len(test_set))):
        item = test_set[i]
        draw_detections(item['image'], detections[i], test_set.class_names,
                        os.path.join(out, 'detections', f"{item['id']}.png"), ground_truth=item)


def compare_speed(model, dataset, n, net_args):
    """Seconds per image over the first n images of `dataset`: the model with its RPN
    ('faster'), and selective search ('selective_search') + the same network ('fast_net')."""
    t = dict(faster=0.0, selective_search=0.0, fast_net=0.0)
    n = min(n, len(dataset))
    for i in range(n):
        image = dataset[i]['image']
        start = time.perf_counter()
        detect(model, image, None, **net_args)
        t['faster'] += time.perf_counter() - start
        start = time.perf_counter()
        boxes = selective_search(image, 'fast')
        t['selective_search'] += time.perf_counter() - start
        start = time.perf_counter()
        detect(model, image, boxes, **net_args)
        t['fast_net'] += time.perf_counter() - start
    return {k: v / max(n, 1) for k, v in t.items()}


def run_demo(out='out/demo', model='fast', seed=0, device=None, iterations=None,
             num_train=None, num_test=None, log=print, overrides=None):
    """Run the demo of `model` ('fast' or 'faster') into folder `out`; returns the evaluation
    result dict. Turns the CPU speed paths on (`tinyrcnn.speed`). `overrides` replaces some of
    the demo's training settings (the tests shrink it with them)."""
    if model not in DEMOS:
        raise ValueError(f"model must be 'fast' or 'faster', got {model!r}")
    speed.enable()
    device = device or ('cuda' if backend.cuda_available() else 'cpu')
    backend.check_device(device)
    config, cpu, gpu, data = DEMOS[model]
    settings = dict(gpu if device == 'cuda' else cpu, seed=seed, device=device, **(overrides or {}))
    if iterations is not None:
        settings['iterations'] = iterations
        settings['step_size'] = max(1, int(iterations * 0.75))
    cfg = config(**settings)
    name = 'Fast R-CNN' if model == 'fast' else 'Faster R-CNN'
    start = time.time()
    phases = {}                                     # phase -> seconds, the time breakdown

    def phase_done(name, since):
        now = time.time()
        phases[name] = now - since
        return now

    log(f'[1/4] synthetic data in {out}/data')
    root, train_set, test_set = demo_data(out, num_train or data['num_train'],
                                          num_test or data['num_test'], seed)
    mark = phase_done('data', start)
    train_props = test_props = None
    if model == 'fast':
        log('[2/4] selective search proposals (cached)')
        train_props = dataset_proposals(train_set, root, data['train_proposals'])
        test_props = dataset_proposals(test_set, root, data['test_proposals'])
        mark = phase_done('proposals', mark)
    else:
        log('[2/4] no proposals to compute: the RPN makes its own')

    start_from = f'the weights {os.path.basename(cfg.weights)}' if cfg.weights else 'scratch'
    if cfg.pretrain_iterations:
        start_from += f' and {cfg.pretrain_iterations} iterations on object crops'
    log(f'[3/4] training {name} ({cfg.trunk} from {start_from}, then {cfg.iterations} iterations '
        f'of {cfg.ims_per_batch} image(s) on {device})')
    trainer = make_trainer(cfg, train_set, os.path.join(out, 'train'), proposals=train_props)
    if cfg.pretrain_iterations > 0:
        trainer.pretrain()
        mark = phase_done('crop pretraining', mark)
    trainer.run()
    model_path = trainer.export(os.path.join(out, 'model'))
    mark = phase_done('training', mark)
    log(f'model: {model_path}; loss curve: {out}/train/loss.png')

    log('[4/4] evaluating on the test split')
    net_args = dict(scales=cfg.scales, max_size=cfg.max_size, source=cfg.source)
    # the exported model predicts raw offsets (the trainer's own still predicts normalised ones)
    net, _ = load_model(model_path, device)
    result, detections, spi = evaluate(net, test_set, test_props, **net_args)
    log(format_ap_table(result))
    save_pictures(out, test_set, detections, result)
    phase_done('evaluation', mark)
    demo_time = time.time() - start
    which = 'proposals excluded' if model == 'fast' else 'proposals included'
    log(f'detection: {spi * 1000:.0f} ms per image ({which}); pictures in {out}')
    log(f'demo time {demo_time:.0f} s: ' + ', '.join(f'{k} {v:.0f} s' for k, v in phases.items()))
    if model == 'faster':
        t = compare_speed(net, test_set, SPEED_IMAGES, net_args)
        fast_total = t['selective_search'] + t['fast_net']
        log(f"Fast R-CNN + selective search: {fast_total * 1000:.0f} ms per image (selective "
            f"search {t['selective_search'] * 1000:.0f} ms, network {t['fast_net'] * 1000:.0f} ms); "
            f"Faster R-CNN (RPN proposals): {t['faster'] * 1000:.0f} ms per image, "
            f"{fast_total / max(t['faster'], 1e-9):.1f}x faster")
    log(f"mAP@0.5 (VOC07 11-point): {result['map']:.3f}")
    return result


def _sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def _arguments(args):
    """run_demo's arguments with its defaults filled in, and the recipe they stand for (the
    demo's settings on that device, its data set and proposals: a seed trained before the
    recipe changed is not taken for one of it), as JSON has them (lists, not tuples)."""
    defaults = dict(device=None, iterations=None, num_train=None, num_test=None, overrides=None)
    args = dict(defaults, **args)
    device = args['device'] or ('cuda' if backend.cuda_available() else 'cpu')
    settings = demo_settings(device, args['model'])
    settings['weights'] = settings['weights'] and os.path.basename(settings['weights'])
    recipe = dict(settings=settings, data=DEMOS[args['model']][3])
    return json.loads(json.dumps(dict(args, recipe=recipe)))


def run_seeds(out='out/demo', seeds=(0, 1, 2), model='fast', log=print, **demo_args):
    """The demo once per seed, into OUT/seed_S, and the mean and spread of its mAP.

    A seed draws the synthetic data set, the initial weights and the order of the mini-batches,
    so the spread is that of the whole recipe, not of one of them. Each finished seed leaves
    OUT/seed_S/result.json; a rerun with the same arguments and recipe reuses it instead of
    training again (an interrupted `--seeds` run loses only the seed it was on). Writes
    OUT/seeds.json and returns its content: the rows (seed, mAP, seconds, sha256 of the
    weights), the mean and the sample standard deviation (ddof=1) of the mAP."""
    rows = []
    for seed in seeds:
        folder = os.path.join(out, f'seed_{seed}')
        path = os.path.join(folder, 'result.json')
        key = _arguments(dict(demo_args, model=model, seed=seed))
        row = None
        if os.path.exists(path):
            with open(path) as f:
                row = json.load(f)
            if row.get('arguments') != key:
                row = None                       # made with other arguments: run it again
            else:
                log(f'seed {seed}: reusing {path}')
        if row is None:
            start = time.time()
            result = run_demo(folder, model=model, seed=seed, log=log, **demo_args)
            row = dict(arguments=key, seed=seed, map=float(result['map']),
                       seconds=round(time.time() - start, 1),
                       weights_sha256=_sha256(os.path.join(folder, 'model.npz')))
            with open(path + '.tmp', 'w') as f:
                json.dump(row, f, indent=1)
            os.replace(path + '.tmp', path)
        rows.append(row)
    maps = np.array([r['map'] for r in rows])
    summary = dict(model=model, rows=rows, mean=float(maps.mean()),
                   std=float(maps.std(ddof=1)) if len(maps) > 1 else 0.0)
    with open(os.path.join(out, 'seeds.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    log(format_seed_table(summary))
    return summary


def format_seed_table(summary):
    """The per-seed mAPs and their mean +- standard deviation as a Markdown table."""
    lines = ['| seed | mAP@0.5 | seconds |', '| --- | --- | --- |']
    lines += [f"| {r['seed']} | {r['map']:.3f} | {r['seconds']:.0f} |" for r in summary['rows']]
    lines.append(f"| mean +- std ({len(summary['rows'])} seeds) | {summary['mean']:.3f} +- "
                 f"{summary['std']:.3f} | |")
    return '\n'.join(lines)
