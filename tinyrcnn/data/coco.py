"""COCO-format detection data: one JSON file of images, annotations and categories (Lin et al.,
2014), read into the same items as `VOCDetection`'s, so that training, testing and the command
line take either layout.

The conversions, one rule each:
  * boxes: COCO writes `[x, y, w, h]` in continuous pixel coordinates; tinyrcnn's boxes are
    0-based inclusive `[x1, y1, x2, y2]`, so x1 = x, x2 = x + max(0, w - 1) (the +1 widths of
    every IoU in tinyrcnn give back w; a box under a pixel wide becomes one pixel, as in
    py-faster-rcnn's `coco.py`). A box is clipped to the image where the image's width and height
    are given (as py-faster-rcnn does); boxes with w <= 0 or h <= 0 are dropped and counted in
    `ds.dropped` (COCO holds a few). `evaluate_coco` then sees these boxes, not the file's own;
  * labels: the categories sorted by their `id`, label k is the k-th (1..K; 0 is background):
    `ds.category_ids[k - 1]` is the COCO id of label k, `ds.class_names[k - 1]` its name;
  * `iscrowd` objects (one box around a crowd) are `difficult` for training: neither foreground
    nor a miss, as VOC's difficult objects; `iscrowd` and `areas` (the annotation's `area`, a
    segmentation area, or w * h where it is missing) are kept for `evaluate_coco`;
  * image ids: `ds.ids` are the COCO ids as strings (the keys of proposal caches, like VOC's
    ids); `ds.image_ids` the integers themselves, in the file's order.
An image with no annotation is kept: it trains as a negative (background RoIs or anchors only).
"""
import json
import os

import numpy as np

from ..utils import atomic_write
from .image import read_image


def _where(path, what):
    return f'{path}: {what}'


def _is_id(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value, path, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ValueError(_where(path, f'{what} must be a finite number, got {value!r}'))
    return float(value)


def _read_json(path):
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f'{path}: annotation file not found') from None
    except IsADirectoryError:
        raise ValueError(f'{path}: is a folder, expected a COCO annotation .json file') from None
    except UnicodeDecodeError as e:
        raise ValueError(f'{path}: not UTF-8 text ({e.reason} at byte {e.start})') from None
    except json.JSONDecodeError as e:
        raise ValueError(f'{path}: not JSON ({e.msg}, line {e.lineno} column {e.colno})') from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in
                                              ('images', 'annotations', 'categories')):
        raise ValueError(f'{path}: expected a COCO object with lists "images", "annotations" and '
                         f'"categories"')
    return data


def _categories(data, path):
    cats = {}
    for k, c in enumerate(data['categories']):
        if not isinstance(c, dict) or not _is_id(c.get('id')) or not isinstance(c.get('name'), str):
            raise ValueError(_where(path, f'category {k} needs an integer "id" and a "name", got {c!r}'))
        if c['id'] in cats:
            raise ValueError(_where(path, f'category id {c["id"]} is listed twice'))
        cats[c['id']] = c['name']
    if not cats:
        raise ValueError(_where(path, 'no categories'))
    if len(set(cats.values())) != len(cats) or '__background__' in cats.values():
        raise ValueError(_where(path, f'category names must be distinct, got {sorted(cats.values())}'))
    return sorted(cats)


class COCODetection:
    """A COCO-format detection set: `ds[i]` -> dict(image, boxes, labels, difficult, truncated,
    iscrowd, areas, id), the arrays as `VOCDetection`'s (boxes (G, 4) float32 0-based inclusive,
    labels (G,) int64 in 1..K, the flags (G,) bool, areas (G,) float64).

    image_dir: the folder the images' `file_name`s are relative to; annotation_json: the file.
    The JSON is read and checked once, whole: a problem is one ValueError naming the file and
    the entry.
    """

    def __init__(self, image_dir, annotation_json, class_names=None):
        self.root = os.fspath(image_dir)
        self.annotation_json = os.fspath(annotation_json)
        self.split = os.path.splitext(os.path.basename(self.annotation_json))[0]
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f'{self.root}: image folder not found')
        path = self.annotation_json
        data = _read_json(path)
        self.category_ids = _categories(data, path)
        names = {c['id']: c['name'] for c in data['categories']}
        self.class_names = tuple(names[c] for c in self.category_ids)
        if class_names is not None and tuple(class_names) != self.class_names:
            raise ValueError(_where(path, f'categories {self.class_names} (sorted by id) differ '
                                          f'from the class_names given, {tuple(class_names)}'))
        label_of = {c: k + 1 for k, c in enumerate(self.category_ids)}

        self.image_ids, self._images = [], {}
        for k, im in enumerate(data['images']):
            if not isinstance(im, dict) or not _is_id(im.get('id')) \
                    or not isinstance(im.get('file_name'), str):
                raise ValueError(_where(path, f'image {k} needs an integer "id" and a "file_name"'))
            if im['id'] in self._images:
                raise ValueError(_where(path, f'image id {im["id"]} is listed twice'))
            size = [im.get('width'), im.get('height')]
            size = size if all(isinstance(v, int) and v > 0 for v in size) else None
            self._images[im['id']] = dict(file_name=im['file_name'], size=size, objects=[])
            self.image_ids.append(im['id'])
        self.ids = [str(i) for i in self.image_ids]

        self.dropped = 0
        for k, a in enumerate(data['annotations']):
            what = f'annotation {k} (id {a.get("id") if isinstance(a, dict) else None})'
            if not isinstance(a, dict) or 'bbox' not in a or 'image_id' not in a or 'category_id' not in a:
                raise ValueError(_where(path, f'{what} needs "image_id", "category_id" and "bbox"'))
            if not _is_id(a['image_id']) or a['image_id'] not in self._images:
                raise ValueError(_where(path, f'{what} refers to image {a["image_id"]!r}, not in "images"'))
            if not _is_id(a['category_id']) or a['category_id'] not in label_of:
                raise ValueError(_where(path, f'{what} has unknown category {a["category_id"]!r}'))
            if not isinstance(a['bbox'], list) or len(a['bbox']) != 4:
                raise ValueError(_where(path, f'{what}: bbox must be [x, y, w, h], got {a["bbox"]!r}'))
            x, y, w, h = (_number(v, path, f'{what} bbox') for v in a['bbox'])
            if w <= 0 or h <= 0:
                self.dropped += 1
                continue
            image = self._images[a['image_id']]
            if a.get('iscrowd', 0) not in (0, 1):
                raise ValueError(_where(path, f'{what}: iscrowd must be 0 or 1, got {a["iscrowd"]!r}'))
            x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), x + max(0.0, w - 1), y + max(0.0, h - 1)
            if image['size']:
                x2, y2 = min(x2, image['size'][0] - 1.0), min(y2, image['size'][1] - 1.0)
            if x2 < x1 or y2 < y1:                   # nothing of it inside the image
                self.dropped += 1
                continue
            area = _number(a['area'], path, f'{what} area') if 'area' in a else w * h
            image['objects'].append((x1, y1, x2, y2, label_of[a['category_id']],
                                     bool(a.get('iscrowd', 0)), area))

    @property
    def num_classes(self):
        """Number of object classes K (background not counted)."""
        return len(self.class_names)

    def __len__(self):
        return len(self.ids)

    def _index(self, i):
        n = len(self.ids)
        if not isinstance(i, (int, np.integer)) or not -n <= i < n:
            raise IndexError(f'index {i!r} out of range for a data set of {n} images')
        return int(i) % n

    def annotation(self, i):
        """Ground truth only: dict(boxes, labels, difficult, truncated, iscrowd, areas, id)."""
        i = self._index(i)
        objects = self._images[self.image_ids[i]]['objects']
        boxes = np.array([o[:4] for o in objects], np.float32).reshape(-1, 4)
        crowd = np.array([o[5] for o in objects], bool)
        return dict(boxes=boxes, labels=np.array([o[4] for o in objects], np.int64),
                    difficult=crowd, truncated=np.zeros(len(objects), bool), iscrowd=crowd.copy(),
                    areas=np.array([o[6] for o in objects], np.float64), id=self.ids[i])

    def image_path(self, i):
        i = self._index(i)
        path = os.path.join(self.root, self._images[self.image_ids[i]]['file_name'])
        if not os.path.exists(path):
            raise FileNotFoundError(f'{path}: image file not found (image id {self.image_ids[i]} '
                                    f'of {self.annotation_json})')
        return path

    def __getitem__(self, i):
        sample = self.annotation(i)
        sample['image'] = read_image(self.image_path(i))
        return sample

    def __repr__(self):
        return (f'COCODetection(root={self.root!r}, annotation_json={self.annotation_json!r}, '
                f'images={len(self)}, classes={self.num_classes})')


def write_coco_json(dataset, path, image_dir=None):
    """Write `dataset`'s ground truth (any data set with `annotation(i)`, `image_path(i)` and
    `class_names`, e.g. a `VOCDetection`) as a COCO annotation file: categories 1..K in the
    data set's order, image ids 1..N in its order, boxes back to `[x, y, w, h]`, difficult
    objects as `iscrowd`. `file_name`s are relative to `image_dir` (default: the folder of the
    first image). Returns `path`."""
    from PIL import Image
    paths = [dataset.image_path(i) for i in range(len(dataset))]
    image_dir = image_dir or (os.path.dirname(paths[0]) if paths else '.')
    images, annotations = [], []
    for i, image_path in enumerate(paths):
        with Image.open(image_path) as im:
            width, height = im.size
        images.append(dict(id=i + 1, file_name=os.path.relpath(image_path, image_dir),
                           width=width, height=height))
        a = dataset.annotation(i)
        for box, label, crowd in zip(a['boxes'].tolist(), a['labels'].tolist(), a['difficult'].tolist()):
            w, h = box[2] - box[0] + 1, box[3] - box[1] + 1
            annotations.append(dict(id=len(annotations) + 1, image_id=i + 1, category_id=label,
                                    bbox=[box[0], box[1], w, h], area=w * h, iscrowd=int(crowd)))
    categories = [dict(id=k + 1, name=name) for k, name in enumerate(dataset.class_names)]
    text = json.dumps(dict(images=images, annotations=annotations, categories=categories))
    atomic_write(os.fspath(path), lambda f: f.write(text.encode()))
    return path
