"""Faster R-CNN's two ways of sharing the trunk (Ren et al., NIPS 2015, Sec. 3.2), in small CPU runs.

    python notebooks/runs/faster_schedules.py [--out notebooks/runs/faster_schedules.json]
                                              [--iterations 240] [--work DIR] [--smoke]

writes the JSON that chapter 11 (`notebooks/11_faster_results.py`) reads. One small shapes set
and one crop-pretrained vgg-tiny trunk (the CPU demos' stand-in for ImageNet weights,
`train.pretrain.pretrain_vgg_tiny`) are made once (cached in --work); then two Faster R-CNN
runs start from that same trunk, with the same settings, seed and number of iterations:

  joint        approximate joint training (Sec. 3.2 (ii)): RPN loss + head loss in every step
  alternating  the 4-step schedule (Sec. 3.2 (i), `train.alternating`): RPN, then a detector
               on the step-1 proposals from the pretrained trunk, then the RPN's own layers and
               the head's own layers on the fixed shared trunk; 2/6, 1/6, 2/6, 1/6 of the
               iterations

Each is tested on the same test images: VOC07 mAP (RPN proposals, the model's test top-N) and
the recall of its RPN proposals at IoU 0.5 and 0.7. The JSON keeps the settings, each run's
training wall time and per-iteration losses, the CPU, the date and the command. The paper's
schedules differ in length too (the released code: 80k/40k/80k/40k alternating iterations
against 70k joint ones); here both get the same number, so their times compare the cost of an
iteration, not of a recipe. About 6-10 minutes on 2 shared CPU cores.
"""
import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import tinyrcnn.speed  # noqa: E402
from tinyrcnn import boxes as bx  # noqa: E402
from tinyrcnn.data import VOCDetection, make_shapes_voc  # noqa: E402
from tinyrcnn.demo import CPU_FASTER_DEMO  # noqa: E402
from tinyrcnn.export import load_model  # noqa: E402
from tinyrcnn.eval import evaluate_voc  # noqa: E402
from tinyrcnn.fast_rcnn.detect import im_detect, postprocess  # noqa: E402
from tinyrcnn.train import FasterRCNNTrainer, FasterTrainConfig  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from design_evaluations import cpu_model, git_commit  # noqa: E402  (the sibling runner's)
from tinyrcnn.train.alternating import boundaries  # noqa: E402
from tinyrcnn.train.pretrain import pretrain_vgg_tiny  # noqa: E402

DATA = dict(num_train=300, num_test=50, seed=1, image_size=(160, 256))   # seed 1: not the demo's set
PRETRAIN = dict(num_images=200, iterations=200, batch=64, crop=48, lr=0.001, seed=2026)
# the CPU Faster demo's settings (tinyrcnn/demo.py), shorter, from the shared pretrained trunk
TRAIN = dict(CPU_FASTER_DEMO, pretrain_iterations=0, checkpoint_every=100000)
SCHEDULES = ('joint', 'alternating')
LOSS_NAMES = ('total', 'rpn_cls', 'rpn_loc', 'cls', 'loc')


def test(model, dataset, info, thresholds=(0.5, 0.7)):
    """One `im_detect` pass per test image: VOC07 mAP of the detections (`postprocess`, as
    `detect`) and the recall of the RPN's proposals (the model's test top-N) over the
    non-difficult objects. -> (evaluate_voc's result, {'recall@t': ...}, seconds per image)."""
    found, total, detections, truths = np.zeros(len(thresholds)), 0, [], []
    start = time.time()
    for i in range(len(dataset)):
        item, gt = dataset[i], dataset.annotation(i)
        scores, boxes, props = im_detect(model, item['image'], None, tuple(info['scales']),
                                         info['max_size'], info['source'])
        detections.append(postprocess(scores, boxes))
        truths.append(dict(boxes=gt['boxes'], labels=gt['labels'], difficult=gt['difficult']))
        g = np.asarray(gt['boxes'], np.float32)[~np.asarray(gt['difficult'], bool)]
        total += len(g)
        if len(g) and len(props):
            best = bx.box_iou(g, props).max(axis=1)
            found += [(best >= t).sum() for t in thresholds]
    seconds = (time.time() - start) / max(len(dataset), 1)
    recall = {f'recall@{t}': round(float(f / max(total, 1)), 4) for t, f in zip(thresholds, found)}
    return evaluate_voc(detections, truths, dataset.class_names), recall, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=os.path.join(ROOT, 'notebooks', 'runs', 'faster_schedules.json'))
    parser.add_argument('--iterations', type=int, default=240, help='of each run (a multiple of 6)')
    parser.add_argument('--work', default=os.path.join(tempfile.gettempdir(), 'tinyrcnn-faster-schedules'),
                        help='scratch folder: data, the pretrained trunk, the models')
    parser.add_argument('--smoke', action='store_true', help='tiny sizes, to check the script runs')
    args = parser.parse_args(argv)
    tinyrcnn.speed.enable()
    data, pretrain, iterations = dict(DATA), dict(PRETRAIN), args.iterations
    if args.smoke:
        data.update(num_train=8, num_test=4)
        pretrain.update(num_images=10, iterations=4)
        iterations = 12
    start_all = time.time()
    load = [os.getloadavg()[0]]               # other processes share the CPU: recorded
    os.makedirs(args.work, exist_ok=True)
    log = lambda *a: print(f'[{time.time() - start_all:6.0f} s]', *a, flush=True)  # noqa: E731

    # 1. data and the pretrained trunk: once, shared by both runs
    tag = f"{data['num_train']}_{data['num_test']}_{data['seed']}"
    root = make_shapes_voc(os.path.join(args.work, f'data_{tag}'), data['num_train'], data['num_test'],
                           seed=data['seed'], image_size=data['image_size'])
    train_set, test_set = VOCDetection(root, 'trainval'), VOCDetection(root, 'test')
    weights = os.path.join(args.work, f"vgg_tiny_crops_{pretrain['num_images']}_{pretrain['iterations']}.npz")
    t = time.time()
    cached = os.path.exists(weights)          # e.g. left by an earlier run in the same --work
    if not cached:
        pretrain_vgg_tiny(weights, threads=2, log=log, **pretrain)
    pretrain_seconds = time.time() - t
    log(f'{len(train_set)} training and {len(test_set)} test images; pretrained trunk {weights}')

    # 2. the two runs
    runs = {}
    for schedule in SCHEDULES:
        cfg = FasterTrainConfig(**dict(TRAIN, weights=weights, iterations=iterations,
                                       step_size=max(1, iterations * 3 // 4), schedule=schedule))
        t = time.time()
        trainer = FasterRCNNTrainer(cfg, train_set, out_dir=None)
        trainer.run(show_progress=False)
        train_seconds = time.time() - t
        path = trainer.export(os.path.join(args.work, 'models', schedule))
        model, info = load_model(path)
        t = time.time()
        result, recall, seconds_per_image = test(model, test_set, info)
        test_seconds = time.time() - t
        history = np.array(trainer.history, np.float64)               # (iterations, 6)
        runs[schedule] = dict(
            map=round(float(result['map']), 4),
            ap={k: None if np.isnan(v) else round(float(v), 4) for k, v in result['ap'].items()},
            rpn=recall, train_seconds=round(train_seconds, 1), test_seconds=round(test_seconds, 1),
            detect_seconds_per_image=round(float(seconds_per_image), 4),
            step_boundaries=boundaries(cfg) if schedule == 'alternating' else None,
            final_loss={n: round(float(v), 4) for n, v in
                        zip(LOSS_NAMES, history[-20:, 1:].mean(axis=0))},
            losses={n: [round(float(v), 4) for v in history[:, j + 1]] for j, n in enumerate(LOSS_NAMES)})
        load.append(os.getloadavg()[0])
        log(f"{schedule}: mAP {result['map']:.3f}, RPN {recall}, {train_seconds:.0f} s training")

    wall = time.time() - start_all
    settings = dict(TRAIN, weights=None, iterations=iterations, step_size=max(1, iterations * 3 // 4))
    out = dict(
        command='python notebooks/runs/faster_schedules.py' + (' ' + ' '.join(argv or sys.argv[1:])
                                                               if (argv or sys.argv[1:]) else ''),
        created=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        cpu=cpu_model(), cpu_count=os.cpu_count(), python=platform.python_version(),
        numpy=np.__version__, git_commit=git_commit(), wall_seconds=round(wall, 1),
        load_average_1min=dict(start=load[0], **dict(zip(SCHEDULES, load[1:]))),
        pretrain_seconds=round(pretrain_seconds, 1), pretrained_trunk_cached=cached,
        settings=dict(data=data, pretrain=pretrain,
                      train={k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()},
                      config_defaults_changed=sorted(
                          k for k, v in settings.items()
                          if k in dataclasses.asdict(FasterTrainConfig()) and
                          dataclasses.asdict(FasterTrainConfig())[k] != (tuple(v) if isinstance(v, list) else v))),
        runs=runs)
    with open(args.out, 'w') as f:
        json.dump(out, f, indent=1)
    log(f'wrote {args.out} ({wall:.0f} s)')
    return out


if __name__ == '__main__':
    main()
