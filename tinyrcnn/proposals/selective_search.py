"""Selective search region proposals, after Uijlings et al., "Selective Search for Object
Recognition", IJCV 2013 (the proposals R-CNN and Fast R-CNN were trained and tested on).

Sec. 3.1, hierarchical grouping: over-segment the image (Felzenszwalb & Huttenlocher, 2004), then
repeatedly merge the two most similar *neighbouring* regions until a single region is left. Every
region ever formed -- the initial segments, every merge, the whole image -- is a hypothesis, and its
bounding box is a proposal.
Sec. 3.2, diversification: repeat the grouping in several colour spaces, from initial segmentations
of several scales k, with several combinations of the similarity terms (colour, texture, size, fill).
Sec. 3.3, combining locations: rank the union of all hierarchies by (position in the hierarchy) x RND,
keep the first copy of each box.

`compute_dataset_proposals` (cache.py) runs it over a data set and caches the boxes.
"""
import heapq

import numpy as np

from .. import backend
from ..data.image import check_image

# scipy.ndimage and skimage are imported inside the functions that use them, to keep
# `import tinyrcnn` light.

# The paper's Table 5 ("Single Strategy", "Selective Search Fast", "Selective Search Quality"):
# colour spaces, Felzenszwalb scales k, similarity sets (C colour, T texture, S size, F fill).
MODES = {
    'single': (('hsv',), (100,), ('CTSF',)),
    'fast': (('hsv', 'lab'), (50, 100), ('CTSF', 'TSF')),
    'quality': (('hsv', 'lab', 'rgi', 'h', 'i'), (50, 100, 150, 300), ('CTSF', 'TSF', 'F', 'S')),
}
COLOUR_BINS = 25       # Sec. 3.2: 25 bins per colour channel
ORIENTATIONS = 8       # Sec. 3.2: Gaussian derivatives in 8 orientations, sigma = 1 ...
TEXTURE_BINS = 10      # ... 10 bins per orientation and channel
SIGMA = 0.8            # Felzenszwalb's smoothing, as in the paper's code


def colour_space(image, name):
    """(H, W, 3) uint8 RGB -> (H, W, C) float64, every channel scaled to [0, 1].

    The [0, 1] range matters twice: the histograms bin it uniformly, and skimage's Felzenszwalb
    then uses k on the same scale as the reference code does on 0..255 values.
    """
    from skimage import color
    rgb = image.astype(np.float64) / 255
    if name == 'hsv':
        return color.rgb2hsv(rgb)
    if name == 'lab':                                   # L in [0, 100], a and b in about [-128, 127]
        return np.clip((color.rgb2lab(rgb) + [0, 128, 128]) / [100, 255, 255], 0, 1)
    if name == 'h':
        return color.rgb2hsv(rgb)[..., :1]
    intensity = rgb.mean(axis=2, keepdims=True)
    if name == 'i':
        return intensity
    if name == 'rgi':                                   # normalised r, g (shadow invariant) and intensity
        total = rgb.sum(axis=2, keepdims=True)
        rg = np.where(total > 0, rgb[..., :2] / np.maximum(total, 1e-12), 1 / 3)
        return np.concatenate([rg, intensity], axis=2)
    raise ValueError(f"unknown colour space {name!r}; expected 'hsv', 'lab', 'rgi', 'h' or 'i'")


def _colour_bins(img):
    """(H, W, C) in [0, 1] -> (H*W, C) index of each pixel's bin in the C*25-bin colour histogram."""
    H, W, C = img.shape
    bins = np.minimum((img * COLOUR_BINS).astype(np.int64), COLOUR_BINS - 1)
    return bins.reshape(H * W, C) + np.arange(C) * COLOUR_BINS


def _texture_bins(img):
    """Per-pixel texture bins of (H, W, C): the non-empty entries (pixels (M,), bins (M,)) of the
    (H*W, 8*C) table of bin indices into the C*8*10-bin texture histogram.

    Sec. 3.2 (texture similarity, a SIFT-like measure): per channel, the derivative of a Gaussian
    (sigma = 1) in 8 directions 45 degrees apart, each half-wave rectified (opposite directions
    keep the sign of the edge), binned in 10 bins from 0 to the channel's 99th percentile of
    gradient magnitude. (Binning up to the maximum lets a few strong edges push nearly every
    pixel into the first bin, and every texture histogram looks alike.) Most responses still land
    in the first bin (half of them are rectified to 0), so only the others are listed; the first
    bin's count follows from the region size.
    """
    from scipy import ndimage
    H, W, C = img.shape
    angles = np.arange(ORIENTATIONS) * (2 * np.pi / ORIENTATIONS)
    directions = np.stack([np.cos(angles), np.sin(angles)]).astype(np.float32)   # (2, 8)
    r = np.empty((H * W, C, ORIENTATIONS), dtype=np.float32)
    for c in range(C):
        gx, gy = (ndimage.gaussian_filter(img[..., c], 1.0, order=order, output=np.float32).reshape(-1, 1)
                  for order in ((0, 1), (1, 0)))                                  # (H*W, 1) each
        top = np.percentile(np.hypot(gx, gy), 99)
        dx, dy = directions * np.float32(TEXTURE_BINS / top if top > 0 else 0)
        r[:, c] = gx * dx + gy * dy                                               # (H*W, 8)
    r = r.reshape(-1)
    listed = np.flatnonzero(r >= 1)                       # the entries beyond the first bin
    bins = np.minimum(r[listed], TEXTURE_BINS - 1).astype(np.int64)   # the top 1% go to the last bin
    pixels, column = np.divmod(listed, C * ORIENTATIONS)
    return pixels, column * TEXTURE_BINS + bins


def initial_regions(labels, colour_bins, texture_bins):
    """Features of the segments of a label image (H, W), labels 0..n-1 all present.

    Returns size (n,), boxes (n, 4) inclusive [x1, y1, x2, y2], L1-normalised colour (n, 25*C)
    and texture (n, 80*C) histograms, and the neighbouring pairs (E, 2) with i < j (4-connectivity).
    Each histogram is one bincount over (label, bin) codes.
    """
    from scipy import ndimage
    n = int(labels.max()) + 1
    flat = labels.ravel()
    size = np.bincount(flat, minlength=n).astype(np.float64)
    boxes = np.array([[s[1].start, s[0].start, s[1].stop - 1, s[0].stop - 1]
                      for s in ndimage.find_objects(labels + 1)], dtype=np.float64)
    D = colour_bins.shape[1] * COLOUR_BINS
    colour = np.bincount((flat[:, None] * D + colour_bins).ravel(), minlength=n * D).reshape(n, D)
    colour = colour / colour.sum(axis=1, keepdims=True)
    pixels, bins = texture_bins
    D = colour_bins.shape[1] * ORIENTATIONS * TEXTURE_BINS
    texture = np.bincount(flat[pixels] * D + bins, minlength=n * D).reshape(n, -1, TEXTURE_BINS)
    texture[:, :, 0] = size[:, None] - texture.sum(axis=2)          # the first bin: all the rest
    texture = texture.reshape(n, D) / (size[:, None] * (D // TEXTURE_BINS))
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
    touching = a != b
    a, b = a[touching], b[touching]
    keys = np.unique(np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b))
    pairs = np.stack([keys // n, keys % n], axis=1)
    return size, boxes, colour, texture, pairs


def group(size, boxes, colour, texture, pairs, measures, image_size):
    """Sec. 3.1 hierarchical grouping with the similarity terms in `measures` (a subset of 'CTSF').

    Merged regions get size-weighted averages of the histograms (Sec. 3.2: propagated, not
    recomputed). A pair's similarity never changes while both regions live, so the heap keeps
    stale pairs and skips them when popped. Returns the boxes (2n-1, 4) in the order the regions
    were created: the n initial segments, then one region per merge, the whole image last.
    """
    n = len(size)
    total = 2 * n - 1
    S = np.zeros(total)
    S[:n] = size
    B = np.zeros((total, 4))
    B[:n] = boxes
    # colour + texture intersection == intersection of the concatenated histograms
    parts = [h for term, h in (('C', colour), ('T', texture)) if term in measures]
    hist = None
    if parts:
        hist = np.zeros((total, sum(p.shape[1] for p in parts)))
        hist[:n] = np.concatenate(parts, axis=1)
    use_size, use_fill = 'S' in measures, 'F' in measures

    def similarity(i, j):                                  # i: int or (E,), j: (E,)
        s = np.minimum(hist[i], hist[j]).sum(axis=-1) if hist is not None else np.zeros(len(j))
        if use_fill:                                       # prefer regions that fill each other's gaps
            bi, bj = B[i], B[j]
            w = np.maximum(bi[..., 2], bj[:, 2]) - np.minimum(bi[..., 0], bj[:, 0]) + 1
            h = np.maximum(bi[..., 3], bj[:, 3]) - np.minimum(bi[..., 1], bj[:, 1]) + 1
            # size + fill = 2 - box/area: the region sizes cancel
            return s + (2 - w * h / image_size if use_size else 1 - (w * h - S[i] - S[j]) / image_size)
        if use_size:                                       # merge small regions early
            s += 1 - (S[i] + S[j]) / image_size
        return s

    neighbours = [set() for _ in range(n)]
    a, b = pairs[:, 0].tolist(), pairs[:, 1].tolist()
    for i, j in zip(a, b):
        neighbours[i].add(j)
        neighbours[j].add(i)
    heap = list(zip((-similarity(pairs[:, 0], pairs[:, 1])).tolist(), a, b))
    heapq.heapify(heap)
    alive = [True] * n + [False] * (n - 1)
    t = n
    while t < total and heap:
        _, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue
        alive[i] = alive[j] = False
        alive[t] = True
        S[t] = S[i] + S[j]
        B[t, :2] = np.minimum(B[i, :2], B[j, :2])
        B[t, 2:] = np.maximum(B[i, 2:], B[j, 2:])
        if hist is not None:
            hist[t] = (S[i] * hist[i] + S[j] * hist[j]) / S[t]
        nb = (neighbours[i] | neighbours[j]) - {i, j}
        neighbours[i] = neighbours[j] = None
        neighbours.append(nb)
        for m in nb:
            nm = neighbours[m]
            nm.discard(i)
            nm.discard(j)
            nm.add(t)
        if nb:
            m = np.fromiter(nb, dtype=np.int64, count=len(nb))
            for s, k in zip((-similarity(t, m)).tolist(), m.tolist()):
                heapq.heappush(heap, (s, k, t))
        t += 1
    return B[:t]


def selective_search(image, mode='fast', max_proposals=2000, seed=0, min_size=2, scales=None):
    """Selective search object proposals (Uijlings et al., IJCV 2013).

    image: (H, W, 3) uint8 RGB. mode: 'single' (HSV, k=100, C+T+S+F: one hierarchy), 'fast'
    (HSV and Lab x k in {50, 100} x {C+T+S+F, T+S+F}: 8 hierarchies) or 'quality' (5 colour
    spaces x 4 k x 4 similarity sets: 80 hierarchies). Boxes narrower or lower than `min_size`
    pixels are dropped. `seed` fixes the random part of the ranking (Sec. 3.3). `scales`
    replaces the mode's Felzenszwalb k values (Table 5's 50 and 100 for 'fast'; OpenCV's fast
    mode uses 150 and 300, and `bench --only selective_search` compares with both).

    Returns (P, 4) float32 boxes [x1, y1, x2, y2], 0-based inclusive pixel corners, best-ranked
    first, no two alike, P <= max_proposals.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    if not isinstance(max_proposals, (int, np.integer)) or max_proposals < 1:
        raise ValueError(f'max_proposals must be a positive integer, got {max_proposals!r}')
    spaces, k_values, measure_sets = MODES[mode]
    if scales is not None:
        k_values = tuple(scales)
        if not k_values or not all(isinstance(k, (int, float, np.integer, np.floating)) and k > 0
                                   for k in k_values):
            raise ValueError(f'scales must be positive Felzenszwalb k values, got {scales!r}')
    from skimage.segmentation import felzenszwalb
    image = check_image(image, 'the image of selective_search', min_side=2)
    H, W = image.shape[:2]
    rng = np.random.default_rng(seed)
    boxes, values = [], []
    for space in spaces:
        img = colour_space(image, space)                         # (H, W, C)
        colour_bins, texture_bins = _colour_bins(img), _texture_bins(img)
        # Felzenszwalb's min_size = k, as in the paper's code; one segmentation per k serves every
        # similarity set (the CPU speed path makes the same segments for all k from one sort)
        fast = backend.fast_cpu('felzenszwalb', img)
        segments = fast(img, k_values, SIGMA) if fast else None
        if segments is None:
            segments = [felzenszwalb(img, scale=k, sigma=SIGMA, min_size=int(k), channel_axis=-1)
                        for k in k_values]
        for labels in segments:
            regions = initial_regions(labels, colour_bins, texture_bins)
            for measures in measure_sets:
                b = group(*regions, measures, H * W)              # (R, 4), whole image last
                position = np.arange(len(b), 0, -1)               # whole image: 1, first segment: R
                boxes.append(b)
                values.append(position * rng.random(len(b)))      # Sec. 3.3: RND x position
    boxes = np.concatenate(boxes)[np.argsort(np.concatenate(values), kind='stable')]
    w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    boxes = boxes[(w >= min_size) & (h >= min_size)].astype(np.int64)
    # ranked first, duplicates filtered afterwards: the best-ranked copy of each box survives
    key = ((boxes[:, 0] * H + boxes[:, 1]) * W + boxes[:, 2]) * H + boxes[:, 3]
    _, first = np.unique(key, return_index=True)
    return boxes[np.sort(first)[:max_proposals]].astype(np.float32)
