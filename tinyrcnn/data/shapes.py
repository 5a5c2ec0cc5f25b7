"""A synthetic detection set of coloured shapes, written in exactly the PASCAL VOC layout.

It stands in for VOC where a CPU must train in minutes: small images (160..256 px a side), 1-4
objects of six classes with varied size, colour and texture (solid, stripes, noise, two-tone
gradient), overlapping and cut by the border, on cluttered backgrounds (gradients, low-frequency
noise, lines, curves and small blobs that are not objects). The annotations follow the VOC
guidelines: the box bounds the *visible* pixels, `truncated` marks objects cut by the border, and
`difficult` marks very small or mostly hidden ones, which the devkit's AP ignores.

    from tinyrcnn.data import make_shapes_voc, VOCDetection
    root = make_shapes_voc('data/shapes', num_train=200, num_test=100)
    ds = VOCDetection(root, 'trainval')          # class names come from root/classes.txt
"""
import os
import xml.etree.ElementTree as ET

import numpy as np

SHAPES_CLASSES = ('circle', 'square', 'triangle', 'star', 'ring', 'cross')

MIN_VISIBLE = 0.35      # a new shape may not hide more than 65% of one already drawn
DIFFICULT_OCCLUDED = 0.5  # ... and one more than half hidden is marked difficult
DIFFICULT_SIZE = 0.16   # as is one smaller than this fraction of the shorter image side


def _rotate(points, theta):
    c, s = np.cos(theta), np.sin(theta)
    return points @ np.array([[c, s], [-s, c]])


def _shape_parts(name, cx, cy, r, theta):
    """Geometry of one shape of outer radius r: a list of ('poly', (V, 2) xy) or ('disk', radius)
    parts, with a sign (+1 paint, -1 cut out, for the ring's hole)."""
    if name == 'circle':
        return [(+1, 'disk', r)]
    if name == 'ring':
        return [(+1, 'disk', r), (-1, 'disk', 0.55 * r)]
    if name == 'square':
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * (r / np.sqrt(2))
        polys = [pts]
    elif name == 'triangle':
        a = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        polys = [np.stack([np.cos(a), -np.sin(a)], 1) * r]
    elif name == 'star':
        a = np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        polys = [np.stack([np.cos(a), -np.sin(a)], 1) * rad[:, None]]
    elif name == 'cross':
        w = 0.33 * r
        polys = [np.array([[-r, -w], [r, -w], [r, w], [-r, w]]),
                 np.array([[-w, -r], [w, -r], [w, r], [-w, r]])]
    else:
        raise ValueError(f'unknown shape {name!r}; expected one of {SHAPES_CLASSES}')
    return [(+1, 'poly', _rotate(p, theta) + (cx, cy)) for p in polys]


def _mask(parts, cx, cy, shape):
    """Rasterise the parts: (in-image boolean (H, W) mask, pixel count of the whole shape).

    The shape is drawn on a canvas padded by its radius, so the part cut off by the border is
    counted too (it tells `truncated` and how much of the shape is left).
    """
    from skimage.draw import disk, polygon
    p = int(np.ceil(max(g if kind == 'disk' else np.abs(g - (cx, cy)).max() for _, kind, g in parts))) + 2
    H, W = shape
    m = np.zeros((H + 2 * p, W + 2 * p), bool)
    for sign, kind, g in parts:
        rr, cc = disk((cy + p, cx + p), g, shape=m.shape) if kind == 'disk' else \
            polygon(g[:, 1] + p, g[:, 0] + p, shape=m.shape)
        m[rr, cc] = sign > 0
    return m[p:p + H, p:p + W], int(m.sum())


def _colour(rng, away_from, min_dist=90):
    """A random colour far enough from `away_from` to be seen; the best of a few draws."""
    best, best_d = None, -1
    for _ in range(8):
        c = rng.uniform(0, 255, 3)
        d = np.linalg.norm(c - away_from)
        if d > best_d:
            best, best_d = c, d
        if d >= min_dist:
            break
    return best


def _texture(rng, rr, cc, base):
    """Pixel values (P, 3) for the masked pixels: solid, stripes, noise or a two-tone gradient."""
    kind = rng.integers(4)
    P = len(rr)
    if kind == 0:
        return np.broadcast_to(base, (P, 3)) + rng.normal(0, 4, (P, 3))
    other = _colour(rng, base, 80)
    phi = rng.uniform(0, np.pi)
    t = cc * np.cos(phi) + rr * np.sin(phi)  # coordinate across the stripes / gradient
    if kind == 1:
        on = (t // rng.uniform(3, 8)) % 2 == 0
        return np.where(on[:, None], base, other)
    if kind == 2:
        return base + rng.normal(0, 35, (P, 3))
    t = (t - t.min()) / max(np.ptp(t), 1e-6)
    return base + t[:, None] * (other - base) * 0.6


def _upsample(grid, H, W):
    """Bilinear (h, w, 3) -> (H, W, 3), corners aligned: smooth low-frequency colour noise."""
    for axis, n in ((0, H), (1, W)):
        t = np.linspace(0, grid.shape[axis] - 1, n)
        i0 = np.minimum(t.astype(int), grid.shape[axis] - 2)
        w = (t - i0).reshape((-1, 1, 1) if axis == 0 else (1, -1, 1))
        grid = np.take(grid, i0, axis) * (1 - w) + np.take(grid, i0 + 1, axis) * w
    return grid


def _background(rng, H, W):
    """Gradient + low-frequency colour noise + clutter that is not an object: (H, W, 3) float."""
    from skimage.draw import polygon, bezier_curve, ellipse
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    phi = rng.uniform(0, 2 * np.pi)
    t = x * np.cos(phi) + y * np.sin(phi)
    t = (t - t.min()) / max(np.ptp(t), 1e-6)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    image = c0 + t[..., None] * (c1 - c0)
    grid = rng.normal(0, rng.uniform(10, 35), (rng.integers(3, 9), rng.integers(3, 9), 3))
    image += _upsample(grid, H, W)

    short = min(H, W)
    for _ in range(rng.integers(3, 11)):
        kind = rng.integers(4)
        colour = rng.uniform(0, 255, 3)
        if kind == 0:    # a straight line or bar across part of the image
            p0, p1 = rng.uniform(0, 1, 2) * (W, H), rng.uniform(0, 1, 2) * (W, H)
            d = p1 - p0
            n = np.array([-d[1], d[0]]) / max(np.linalg.norm(d), 1e-6) * rng.uniform(0.5, 2)
            quad = np.array([p0 + n, p1 + n, p1 - n, p0 - n])
            rr, cc = polygon(quad[:, 1], quad[:, 0], shape=(H, W))
        elif kind == 1:  # a thin curve
            pts = (rng.uniform(0, 1, (3, 2)) * (H, W)).astype(int)
            rr, cc = bezier_curve(*pts[0], *pts[1], *pts[2], weight=rng.uniform(0.5, 3), shape=(H, W))
        elif kind == 2:  # a small elongated blob
            a = rng.uniform(0.02, 0.06) * short
            rr, cc = ellipse(rng.uniform(0, H), rng.uniform(0, W), a, a * rng.uniform(0.25, 0.6),
                             shape=(H, W), rotation=rng.uniform(0, np.pi))
        else:            # a small irregular blob
            k = rng.integers(6, 12)
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = rng.uniform(0.3, 1, k) * rng.uniform(0.03, 0.09) * short
            cy, cx = rng.uniform(0, H), rng.uniform(0, W)
            rr, cc = polygon(cy + rad * np.sin(ang), cx + rad * np.cos(ang), shape=(H, W))
        image[rr, cc] = colour
    return image


def render_shapes_image(rng, height, width, max_objects=4):
    """Draw one image: returns (image (H, W, 3) uint8, list of object dicts, owner (H, W) int16).

    Each object dict has name, box ([x1, y1, x2, y2] 0-based inclusive, of the visible pixels),
    truncated, occluded (the fraction hidden by later shapes) and difficult; owner[y, x] is the
    index of the object that pixel shows, -1 for background (an instance mask for free).
    Shapes are painted in order; a placement that would hide more than 1 - MIN_VISIBLE of an
    earlier shape, or leave less than half of itself in the image, is redrawn.
    """
    H, W, short = height, width, min(height, width)
    image = _background(rng, H, W)
    owner = np.full((H, W), -1, np.int16)   # which object each pixel shows
    objects = []
    for _ in range(rng.integers(1, max_objects + 1)):
        name = SHAPES_CLASSES[rng.integers(len(SHAPES_CLASSES))]
        small = rng.random() < 0.12
        r = 0.5 * short * (rng.uniform(0.10, DIFFICULT_SIZE) if small else rng.uniform(0.2, 0.5))
        theta = rng.uniform(0, 2 * np.pi)
        cut = rng.random() < 0.2  # let the border cut this one
        lo = 0.3 * r if cut else r
        for _attempt in range(20):
            cx, cy = rng.uniform(lo, W - 1 - lo), rng.uniform(lo, H - 1 - lo)
            parts = _shape_parts(name, cx, cy, r, theta)
            m, full = _mask(parts, cx, cy, (H, W))
            area = int(m.sum())
            if area < 0.5 * full:
                continue
            if all(((owner == k) & ~m).sum() >= MIN_VISIBLE * o['area'] for k, o in enumerate(objects)):
                break
        else:
            continue
        rr, cc = np.nonzero(m)
        fill = _colour(rng, image[rr, cc].mean(0))
        image[rr, cc] = _texture(rng, rr, cc, fill)
        owner[rr, cc] = len(objects)
        objects.append(dict(name=name, area=area, small=small, truncated=area < full))

    image += rng.normal(0, rng.uniform(3, 12), image.shape)
    result = []
    for k, o in enumerate(objects):
        rr, cc = np.nonzero(owner == k)
        occluded = 1 - len(rr) / o['area']
        box = (int(cc.min()), int(rr.min()), int(cc.max()), int(rr.max()))
        result.append(dict(name=o['name'], box=box, truncated=o['truncated'], occluded=occluded,
                           difficult=bool(o['small'] or occluded > DIFFICULT_OCCLUDED)))
    return np.clip(np.round(image), 0, 255).astype(np.uint8), result, owner


def _annotation_xml(image_id, H, W, objects):
    """A VOC annotation: 1-based inclusive pixel coordinates, the devkit's tags."""
    root = ET.Element('annotation')
    ET.SubElement(root, 'folder').text = 'shapes'
    ET.SubElement(root, 'filename').text = image_id + '.jpg'
    ET.SubElement(ET.SubElement(root, 'source'), 'database').text = 'tinyrcnn synthetic shapes'
    size = ET.SubElement(root, 'size')
    for tag, v in (('width', W), ('height', H), ('depth', 3)):
        ET.SubElement(size, tag).text = str(v)
    ET.SubElement(root, 'segmented').text = '0'
    for o in objects:
        obj = ET.SubElement(root, 'object')
        ET.SubElement(obj, 'name').text = o['name']
        ET.SubElement(obj, 'pose').text = 'Unspecified'
        ET.SubElement(obj, 'truncated').text = str(int(o['truncated']))
        ET.SubElement(obj, 'difficult').text = str(int(o['difficult']))
        bb = ET.SubElement(obj, 'bndbox')
        for tag, v in zip(('xmin', 'ymin', 'xmax', 'ymax'), o['box']):
            ET.SubElement(bb, tag).text = str(v + 1)
    ET.indent(root, space='\t')
    return ET.tostring(root, encoding='unicode') + '\n'


def make_shapes_voc(root, num_train, num_test, seed=0, image_size=(160, 256), max_objects=4,
                    only_test=False):
    """Write the synthetic shapes set under `root` in the VOC layout and return `root`.

    Image ids 000001.. are trainval (the last fifth of them val, the rest train), followed by
    test. Each side of each image is drawn from `image_size` = (smallest, largest) pixels, so
    aspect ratios vary. Image i is drawn from its own generator seeded by (seed, i): the same
    seed gives the same files, byte for byte. Writes JPEGImages/*.jpg (quality 90),
    Annotations/*.xml, ImageSets/Main/{train,val,trainval,test}.txt and classes.txt.
    only_test=True draws and writes just the test images (the same files as with False), for
    looking at a data set's test split without paying for its training images; its split files
    list no training images, so write it to a folder of its own.
    """
    import imageio.v3 as iio
    if num_train < 0 or num_test < 0:
        raise ValueError(f'num_train and num_test must be >= 0, got {num_train}, {num_test}')
    lo, hi = image_size
    if not 32 <= lo <= hi:
        raise ValueError(f'image_size must be (smallest, largest) side with 32 <= smallest <= largest, '
                         f'got {image_size}')
    root = os.fspath(root)
    for sub in ('Annotations', 'JPEGImages', os.path.join('ImageSets', 'Main')):
        os.makedirs(os.path.join(root, sub), exist_ok=True)

    ids = [f'{i + 1:06d}' for i in range(num_train + num_test)]
    for i, image_id in enumerate(ids):
        if only_test and i < num_train:
            continue
        rng = np.random.default_rng([seed, i])
        H, W = (int(v) for v in rng.integers(lo, hi + 1, 2))
        image, objects, _ = render_shapes_image(rng, H, W, max_objects)
        iio.imwrite(os.path.join(root, 'JPEGImages', image_id + '.jpg'), image, extension='.jpg', quality=90)
        with open(os.path.join(root, 'Annotations', image_id + '.xml'), 'w') as f:
            f.write(_annotation_xml(image_id, H, W, objects))

    trainval, test = ([] if only_test else ids[:num_train]), ids[num_train:]
    n_val = len(trainval) // 5
    splits = dict(train=trainval[:len(trainval) - n_val], val=trainval[len(trainval) - n_val:],
                  trainval=trainval, test=test)
    for split, names in splits.items():
        with open(os.path.join(root, 'ImageSets', 'Main', split + '.txt'), 'w') as f:
            f.write(''.join(n + '\n' for n in names))
    with open(os.path.join(root, 'classes.txt'), 'w') as f:
        f.write('\n'.join(SHAPES_CLASSES) + '\n')
    return root
