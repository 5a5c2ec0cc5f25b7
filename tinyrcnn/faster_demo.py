"""`python -m tinyrcnn demo --model faster`: Faster R-CNN end to end on synthetic data.

1. write the synthetic VOC-format data set of shapes (`data.make_shapes_voc`, as the Fast
   R-CNN demo; with no proposals to precompute it affords more training images);
2. train Faster R-CNN with approximate joint training (no selective search anywhere), after
   the same crop pretraining as the Fast R-CNN demo (`tinyrcnn.pretrain`: the paper starts
   from an ImageNet classifier, Sec. 3.2, which a CPU demo cannot download);
3. evaluate on the test split with the VOC07 11-point metric, and draw pictures;
4. time detection against Fast R-CNN with selective search: the same trained network scores
   selective-search boxes instead of its RPN's (Sec. 4: proposals become nearly free).

The last line printed is `mAP@0.5 (VOC07 11-point): 0.xxx`.
"""
import dataclasses
import os
import time

from . import backend
from .demo import demo_data, save_pictures
from .eval import format_ap_table
from .models.faster_rcnn import evaluate_faster
from .train_faster import FasterTrainConfig, FasterTrainer, load_faster_model

# The CPU demo: vgg-tiny at the images' own scale (shorter side 192), anchors of 32, 64 and 128
# pixels for objects of 30-120 pixels (scales 2, 4, 8 of the 16-pixel cell). Such a map has only
# ~1700 anchors, so fewer boxes go through NMS (600/300 before/after it in training, 1000/100 at
# test) than the paper's 12000/2000 and 6000/300: 300 proposals are plenty to sample 128 RoIs
# from, and 100 per test image suffice for at most four objects (Sec. 4.1: 100 close to 300).
# Adam without dropout or weight decay (not the paper's SGD) gets furthest in a CPU's minutes.
# Two images per iteration, one per thread (`tinyrcnn.parallel`), where the paper uses one.
CPU_FASTER_DEMO = dict(trunk='vgg-tiny', freeze_stages=0, scales=(192,), max_size=320,
                       optimizer='adam', lr=0.001, weight_decay=0.0, dropout=0.0,
                       iterations=2600, step_size=1950, checkpoint_every=300, source='tiny',
                       anchor_scales=(2, 4, 8), train_pre_nms_top_n=600,
                       train_post_nms_top_n=300, test_pre_nms_top_n=1000, test_post_nms_top_n=100,
                       pretrain_iterations=300, ims_per_batch=2, threads=2)
# The GPU demo: VGG16 at 600 pixels, objects of ~90-360 pixels, anchors 64-256 (not tuned).
GPU_FASTER_DEMO = dict(trunk='vgg16', freeze_stages=0, scales=(600,), max_size=1000, lr=0.003,
                       iterations=8000, step_size=6000, checkpoint_every=1000,
                       source='torchvision', anchor_scales=(4, 8, 16), device='cuda')
FASTER_DATA = dict(num_train=1200, num_test=100)
SPEED_IMAGES = 5       # test images timed with selective search (about a second each on a CPU)


def compare_speed(model, dataset, n, net_args):
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
    start = time.time()

    log(f'[1/4] synthetic data in {out}/data')
    _, train_set, test_set = demo_data(out, num_train or FASTER_DATA['num_train'],
                                       num_test or FASTER_DATA['num_test'], seed)

    cfg = FasterTrainConfig(**settings)
    log(f'[2/4] training Faster R-CNN ({cfg.trunk}, {cfg.schedule}, {cfg.pretrain_iterations} '
        f'iterations on object crops, then {cfg.iterations} of {cfg.ims_per_batch} image(s) on '
        f'{device}; no selective search)')
    trainer = FasterTrainer(cfg, train_set, os.path.join(out, 'train'))
    trainer.run()
    model_path = trainer.export(os.path.join(out, 'model'))
    log(f'model: {model_path}; loss curve: {out}/train/loss.png')

    log('[3/4] evaluating on the test split (RPN proposals)')
    net_args = dict(scale=cfg.scales[0], max_size=cfg.max_size, source=cfg.source)
    net, _ = load_faster_model(model_path, device)
    result, detections, spi = evaluate_faster(net, test_set, **net_args)
    log(format_ap_table(result))
    save_pictures(out, test_set, detections, result)
    demo_time = time.time() - start

    log(f'[4/4] detection speed on {min(SPEED_IMAGES, len(test_set))} test images')
    t = compare_speed(net, test_set, SPEED_IMAGES, net_args)
    fast_total = t['selective_search'] + t['fast_net']
    log(f"Fast R-CNN + selective search: {fast_total * 1000:.0f} ms per image (selective search "
        f"{t['selective_search'] * 1000:.0f} ms, network {t['fast_net'] * 1000:.0f} ms)")
    log(f"Faster R-CNN (RPN proposals): {t['faster'] * 1000:.0f} ms per image, "
        f"{fast_total / max(t['faster'], 1e-9):.1f}x faster")
    log(f'detection: {spi * 1000:.0f} ms per image over the test split (proposals included); '
        f'demo time {demo_time:.0f} s, {time.time() - start:.0f} s with the speed comparison; '
        f'pictures in {out}')
    log(f"mAP@0.5 (VOC07 11-point): {result['map']:.3f}")
    return result


def faster_demo_settings(device='cpu'):
    return dataclasses.asdict(FasterTrainConfig(**(GPU_FASTER_DEMO if device == 'cuda' else CPU_FASTER_DEMO)))
