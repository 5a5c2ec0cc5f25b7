"""Image and box transforms of the Fast R-CNN input pipeline (Girshick, 2015, Sec. 2.3-2.4).

Training: rescale so the shorter side is `scale` (600) and the longer at most `max_size` (1000),
flip horizontally with probability 0.5, normalise with the trunk's statistics, and pad the images
of a mini-batch to one blob. Multi-scale training/testing uses an image pyramid (Sec. 2.4,
Table 7: scales 480, 576, 688, 864, 1200, longer side at most 2000).

Boxes are float32 `[x1, y1, x2, y2]`, 0-based and inclusive (a box covering the whole W-wide image
is [0, 0, W-1, H-1]), as in `VOCDetection`.
"""
import numpy as np

from .image import check_image

# How the pixels must look for a trunk, by where its weights come from. The pipeline never
# hard-codes these numbers; it looks them up by `source`.
#   order: channel order of the output; scale: multiply the 0..255 pixel by this first;
#   mean, std: per output channel, subtracted then divided after scaling.
PREPROCESS = {
    # torchvision's ImageNet models: RGB in [0, 1], ImageNet mean and std.
    'torchvision': dict(order='RGB', scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    # The original Caffe models (py-faster-rcnn's PIXEL_MEANS): BGR in 0..255, mean only.
    'caffe': dict(order='BGR', scale=1.0, mean=(102.9801, 115.9465, 122.7717), std=(1.0, 1.0, 1.0)),
}
# The tiny trunk trained from scratch (the CPU demo) uses torchvision's statistics.
PREPROCESS['tiny'] = PREPROCESS['torchvision']


def _settings(source):
    if source not in PREPROCESS:
        raise ValueError(f'unknown preprocessing source {source!r}; expected one of {sorted(PREPROCESS)}')
    p = PREPROCESS[source]
    channels = [0, 1, 2] if p['order'] == 'RGB' else [2, 1, 0]
    return p, channels, np.array(p['mean'], np.float32), np.array(p['std'], np.float32)


def preprocess(image, source='torchvision'):
    """(H, W, 3) RGB pixels in 0..255 (uint8 or float) -> float32 (3, H, W) network input."""
    p, channels, mean, std = _settings(source)
    x = check_image(image, uint8=False, min_side=0).astype(np.float32)
    x = x[:, :, channels]                                       # (H, W, 3) in the trunk's order
    x = (x * np.float32(p['scale']) - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # (3, H, W)


def deprocess(x, source='torchvision'):
    """Inverse of `preprocess`: (3, H, W) network input -> (H, W, 3) uint8 RGB, for showing."""
    p, channels, mean, std = _settings(source)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f'x must be (3, H, W), got shape {x.shape}')
    image = (x.transpose(1, 2, 0) * std + mean) / np.float32(p['scale'])  # (H, W, 3)
    image = image[:, :, np.argsort(channels)]  # back to RGB
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _check_boxes(boxes):
    # float32 always: the original code kept boxes as uint16, and W - 1 - x2 wrapped to 65535.
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f'boxes must be (G, 4) [x1, y1, x2, y2], got shape {boxes.shape}')
    return boxes


def _linear_taps(n_in, n_out):
    """For each output index: the two input indices and the weight of the second, sampling
    at pixel centres, src = (dst + 0.5) * n_in / n_out - 0.5, clamped at the edges."""
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (src - lo).astype(np.float32)


def resize_bilinear(image, size):
    """Bilinear resize of a float (H, W, ...) array to size (H', W'), no anti-aliasing, edge
    pixels repeated: what skimage.transform.resize(order=1, mode='edge', anti_aliasing=False)
    and cv2.resize(INTER_LINEAR) compute, as two separable passes (rows, then columns): several
    times faster than skimage on the demo's images (BENCHMARKS.md, session 2), and it runs
    twice per training iteration."""
    lo, hi, w = _linear_taps(image.shape[0], size[0])
    w = w.reshape((-1,) + (1,) * (image.ndim - 1))
    rows = image[lo] * (1 - w) + image[hi] * w
    lo, hi, w = _linear_taps(image.shape[1], size[1])
    w = w.reshape((1, -1) + (1,) * (image.ndim - 2))
    return rows[:, lo] * (1 - w) + rows[:, hi] * w


def rescale(image, boxes=None, scale=600, max_size=1000):
    """Resize so the shorter side is `scale`, unless the longer side would pass `max_size`.

    factor = min(scale / short, max_size / long); the new size is round(H * factor) x
    round(W * factor) and boxes are multiplied by factor (Sec. 2.4, "single-scale").
    Bilinear interpolation without anti-aliasing, like the original code's cv2.resize; images
    are only mildly shrunk here, and this keeps the pixels the network saw at training time.
    The output keeps the input's dtype (uint8 in, rounded uint8 out).

    Returns (image (H', W', 3), boxes (G, 4) float32 or None, factor).
    """
    image = check_image(image, uint8=False)
    H, W = image.shape[:2]
    if scale <= 0 or max_size <= 0:
        raise ValueError(f'scale and max_size must be positive, got {scale}, {max_size}')
    factor = min(scale / min(H, W), max_size / max(H, W))
    size = (max(int(round(H * factor)), 1), max(int(round(W * factor)), 1))
    if size == (H, W):
        resized = image.copy()
    else:
        resized = resize_bilinear(image.astype(np.float32), size)
        if image.dtype == np.uint8:
            resized = np.clip(np.round(resized), 0, 255).astype(np.uint8)
        else:
            resized = resized.astype(image.dtype)
    if boxes is not None:
        boxes = _check_boxes(boxes) * np.float32(factor)  # (G, 4)
    return resized, boxes, factor


def hflip(image, boxes=None):
    """Mirror left-right; a 0-based inclusive box [x1, x2] becomes [W-1-x2, W-1-x1].

    The training-time augmentation of Sec. 3 ("horizontally flipped with probability 0.5").
    Boxes touching either edge stay inside [0, W-1]. Returns (image, boxes float32 or None).
    """
    image = check_image(image, uint8=False, min_side=0)
    W = image.shape[1]
    flipped = np.ascontiguousarray(image[:, ::-1])
    if boxes is not None:
        boxes = _check_boxes(boxes).copy()  # (G, 4)
        x1 = boxes[:, 0].copy()
        boxes[:, 0] = (W - 1) - boxes[:, 2]
        boxes[:, 2] = (W - 1) - x1
    return flipped, boxes


def image_pyramid(image, scales=(480, 576, 688, 864, 1200), max_size=2000):
    """Multi-scale input (Sec. 2.4, Table 7): one (resized image, factor) per scale."""
    return [rescale(image, None, s, max_size)[::2] for s in scales]


def im_list_to_blob(ims):
    """Stack (3, h, w) arrays into one zero-padded (N, 3, Hmax, Wmax) blob, images at top-left.

    Padding at the bottom/right keeps every RoI's pixel coordinates unchanged.
    """
    ims = [np.asarray(im) for im in ims]
    if not ims:
        raise ValueError('im_list_to_blob needs at least one image')
    for k, im in enumerate(ims):
        if im.ndim != 3 or im.shape[0] != ims[0].shape[0]:
            raise ValueError(f'image {k} must be (C, h, w) with C={ims[0].shape[0]}, got {im.shape}')
    H = max(im.shape[1] for im in ims)
    W = max(im.shape[2] for im in ims)
    blob = np.zeros((len(ims), ims[0].shape[0], H, W), dtype=np.result_type(*ims))  # (N, 3, H, W)
    for k, im in enumerate(ims):
        blob[k, :, :im.shape[1], :im.shape[2]] = im
    return blob
