"""Rows for detection per image (Fast R-CNN Sec. 3, Faster R-CNN Sec. 3 and Table 5): the
whole `detect` call on one image, from uint8 pixels to the final boxes, for both detectors.

Fast R-CNN gets 2000 given proposals (what selective search gives a VOC image; their cost is
not counted here, see --only selective_search); Faster R-CNN makes its own with the RPN (6000
boxes before NMS, 300 after, the test settings). The weights are random (seed 0): the time of
the network and of NMS does not depend on them, though the number of boxes that pass the
score threshold does. There is no reference beside these rows: torchvision's detectors are
other networks. On a GPU each row also gives the most memory CuPy's pool held.
"""
import numpy as np

from .. import backend
from ..boxes import random_clustered_boxes
from ..fast_rcnn.detect import detect
from ..fast_rcnn.network import FastRCNN
from ..faster_rcnn.network import FasterRCNN
from ..seed import manual_seed
from .common import timeit

PROPOSALS = 2000


def bench_detect(device='cpu', trunk='vgg16', image_size=(375, 500), scale=600, repeats=3,
                 num_classes=20):
    """Seconds per image of `detect` for a Fast R-CNN (given proposals) and a Faster R-CNN of
    `trunk`, on a random `image_size` (H, W) image scaled to shorter side `scale`.
    Returns [(label, seconds, None)] * 2."""
    H, W = image_size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    proposals, _ = random_clustered_boxes(PROPOSALS, height=H, width=W, seed=0)
    pool = backend._cupy().get_default_memory_pool() if device == 'cuda' else None
    rows = []
    for name, make, given in (('Fast R-CNN', FastRCNN, proposals), ('Faster R-CNN', FasterRCNN, None)):
        manual_seed(0)
        model = make(trunk, num_classes).to(device).eval()
        if pool is not None:
            pool.free_all_blocks()
        seconds = timeit(lambda: detect(model, image, given, scales=(scale,)), device, repeats)
        what = f'{PROPOSALS} proposals' if given is not None else 'RPN proposals'
        memory = f'; GPU pool {pool.total_bytes() / 2**20:.0f} MB' if pool is not None else ''
        rows.append((f'{name} detect per image, {trunk}, {what}, {H}x{W} at {scale} '
                     f'({device}){memory}', seconds, None))
        model = None                          # freed before the next row is built
    return rows
