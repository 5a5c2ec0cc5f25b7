"""`python -m tinyrcnn demo`: the whole Fast R-CNN pipeline on synthetic data, end to end.

1. write a synthetic VOC-format data set of shapes (`data.make_shapes_voc`);
2. compute selective-search proposals for it, cached next to it;
3. train Fast R-CNN (vgg-tiny on a CPU; VGG16 at the paper's 600 px where CuPy sees a GPU);
4. evaluate on the test split with the VOC07 11-point metric, and draw pictures.

The last line printed is `mAP@0.5 (VOC07 11-point): 0.xxx`.
"""
import dataclasses
import os
import time

from . import backend
from .data import VOCDetection, make_shapes_voc
from .detect import draw_detections, evaluate_model
from .eval import format_ap_table, plot_pr_curves
from .train import TrainConfig, Trainer, load_model

# The CPU demo: a small trunk trained from scratch, the images enlarged 1.5x (shorter side 288)
# so that objects of 30-120 pixels span more than a few cells of the stride-16 feature map.
# With no ImageNet weights, the network first learns to classify crops of the training objects
# (the stand-in for Sec. 2.2's pretraining, `tinyrcnn.pretrain`), then is fine-tuned for
# detection. Adam, no dropout and no weight decay: settings for a short from-scratch run, not
# the paper's. The two images of a mini-batch train on two threads (`tinyrcnn.parallel`).
CPU_DEMO = dict(trunk='vgg-tiny', freeze_stages=0, scales=(288,), max_size=480, optimizer='adam',
                lr=0.001, weight_decay=0.0, dropout=0.0, iterations=1500, step_size=1125,
                pretrain_iterations=300, checkpoint_every=300, source='tiny', threads=2)
GPU_DEMO = dict(trunk='vgg16', freeze_stages=0, scales=(600,), max_size=1000, lr=0.003,
                iterations=6000, step_size=4500, checkpoint_every=1000, source='torchvision',
                device='cuda')
DATA = dict(num_train=1000, num_test=100)


def demo_data(out, num_train, num_test, seed=0):
    """The synthetic VOC-format data set of both demos in OUT/data: (root, trainval, test)."""
    root = make_shapes_voc(os.path.join(out, 'data'), num_train, num_test, seed=seed)
    return root, VOCDetection(root, 'trainval'), VOCDetection(root, 'test')


def save_pictures(out, test_set, detections, result, count=6):
    """PR curves and the first `count` test images with their detections, into `out`."""
    plot_pr_curves(result, os.path.join(out, 'pr_curves.png'))
    for i in range(min(count, len(test_set))):
        item = test_set[i]
        draw_detections(item['image'], detections[i], test_set.class_names,
                        os.path.join(out, 'detections', f"{item['id']}.png"), ground_truth=item)


def dataset_proposals(dataset, root, mode='fast', max_proposals=2000):
    """Selective search for a whole data set, cached in ROOT/proposals_MODE_MAX.npz."""
    from .proposals import compute_dataset_proposals
    path = os.path.join(root, f'proposals_{mode}_{max_proposals}.npz')
    return compute_dataset_proposals(dataset, path, mode, max_proposals)


def run_demo(out='out/demo', model='fast', seed=0, device=None, iterations=None,
             num_train=None, num_test=None, log=print):
    """Run the demo into folder `out`; returns the evaluation result dict."""
    if model != 'fast':
        from .faster_demo import run_faster_demo
        return run_faster_demo(out, seed=seed, device=device, iterations=iterations,
                               num_train=num_train, num_test=num_test, log=log)
    device = device or ('cuda' if backend.cuda_available() else 'cpu')
    backend.check_device(device)
    settings = dict(GPU_DEMO if device == 'cuda' else CPU_DEMO, seed=seed, device=device)
    if iterations is not None:
        settings['iterations'] = iterations
        settings['step_size'] = max(1, int(iterations * 0.75))
    cfg = TrainConfig(**settings)
    start = time.time()

    log(f'[1/4] synthetic data in {out}/data')
    root, train_set, test_set = demo_data(out, num_train or DATA['num_train'],
                                          num_test or DATA['num_test'], seed)

    log('[2/4] selective search proposals (cached)')
    train_props = dataset_proposals(train_set, root)
    test_props = dataset_proposals(test_set, root)

    log(f'[3/4] training Fast R-CNN ({cfg.trunk}, {cfg.iterations} iterations on {device})')
    trainer = Trainer(cfg, train_set, train_props, os.path.join(out, 'train'))
    trainer.run()
    model_path = trainer.export(os.path.join(out, 'model'))
    log(f'model: {model_path}; loss curve: {out}/train/loss.png')

    log('[4/4] evaluating on the test split')
    net_args = dict(scales=cfg.scales, max_size=cfg.max_size, source=cfg.source)
    # the exported model predicts raw offsets (the trainer's own still predicts normalised ones)
    net, _ = load_model(model_path, device)
    result, detections, spi = evaluate_model(net, test_set, test_props, **net_args)
    log(format_ap_table(result))
    save_pictures(out, test_set, detections, result)
    log(f'detection: {spi * 1000:.0f} ms per image (proposals excluded); '
        f'total demo time {time.time() - start:.0f} s; pictures in {out}')
    log(f"mAP@0.5 (VOC07 11-point): {result['map']:.3f}")
    return result


def demo_settings(device='cpu'):
    return dataclasses.asdict(TrainConfig(**(GPU_DEMO if device == 'cuda' else CPU_DEMO)))
