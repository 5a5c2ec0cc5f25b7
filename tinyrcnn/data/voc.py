"""PASCAL VOC detection data: the devkit's folder layout, XML annotations and class list.

A VOC root (VOC2007 or VOC2012, or the synthetic set of `make_shapes_voc`) holds

    Annotations/<id>.xml          one <object> per ground-truth box, 1-based inclusive pixels
    JPEGImages/<id>.jpg           the image
    ImageSets/Main/<split>.txt    one image id per line (train, val, trainval, test)

Boxes come back 0-based, `[x1, y1, x2, y2]` inclusive, i.e. the XML value minus one, as in the
original Fast R-CNN code (Girshick, 2015, `pascal_voc.py`). Labels are 1..K; 0 is background.
"""
import os
import xml.etree.ElementTree as ET

import numpy as np

from .image import read_image

VOC_CLASSES = (
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
    'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa',
    'train', 'tvmonitor',
)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.JPG', '.JPEG', '.PNG')


def _flag(obj, tag):
    """VOC's 0/1 flags; VOC2012 leaves <difficult> or <truncated> out on some objects (= 0)."""
    node = obj.find(tag)
    if node is None or node.text is None or not node.text.strip():
        return False
    return int(float(node.text)) != 0


def parse_voc_xml(path, class_to_label):
    """Read one annotation file.

    Only the direct <object> children of <annotation> are objects: person <part>s (head, hand,
    foot) carry their own <bndbox> one level down and are skipped. Coordinates may be written as
    floats ("273.0", VOC2012). Coordinates below 0 after the shift are set to 0, since hand-made
    VOC-style sets sometimes write xmin=0 at the border; <size> is only reported (hand-made sets
    often get it wrong).

    Returns a dict: boxes (G, 4) float32 0-based, labels (G,) int64, difficult (G,) bool,
    truncated (G,) bool, width, height (None when <size> is missing), filename (or None).
    """
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise FileNotFoundError(f'{path}: annotation file not found') from None
    except ET.ParseError as e:
        raise ValueError(f'{path}: malformed XML ({e})') from None
    if root.tag != 'annotation':
        raise ValueError(f'{path}: expected an <annotation> root element, got <{root.tag}>')

    def number(node, tag, where):
        child = node.find(tag)
        try:
            return float(child.text)
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f'{path}: {where} needs a numeric <{tag}>') from None

    try:
        width, height = int(float(root.findtext('size/width'))), int(float(root.findtext('size/height')))
    except (TypeError, ValueError):
        width = height = None

    boxes, labels, difficult, truncated = [], [], [], []
    for k, obj in enumerate(root.findall('object')):
        name = (obj.findtext('name') or '').strip()
        if name not in class_to_label:
            raise ValueError(f'{path}: object {k} has unknown class {name!r}; '
                             f'expected one of {sorted(class_to_label)}')
        bb = obj.find('bndbox')
        if bb is None:
            raise ValueError(f'{path}: object {k} ({name}) has no <bndbox>')
        where = f'object {k} ({name}) <bndbox>'
        x1, y1, x2, y2 = (number(bb, t, where) - 1 for t in ('xmin', 'ymin', 'xmax', 'ymax'))
        if not (np.isfinite([x1, y1, x2, y2]).all() and x2 >= x1 and y2 >= y1):
            raise ValueError(f'{path}: {where} is not a box with xmin <= xmax and ymin <= ymax: '
                             f'{[x1 + 1, y1 + 1, x2 + 1, y2 + 1]}')
        boxes.append((max(x1, 0), max(y1, 0), max(x2, 0), max(y2, 0)))
        labels.append(class_to_label[name])
        difficult.append(_flag(obj, 'difficult'))
        truncated.append(_flag(obj, 'truncated'))

    filename = (root.findtext('filename') or '').strip() or None
    return dict(boxes=np.array(boxes, np.float32).reshape(-1, 4),    # (G, 4)
                labels=np.array(labels, np.int64),                    # (G,)
                difficult=np.array(difficult, bool),                  # (G,)
                truncated=np.array(truncated, bool),                  # (G,)
                width=width, height=height, filename=filename)


class VOCDetection:
    """A VOC-layout detection set: `ds[i]` -> dict(image, boxes, labels, difficult, truncated, id).

    image (H, W, 3) uint8 RGB; boxes (G, 4) float32 0-based [x1, y1, x2, y2]; labels (G,) int64
    in 1..K; difficult, truncated (G,) bool; id the image id (str).

    `class_names`: None reads `root/classes.txt` (one name per line, written by the synthetic set)
    when present, else the 20 VOC classes. Annotations are parsed on first use and cached, so
    `ds.annotation(i)` (ground truth without decoding the image) is cheap for evaluation.
    """

    def __init__(self, root, split='trainval', class_names=None):
        self.root = os.fspath(root)
        self.split = split
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f'{self.root}: VOC root folder not found')
        if class_names is None:
            classes_file = os.path.join(self.root, 'classes.txt')
            if os.path.exists(classes_file):
                with open(classes_file) as f:
                    class_names = [line.strip() for line in f if line.strip()]
                if not class_names:
                    raise ValueError(f'{classes_file}: expected one class name per line, file is empty')
            else:
                class_names = VOC_CLASSES
        self.class_names = tuple(class_names)
        if len(set(self.class_names)) != len(self.class_names) or '__background__' in self.class_names:
            raise ValueError(f'class_names must be distinct object classes, got {self.class_names}')
        self.class_to_label = {c: k + 1 for k, c in enumerate(self.class_names)}

        split_file = os.path.join(self.root, 'ImageSets', 'Main', f'{split}.txt')
        if not os.path.exists(split_file):
            raise FileNotFoundError(f'{split_file}: split file not found '
                                    f'(expected ImageSets/Main/{split}.txt under the VOC root)')
        try:
            with open(split_file, encoding='utf-8') as f:
                self.ids = [line.split()[0] for line in f if line.strip()]
        except UnicodeDecodeError as e:
            raise ValueError(f'{split_file}: not UTF-8 text ({e.reason} at byte {e.start})') from None
        seen = set()
        for image_id in self.ids:
            if image_id in seen:
                raise ValueError(f'{split_file}: image id {image_id!r} is listed twice')
            seen.add(image_id)
        self._annotations = {}

    @property
    def num_classes(self):
        """Number of object classes K (background not counted)."""
        return len(self.class_names)

    def __len__(self):
        return len(self.ids)

    def annotation_path(self, i):
        return os.path.join(self.root, 'Annotations', self.ids[i] + '.xml')

    def _parsed(self, i):
        if i not in self._annotations:
            self._annotations[i] = parse_voc_xml(self.annotation_path(i), self.class_to_label)
        return self._annotations[i]

    def annotation(self, i):
        """Ground truth only: dict(boxes, labels, difficult, truncated, id), no image decoding."""
        i = self._index(i)
        a = self._parsed(i)
        return dict(boxes=a['boxes'].copy(), labels=a['labels'].copy(),
                    difficult=a['difficult'].copy(), truncated=a['truncated'].copy(), id=self.ids[i])

    def image_path(self, i):
        i = self._index(i)
        folder = os.path.join(self.root, 'JPEGImages')
        names = [self.ids[i] + ext for ext in IMAGE_EXTENSIONS]
        filename = self._parsed(i)['filename']
        if filename:
            names.insert(1, filename)  # <id>.jpg first: some sets copy <filename> from elsewhere
        for name in names:
            path = os.path.join(folder, name)
            if os.path.exists(path):
                return path
        raise FileNotFoundError(f'{os.path.join(folder, names[0])}: image file not found '
                                f'(annotation {self.annotation_path(i)})')

    def __getitem__(self, i):
        i = self._index(i)
        sample = self.annotation(i)
        path = self.image_path(i)
        sample['image'] = read_image(path)  # (H, W, 3)
        return sample

    def _index(self, i):
        n = len(self.ids)
        if not isinstance(i, (int, np.integer)) or not -n <= i < n:
            raise IndexError(f'index {i!r} out of range for a data set of {n} images')
        return int(i) % n

    def __repr__(self):
        return (f'VOCDetection(root={self.root!r}, split={self.split!r}, '
                f'images={len(self)}, classes={self.num_classes})')
