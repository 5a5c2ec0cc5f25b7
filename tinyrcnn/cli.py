"""The command line: `python -m tinyrcnn COMMAND ...` (see `python -m tinyrcnn --help`).

Bad files, paths or arguments end with one line `error: ...` on stderr and a non-zero exit
status, never a traceback.
"""
import argparse
import json
import os
import sys

import numpy as np

from . import bench, gpucheck, speed
from .backend import check_device
from .batch import default_weights, detect_files, expand_inputs, read_proposals
from .data import COCODetection, VOCDetection
from .demo import run_demo, run_seeds
from .eval import evaluate_coco, format_ap_table, format_coco_table
from .export import DEMO_MODEL, load_model
from .fast_rcnn.detect import evaluate
from .proposals import dataset_proposals
from .train import FasterTrainConfig, TrainConfig, make_trainer
from .train.checkpoint import checkpoint_files, resume_settings
from .train.pretrain import pretrain_vgg_tiny
from .viz import plot_pr_curves
from .weights import convert_weights


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise SystemExit(_fail(f'{self.prog}: {message}'))


def _fail(message):
    print(f'error: {message}', file=sys.stderr)
    return 2


def cmd_bench(args):
    check_device(args.device)
    only = args.only.split(',') if args.only else None
    bench.run(args.device, only=only, repeats=args.repeats)


def cmd_convert_weights(args):
    n = convert_weights(args.src, args.dst, float16=args.float16)
    print(f'wrote {n} arrays to {args.dst}')


def cmd_demo(args):
    if args.seeds is not None:
        if args.seeds < 1:
            raise ValueError(f'--seeds must be >= 1, got {args.seeds}')
        run_seeds(args.out, range(args.seed, args.seed + args.seeds), model=args.model,
                  device=args.device, iterations=args.iterations)
        return
    run_demo(args.out, model=args.model, seed=args.seed, device=args.device,
             iterations=args.iterations)


def cmd_pretrain(args):
    check_device(args.device)
    for name in ('images', 'iterations', 'batch', 'crop'):
        if getattr(args, name) < 1:
            raise ValueError(f'--{name} must be >= 1, got {getattr(args, name)}')
    pretrain_vgg_tiny(args.out, num_images=args.images, iterations=args.iterations,
                      batch=args.batch, crop=args.crop, seed=args.seed, device=args.device)


def _dataset(root, split):
    if not os.path.isdir(root):
        raise FileNotFoundError(f'data set folder not found: {root}')
    return VOCDetection(root, split)


def _data_args(parser, default=None):
    parser.add_argument('--data', default=default,
                        help='VOC-format root (Annotations/, JPEGImages/, ImageSets/Main/)')
    parser.add_argument('--coco-json', default=None, help='a COCO-format annotation file (instead of --data)')
    parser.add_argument('--images', default=None, help='with --coco-json: the folder of its file_names')


def _data(args, default=None):
    """The data set a command names (--data VOC_ROOT [--split], or --coco-json FILE --images
    DIR) and the folder its proposal cache lives in (the VOC root; for a COCO file, STEM_proposals
    beside it: COCO files often number their images 1..N, so two files share no cache)."""
    if args.coco_json:
        if args.data:
            raise ValueError('give either --data (a VOC folder) or --coco-json with --images, not both')
        if not args.images:
            raise ValueError('--coco-json needs --images DIR, the folder its file_names are in')
        stem = os.path.splitext(os.path.abspath(args.coco_json))[0]
        return COCODetection(args.images, args.coco_json), stem + '_proposals'
    root = args.data or default
    if not root:
        raise ValueError('give --data VOC_ROOT, or --coco-json FILE --images DIR')
    return _dataset(root, args.split), root


def _settings(pairs):
    """--set key=value pairs -> dict, values parsed as JSON where they parse."""
    out = {}
    for pair in pairs or []:
        if '=' not in pair:
            raise ValueError(f'--set expects key=value, got {pair!r}')
        k, v = pair.split('=', 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def cmd_train(args):
    given = dict(trunk=args.trunk, weights=args.weights, device=args.device, seed=args.seed,
                 iterations=args.iterations)
    given = {k: v for k, v in given.items() if v is not None}
    given.update(_settings(args.set))
    if args.resume:                      # the run's own settings, and what is given on top
        kind, saved = resume_settings(args.out, args.model)
        settings = dict(saved, **given)
    else:
        kind, settings = args.model or 'fast', dict(dict(trunk='vgg16', device='cpu', seed=0), **given)
    cfg = (FasterTrainConfig if kind == 'faster' else TrainConfig).from_dict(settings)
    if cfg.weights and not os.path.exists(cfg.weights):
        raise FileNotFoundError(f'weights file not found: {cfg.weights}')
    if not args.resume and checkpoint_files(args.out):
        raise ValueError(f'{args.out} holds the checkpoints of another run: add --resume to continue '
                         f'it, or give another --out (or remove them)')
    ds, cache_root = _data(args)
    props = None if kind == 'faster' else dataset_proposals(ds, cache_root, args.proposal_mode)
    trainer = make_trainer(cfg, ds, args.out, proposals=props)
    if args.resume:
        trainer.load_checkpoint(override=args.override)
        for _, why in trainer.resumed['skipped']:      # why names the file
            print(f'skipped {why}')
        if trainer.resumed['overridden']:
            print('settings overridden: ' + '; '.join(trainer.resumed['overridden']))
        print(f"resumed from {os.path.basename(trainer.resumed['path'])} at iteration {trainer.iteration}")
    trainer.run()
    if trainer.skipped:
        print(f'skipped {len(trainer.skipped)} batch(es) with a non-finite loss, at iterations '
              f'{trainer.skipped[:20]}')
    path = trainer.export(os.path.join(args.out, 'model'))
    print(f'model saved to {path}')


def _scales(scales, info):
    """The test scales: all of them for Fast R-CNN (several: a pyramid, Sec. 2.4); the first
    for Faster R-CNN, whose RPN proposes at one scale (as the released code tests)."""
    return tuple(scales)[:1] if info['architecture'] == 'faster_rcnn' else tuple(scales)


def cmd_test(args):
    model, info = load_model(args.weights, args.device)
    ds, cache_root = _data(args, default='out/demo/data')
    if tuple(info['class_names']) != tuple(ds.class_names):
        raise ValueError(f"the model's classes {tuple(info['class_names'])} are not the data set's "
                         f'{tuple(ds.class_names)} (same names in the same order)')
    scales = _scales(args.scales or info['scales'], info)
    # Faster R-CNN's proposals come from the network itself
    props = (None if info['architecture'] == 'faster_rcnn'
             else dataset_proposals(ds, cache_root, args.proposal_mode))
    result, dets, spi = evaluate(model, ds, props, scales=scales, max_size=info['max_size'],
                                 source=info['source'], use_07_metric=not args.area_ap)
    if args.metric == 'coco':                       # the COCO rules, on the same detections
        coco = evaluate_coco(dets, [ds.annotation(i) for i in range(len(ds))], ds.class_names)
        print(format_coco_table(coco))
        print(f'{spi * 1000:.0f} ms per image')
        print(f"AP@[.50:.95] (COCO): {coco['AP']:.3f}")
        return
    print(format_ap_table(result))
    os.makedirs(args.out, exist_ok=True)
    plot_pr_curves(result, os.path.join(args.out, 'pr_curves.png'))
    print(f'{spi * 1000:.0f} ms per image; PR curves in {args.out}/pr_curves.png')
    metric = 'VOC07 11-point' if not args.area_ap else 'area'
    print(f"mAP@0.5 ({metric}): {result['map']:.3f}")


def cmd_detect(args):
    paths = expand_inputs(args.images)
    weights = default_weights(args.weights)
    model, info = load_model(weights, args.device)
    kind = 'Faster R-CNN' if info['architecture'] == 'faster_rcnn' else 'Fast R-CNN'
    shipped = ' (the demo model shipped with tinyrcnn)' if weights == DEMO_MODEL else ''
    print(f"model {weights}{shipped}: {kind} on {info['trunk']}, knows {info['num_classes']} "
          f"classes: {', '.join(info['class_names'])}")
    props = None
    if args.proposals:
        if len(paths) > 1 or info['architecture'] == 'faster_rcnn':
            raise ValueError('--proposals is for one image and a Fast R-CNN model')
        props = read_proposals(args.proposals)
    single = len(args.images) == 1 and os.path.isfile(args.images[0]) and not (args.out and os.path.isdir(args.out))
    if single:                          # IMAGE -> IMAGE_detections.png (or --out PNG)
        pictures = [args.out or os.path.splitext(os.path.basename(paths[0]))[0] + '_detections.png']
        out_dir, json_path = None, args.json
    else:                               # many -> a folder of pictures and one JSON
        pictures, out_dir = None, args.out or 'detections'
        json_path = args.json or os.path.join(out_dir, 'detections.json')
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise ValueError(f'--out {out_dir}: a file, expected a folder for the pictures')
    if json_path and os.path.isdir(json_path):       # found before any work, not after
        raise ValueError(f'--json {json_path}: a folder, expected a file name')
    done = detect_files(model, info, paths, out_dir=out_dir, pictures=pictures, json_path=json_path,
                        threshold=args.threshold, show=args.show, proposal_mode=args.proposal_mode,
                        proposals=props, scales=_scales(info['scales'], info))
    names = info['class_names']
    if single:
        dets = done['detections'][paths[0]]
        for box, score, label in zip(dets['boxes'], dets['scores'], dets['labels']):
            if score >= args.show:
                x1, y1, x2, y2 = box
                print(f'{names[label - 1]:>12} {score:.3f}  [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]')
    seconds = done['seconds']
    counts = done['proposals']
    where = ('RPN proposals, ' if not counts else
             f"{np.mean(counts):.0f} proposals{'' if single else ' per image'} in {seconds['proposals']:.2f} s, ")
    saved = f'picture: {pictures[0]}' if single else f'pictures in {out_dir}'
    print(f"{len(done['detections'])} image(s), {len(done['results'])} detections; {where}"
          f"detection {seconds['detection']:.2f} s; {saved}" + (f'; results: {json_path}' if json_path else ''))
    if done['failed']:
        path, why = done['failed'][0]
        raise ValueError(f"{len(done['failed'])} of {len(paths)} images could not be used "
                         f'(first: {path}: {why}); the others are written')


def cmd_proposals(args):
    ds, cache_root = _data(args)
    props = dataset_proposals(ds, cache_root, args.mode, args.max_proposals, scheduler=args.scheduler)
    n = sum(len(p) for p in props.values())
    print(f'{len(props)} images, {n / max(1, len(props)):.0f} proposals per image, cached in {cache_root}')


def build_parser():
    p = _Parser(prog='python -m tinyrcnn',
                description='Fast R-CNN and Faster R-CNN from scratch on NumPy/CuPy.')
    sub = p.add_subparsers(dest='command', parser_class=_Parser)

    b = sub.add_parser('bench', help='time the hot paths (next to PyTorch where installed)')
    b.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    b.add_argument('--only', default=None, help='comma-separated subset of the benchmarks')
    b.add_argument('--repeats', type=int, default=3)
    b.set_defaults(fn=cmd_bench)

    q = sub.add_parser('pretrain', help='vgg-tiny classifier of rendered shapes (an ImageNet '
                       'stand-in) -> a weights file for train --weights')
    q.add_argument('--out', default='vgg_tiny_shapes.npz')
    q.add_argument('--images', type=int, default=2000, help='rendered images to crop objects from')
    q.add_argument('--iterations', type=int, default=3000)
    q.add_argument('--batch', type=int, default=64)
    q.add_argument('--crop', type=int, default=48, help='crop side in pixels')
    q.add_argument('--seed', type=int, default=2026, help='renders (seed, i): keep it apart from the data')
    q.add_argument('--device', default='cpu')
    q.set_defaults(fn=cmd_pretrain)

    d = sub.add_parser('demo', help='synthetic data -> train -> evaluate -> pictures')
    d.add_argument('--model', choices=['fast', 'faster'], default='fast')
    d.add_argument('--out', default='out/demo')
    d.add_argument('--seed', type=int, default=0)
    d.add_argument('--device', default=None, help="'cpu' or 'cuda' (default: cuda if available)")
    d.add_argument('--iterations', type=int, default=None, help='override the training length')
    d.add_argument('--seeds', type=int, default=None, metavar='N', help='N runs (seeds --seed.. '
                   '--seed+N-1) into OUT/seed_S; prints the mean and std of the mAP')
    d.set_defaults(fn=cmd_demo)

    t = sub.add_parser('train', help='train Fast R-CNN on a VOC-format data set')
    _data_args(t)
    t.add_argument('--split', default='trainval')
    t.add_argument('--model', choices=['fast', 'faster'], default=None,
                   help="default 'fast'; with --resume, the checkpoint's")
    t.add_argument('--trunk', default=None, choices=['vgg16', 'vgg-tiny'], help='default vgg16')
    t.add_argument('--weights', default=None, help='pretrained VGG16 (.pth or .npz)')
    t.add_argument('--iterations', type=int, default=None)
    t.add_argument('--out', default='runs/fast_rcnn')
    t.add_argument('--resume', action='store_true',
                   help="continue from OUT's newest whole checkpoint, with its settings")
    t.add_argument('--override', action='store_true',
                   help='with --resume: accept settings (or data) that differ from the checkpoint\'s')
    t.add_argument('--device', default=None, help="'cpu' (default) or 'cuda'")
    t.add_argument('--seed', type=int, default=None, help='default 0')
    t.add_argument('--proposal-mode', default='fast')
    t.add_argument('--set', nargs='*', metavar='KEY=VALUE',
                   help='any TrainConfig setting, e.g. --set lr=0.002 scales=[480,600]')
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser('test', help='evaluate a trained model (per-class AP, mAP, PR curves)')
    e.add_argument('--weights', default='out/demo/model', help='model saved by train or demo')
    _data_args(e)                        # default: out/demo/data, the demo's
    e.add_argument('--split', default='test')
    e.add_argument('--out', default='out/test')
    e.add_argument('--device', default='cpu')
    e.add_argument('--scales', type=int, nargs='*', help='test scales (several: pyramid)')
    e.add_argument('--area-ap', action='store_true', help='VOC2010+ area AP instead of 11-point')
    e.add_argument('--metric', choices=['voc', 'coco'], default='voc',
                   help='voc: AP at IoU 0.5 per class; coco: AP@[.50:.95], AP50, AP75, sizes, AR')
    e.add_argument('--proposal-mode', default='fast')
    e.set_defaults(fn=cmd_test)

    g = sub.add_parser('detect', help='detect objects in images, folders or glob patterns')
    g.add_argument('images', nargs='+', metavar='IMAGE', help="image files, folders or patterns ('*.jpg')")
    g.add_argument('--weights', default=None, help='model saved by train or demo (default: '
                   'out/demo/model where make demo wrote it, else the demo model shipped with tinyrcnn)')
    g.add_argument('--out', default=None, help='one image: the PNG to write (default: '
                   'IMAGE_detections.png); several: the folder of pictures (default: detections/)')
    g.add_argument('--json', default=None, help='COCO-results JSON to write (default with several '
                   'images: OUT/detections.json)')
    g.add_argument('--proposals', default=None, help='.npy of (P, 4) boxes (default: selective search)')
    g.add_argument('--proposal-mode', default='fast')
    g.add_argument('--threshold', type=float, default=0.05)
    g.add_argument('--show', type=float, default=0.5, help='print and draw scores above this')
    g.add_argument('--device', default='cpu')
    g.set_defaults(fn=cmd_detect)

    r = sub.add_parser('proposals', help='precompute and cache selective search for a data set')
    _data_args(r)
    r.add_argument('--split', default='trainval')
    r.add_argument('--mode', default='fast', choices=['single', 'fast', 'quality'])
    r.add_argument('--max-proposals', type=int, default=2000)
    r.add_argument('--scheduler', metavar='ADDRESS', help="run on a Dask cluster, e.g. tcp://host:8786 "
                   "(pip install 'dask[distributed]'; the data at the same path on every worker)")
    r.set_defaults(fn=cmd_proposals)

    c = sub.add_parser('convert-weights', help='convert a PyTorch state-dict file (or .npz) to .npz')
    c.add_argument('src')
    c.add_argument('dst')
    c.add_argument('--float16', action='store_true', help='store floats in half precision')
    c.set_defaults(fn=cmd_convert_weights)
    gpucheck.add_parser(sub)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, 'fn', None):
        parser.print_help()
        return 2
    speed.enable()                       # the CPU speed paths (tinyrcnn/speed)
    try:
        args.fn(args)
    except KeyboardInterrupt:
        return _fail('interrupted')
    except (ValueError, FileNotFoundError, IsADirectoryError, PermissionError, RuntimeError,
            OSError, KeyError) as e:
        message = str(e).strip().splitlines()
        return _fail(message[0] if message else type(e).__name__)
    except Exception as e:                # a bug or a library's own error: still one line
        message = str(e).strip().splitlines()
        return _fail(f"{type(e).__name__}: {message[0] if message else ''} (please report it)")
    return 0
