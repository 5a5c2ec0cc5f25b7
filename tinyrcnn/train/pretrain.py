"""Pretraining on object crops: the CPU demo's stand-in for ImageNet (Fast R-CNN, Sec. 2.2).

Fast R-CNN starts from a network that already recognises objects. The CPU demo has no ImageNet
weights for its small trunk, so it first teaches the very same network to classify crops of
the training objects (and of background) with RoI = the whole crop, then fine-tunes it for
detection. A mini-batch of crops holds 64 different objects where a detection mini-batch holds
a handful (Sec. 2.3: RoIs from one image are correlated), which is what a network trained from
scratch needs first.
"""
import time

import numpy as np

from .. import backend
from .. import boxes as bx
from .. import functional as F
from ..data.shapes import SHAPES_CLASSES, render_shapes_image
from ..data.transforms import preprocess
from ..fast_rcnn.network import FastRCNN
from ..optim import SGD, Adam
from ..seed import manual_seed
from ..tensor import Tensor
from ..utils import progress
from ..weights import save_npz
from .parts import backward_parts, usable_threads


def object_crops(dataset, size=64, per_object=4, background_per_image=3, seed=0):
    """Crops (M, size, size, 3) uint8 and labels (M,) int64: jittered boxes around every
    non-difficult object (IoU >= 0.7 with it, label = its class) and random boxes overlapping
    no object by more than 0.3 (label 0, background)."""
    from skimage.transform import resize
    rng = np.random.default_rng(seed)
    crops, labels = [], []

    def crop(image, b):
        x1, y1, x2, y2 = np.round(b).astype(int)
        patch = image[y1:y2 + 1, x1:x2 + 1]
        return (resize(patch, (size, size), order=1, anti_aliasing=False,
                       preserve_range=True) + 0.5).astype(np.uint8)

    for i in range(len(dataset)):
        item = dataset[i]
        image, H, W = item['image'], item['image'].shape[0], item['image'].shape[1]
        keep = ~np.asarray(item['difficult'], bool)
        gt, gl = item['boxes'][keep], item['labels'][keep]
        for box, label in zip(gt, gl):
            w, h = box[2] - box[0] + 1, box[3] - box[1] + 1
            found = 0
            for _ in range(20 * per_object):
                if found == per_object:
                    break
                cx = (box[0] + box[2]) / 2 + rng.normal(0, 0.08) * w
                cy = (box[1] + box[3]) / 2 + rng.normal(0, 0.08) * h
                s = np.exp(rng.normal(0, 0.1, 2))
                cand = bx.clip_boxes(np.array([[cx - s[0] * w / 2, cy - s[1] * h / 2,
                                                cx + s[0] * w / 2, cy + s[1] * h / 2]]), H, W)
                if bx.box_iou(cand, box[None])[0, 0] >= 0.7:
                    crops.append(crop(image, cand[0]))
                    labels.append(label)
                    found += 1
        found = 0
        for _ in range(50 * background_per_image):
            if found == background_per_image:
                break
            w, h = rng.uniform(0.1, 0.5) * W, rng.uniform(0.1, 0.5) * H
            x1, y1 = rng.uniform(0, W - w), rng.uniform(0, H - h)
            cand = np.array([[x1, y1, x1 + w - 1, y1 + h - 1]])
            if len(gt) == 0 or bx.box_iou(cand, gt).max() < 0.3:
                crops.append(crop(image, cand[0]))
                labels.append(0)
                found += 1
    return np.stack(crops), np.asarray(labels, np.int64)


def pretrain_on_crops(model, crops, labels, optimizer, iterations=300, batch=64, source='tiny',
                      seed=0, device='cpu', show_progress=True, threads=1):
    """Train `model` (a FastRCNN or FasterRCNN) to classify crops: each crop is one image and
    its RoI is the whole crop, so the same trunk, RoI pooling and head are trained as in
    detection, with the log loss only. threads > 1 (CPU): the batch is computed in that many
    parts (`train.parts`), on parallel threads where `tinyrcnn.speed` is enabled. Returns the
    history of (iteration, loss, accuracy)."""
    rng = np.random.default_rng([seed, 23])
    n, size = len(crops), crops.shape[1]
    rois = np.zeros((batch, 5), np.float32)
    rois[:, 0] = np.arange(batch)
    rois[:, 3:] = size - 1                                   # [n, 0, 0, size-1, size-1]
    history = []
    steps = range(iterations)
    if show_progress:
        steps = progress(steps, desc='pretrain on crops',
                         postfix=lambda: (f'loss {np.mean([h[1] for h in history[-20:]]):.3f} '
                                          f'acc {np.mean([h[2] for h in history[-20:]]):.2f}')
                         if history else '')
    model.train()
    parts = usable_threads(model, threads, batch, device)
    for it in steps:
        manual_seed(seed * 1_000_003 + 500_000 + it)
        idx = rng.choice(n, batch, replace=n < batch)
        images = crops[idx]
        flip = rng.random(batch) < 0.5
        images[flip] = images[flip, :, ::-1]
        x = np.stack([preprocess(im, source) for im in images])          # (B, 3, size, size)
        chunks = np.array_split(np.arange(batch), parts)

        def run(model, chunk):
            feats = model.features(Tensor(backend.to_device(x[chunk], device)))
            # the RoIs (image k, the whole crop) and the labels go from the host: RoI pooling
            # and the log loss check them there; the accuracy stays on the device and is read
            # back with the loss, so that a GPU step waits for the host only once
            y = labels[idx[chunk]]
            scores, _ = model.head(feats, rois[:len(chunk)])            # Fast or Faster R-CNN
            loss = F.cross_entropy(scores, y)
            correct = Tensor((scores.data.argmax(axis=1) == backend.to_device(y, device)).mean())
            return [loss, correct], len(chunk) / batch

        loss, accuracy = backward_parts(run, chunks, model, len(chunks))
        optimizer.step()
        history.append((it + 1, loss, accuracy))
    return history


def pretrain_on_dataset(model, dataset, cfg, show_progress=True):
    """A trainer's crop pretraining, by its settings (cfg.pretrain_iterations, _batch, _crop,
    _lr): crops of the objects of `dataset`, with the optimiser of the run (Adam or SGD).
    Returns the history of (iteration, loss, accuracy)."""
    crops, labels = object_crops(dataset, cfg.pretrain_crop, seed=cfg.seed)
    params = [p for _, p in model.trainable_parameters()]
    opt = (Adam(params, lr=cfg.pretrain_lr) if cfg.optimizer == 'adam'
           else SGD(params, lr=cfg.pretrain_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay))
    return pretrain_on_crops(model, crops, labels, opt, cfg.pretrain_iterations, cfg.pretrain_batch,
                             cfg.source, cfg.seed, cfg.device, show_progress, threads=cfg.threads)


class RenderedShapes:
    """`num_images` synthetic images drawn in memory (no files), in the item format of
    `data.VOCDetection`: the pretraining set. Image i comes from the generator (seed, i), as in
    `data.make_shapes_voc`; a seed the demos do not use keeps it apart from their test images."""

    def __init__(self, num_images, seed=2026, image_size=(160, 256)):
        self.class_names = SHAPES_CLASSES
        self.items = []
        for i in range(num_images):
            rng = np.random.default_rng([seed, i])
            H, W = (int(v) for v in rng.integers(image_size[0], image_size[1] + 1, 2))
            image, objects, _ = render_shapes_image(rng, H, W)
            self.items.append(dict(
                image=image, boxes=np.array([o['box'] for o in objects], np.float32).reshape(-1, 4),
                labels=np.array([SHAPES_CLASSES.index(o['name']) + 1 for o in objects], np.int64),
                difficult=np.array([o['difficult'] for o in objects], bool)))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def pretrain_vgg_tiny(path, num_images=2000, iterations=3000, batch=64, crop=48, lr=0.001,
                      seed=2026, device='cpu', threads=2, log=print):
    """The CPU demos' stand-in for ImageNet weights (Sec. 2.2 starts from an ImageNet
    classifier): vgg-tiny with fc6/fc7 trained to classify object and background crops of
    `num_images` rendered images (`RenderedShapes`, seed 2026: none of them is a demo image),
    Adam, step decay at 3/4. Saved as a vgg-tiny state dict (its fc8 scores the 6 shapes and
    background), stored as float16 to keep the file small; `vgg_tiny(weights=path)` and
    `TrainConfig(weights=path)` read it. Returns the history of (iteration, loss, accuracy)."""
    start = time.time()
    manual_seed(seed)
    data = RenderedShapes(num_images, seed)
    crops, labels = object_crops(data, crop, seed=seed)
    log(f'pretraining set: {len(crops)} crops of {crop}x{crop} from {num_images} rendered images '
        f'({np.mean(labels > 0):.0%} objects, the rest background)')
    model = FastRCNN('vgg-tiny', len(data.class_names), freeze_stages=0).to(device)
    for m in model.classifier:
        if hasattr(m, 'p'):
            m.p = 0.0
    opt = Adam([p for _, p in model.trainable_parameters()], lr=lr)
    history = []
    first = iterations * 3 // 4                              # then the rate drops 10x
    for stage, (its, rate) in enumerate(((first, lr), (iterations - first, lr / 10))):
        opt.lr = rate
        history += [(h[0] + len(history),) + h[1:] for h in
                    pretrain_on_crops(model, crops, labels, opt, its, batch, 'tiny', seed + stage, device,
                                      threads=threads)]
    state = {f'features.{k}': v for k, v in model.features.state_dict().items()}
    for src, dst in (('classifier.0', 'classifier.0'), ('classifier.3', 'classifier.3'),
                     ('cls_score', 'classifier.6')):
        state[f'{dst}.weight'] = _param(model, f'{src}.weight')
        state[f'{dst}.bias'] = _param(model, f'{src}.bias')
    save_npz({k: np.asarray(v, np.float16) for k, v in state.items()}, path)
    acc = np.mean([h[2] for h in history[-100:]])
    log(f'wrote {path}: crop accuracy {acc:.3f} over the last 100 iterations, '
        f'{time.time() - start:.0f} s')
    return history


def _param(model, name):
    return dict(model.named_parameters())[name].numpy()
