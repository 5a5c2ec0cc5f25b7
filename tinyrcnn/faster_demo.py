"""`python -m tinyrcnn demo --model faster`: Faster R-CNN end to end on synthetic data.

1. write the synthetic VOC-format data set of shapes (the same as the Fast R-CNN demo's);
2. train Faster R-CNN with approximate joint training (no selective search anywhere);
3. evaluate on the test split with the VOC07 11-point metric, and draw pictures;
4. time detection against Fast R-CNN with selective search: the same trained network scores
   selective-search boxes instead of its RPN's (Sec. 4: proposals become nearly free).

The last line printed is `mAP@0.5 (VOC07 11-point): 0.xxx`.
"""
import dataclasses
import os
import time

from . import backend
from .data import VOCDetection, make_shapes_voc
from .demo import DATA
from .detect import draw_detections
from .eval import format_ap_table, plot_pr_curves
from .models.faster_rcnn import evaluate_faster
from .train_faster import FasterTrainConfig, FasterTrainer, load_faster_model

# The CPU demo: vgg-tiny from scratch at the images' own scale (shorter side 192), anchors of
# 32, 64 and 128 pixels for objects of 30-120 pixels (scales 2, 4, 8 of the 16-pixel cell).
CPU_FASTER_DEMO = dict(trunk='vgg-tiny', freeze_stages=0, scales=(192,), max_size=320, lr=0.01,
                       iterations=1600, step_size=1200, checkpoint_every=200, source='tiny',
                       anchor_scales=(2, 4, 8))
# The GPU demo: VGG16 at 600 pixels, objects of ~90-360 pixels, anchors 64-256 (not tuned).
GPU_FASTER_DEMO = dict(trunk='vgg16', freeze_stages=0, scales=(600,), max_size=1000, lr=0.003,
                       iterations=8000, step_size=6000, checkpoint_every=1000,
                       source='torchvision', anchor_scales=(4, 8, 16), device='cuda')
SPEED_IMAGES = 5       # test images timed with selective search (about a second each on a CPU)


def compare_speed(model, dataset, n, net_args, log=print):
    """Seconds per image for Faster R-CNN (`models.faster_rcnn.detect`, everything included)
    and for Fast R-CNN with selective search (`proposals.selective_search` + `detect.detect`)
    with the same network, over the first n images. Returns a dict of the three times."""
    from .detect import detect as fast_detect
    from .models.faster_rcnn import detect as faster_detect
    from .proposals import selective_search
    n = min(n, len(dataset))
    t = dict(faster=0.0, selective_search=0.0, fast_net=0.0)
    for i in range(n):
        image = dataset[i]['image']
        start = time.perf_counter()
        faster_detect(model, image, **net_args)
        t['faster'] += time.perf_counter() - start
        start = time.perf_counter()
        boxes = selective_search(image, 'fast')
        t['selective_search'] += time.perf_counter() - start
        start = time.perf_counter()
        fast_detect(model, image, boxes, scales=(net_args['scale'],),
                    max_size=net_args['max_size'], source=net_args['source'])
        t['fast_net'] += time.perf_counter() - start
    return {k: v / max(n, 1) for k, v in t.items()}


def run_faster_demo(out='out/demo_faster', seed=0, device=None, iterations=None,
                    num_train=None, num_test=None, log=print):
    """Run the Faster R-CNN demo into folder `out`; returns the evaluation result dict."""
    device = device or ('cuda' if backend.cuda_available() else 'cpu')
    backend.check_device(device)
    settings = dict(GPU_FASTER_DEMO if device == 'cuda' else CPU_FASTER_DEMO, seed=seed, device=device)
    if iterations is not None:
        settings['iterations'] = iterations
        settings['step_size'] = max(1, int(iterations * 0.75))
    cfg = FasterTrainConfig(**settings)
    start = time.time()

    log(f'[1/4] synthetic data in {out}/data')
    root = make_shapes_voc(os.path.join(out, 'data'), num_train or DATA['num_train'],
                           num_test or DATA['num_test'], seed=seed)
    train_set, test_set = VOCDetection(root, 'trainval'), VOCDetection(root, 'test')

    log(f'[2/4] training Faster R-CNN ({cfg.trunk}, {cfg.schedule}, {cfg.iterations} iterations '
        f'on {device}; no selective search)')
    trainer = FasterTrainer(cfg, train_set, os.path.join(out, 'train'))
    trainer.run()
    model_path = trainer.export(os.path.join(out, 'model'))
    log(f'model: {model_path}; loss curve: {out}/train/loss.png')

    log('[3/4] evaluating on the test split (RPN proposals)')
    net_args = dict(scale=cfg.scales[0], max_size=cfg.max_size, source=cfg.source)
    net, _ = load_faster_model(model_path, device)
    result, detections, spi = evaluate_faster(net, test_set, **net_args)
    log(format_ap_table(result))
    plot_pr_curves(result, os.path.join(out, 'pr_curves.png'))
    for i in range(min(6, len(test_set))):
        item = test_set[i]
        draw_detections(item['image'], detections[i], test_set.class_names,
                        os.path.join(out, 'detections', f"{item['id']}.png"), ground_truth=item)
    train_time = time.time() - start

    log(f'[4/4] detection speed on {min(SPEED_IMAGES, len(test_set))} test images')
    t = compare_speed(net, test_set, SPEED_IMAGES, net_args, log)
    fast_total = t['selective_search'] + t['fast_net']
    log(f"Fast R-CNN + selective search: {fast_total * 1000:.0f} ms per image (selective search "
        f"{t['selective_search'] * 1000:.0f} ms, network {t['fast_net'] * 1000:.0f} ms)")
    log(f"Faster R-CNN (RPN proposals): {t['faster'] * 1000:.0f} ms per image, "
        f"{fast_total / max(t['faster'], 1e-9):.1f}x faster")
    log(f'detection: {spi * 1000:.0f} ms per image over the test split (proposals included); '
        f'demo time {train_time:.0f} s without the speed comparison, {time.time() - start:.0f} s '
        f'in all; pictures in {out}')
    log(f"mAP@0.5 (VOC07 11-point): {result['map']:.3f}")
    return result


def faster_demo_settings(device='cpu'):
    return dataclasses.asdict(FasterTrainConfig(**(GPU_FASTER_DEMO if device == 'cuda' else CPU_FASTER_DEMO)))
