"""Input checking shared by the VOC and COCO evaluations.

Both take one dict per image: detections with `boxes` (n, 4) [x1, y1, x2, y2] (0-based,
inclusive pixels), `scores` (n,) and `labels` (n,) in 1..K; ground truths with `boxes`,
`labels` and per-box flags. These helpers turn such dicts into float64/int64 NumPy arrays (CuPy
arrays are copied to the host) and say which image and key is wrong when one is.
"""
import numpy as np

from ..backend import is_cupy_array


def _numpy(a):
    return a.get() if is_cupy_array(a) else np.asarray(a)


def _labels(labels, where, num_classes):
    labels = _numpy(labels)
    if labels.size and (not np.issubdtype(labels.dtype, np.number) or np.any(labels != np.round(labels))):
        raise ValueError(f'{where}: labels must be integers in 1..{num_classes}, got {labels!r}')
    labels = labels.astype(np.int64).reshape(-1)
    if labels.size and (labels.min() < 1 or labels.max() > num_classes):
        raise ValueError(f'{where}: labels must lie in 1..{num_classes} (label k is class_names[k-1]; '
                         f'0 is background), got values in {labels.min()}..{labels.max()}')
    return labels


def _check_item(item, where, num_classes, keys, optional=()):
    """One image's dict -> float64 boxes (n, 4) and the other `keys` as (n,) NumPy arrays.

    Every key in `keys` must be there, except 'difficult', which defaults to all False (plain
    boxes: nothing is difficult). Keys in `optional` are checked and returned only when present.
    """
    if not isinstance(item, dict) or 'boxes' not in item or 'labels' not in item:
        raise ValueError(f'{where}: expected a dict with {", ".join(("boxes", "labels") + keys)}, '
                         f'got {type(item).__name__}')
    boxes = _numpy(item['boxes'])
    if boxes.size == 0:
        boxes = np.zeros((0, 4))  # an image without boxes may give any empty shape
    elif boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f'{where}: boxes must have shape (n, 4) [x1, y1, x2, y2], got {boxes.shape}')
    boxes = boxes.astype(np.float64)
    out = {'boxes': boxes, 'labels': _labels(item['labels'], where, num_classes)}
    for key in tuple(keys) + tuple(k for k in optional if k in item):
        if key == 'difficult' and key not in item:
            out[key] = np.zeros(boxes.shape[0], dtype=bool)
            continue
        if key not in item:
            raise ValueError(f'{where}: missing key {key!r}')
        out[key] = _numpy(item[key]).reshape(-1)
        if key in ('scores', 'areas'):
            out[key] = out[key].astype(np.float64)
    for key, v in out.items():
        if v.shape[0] != boxes.shape[0]:
            raise ValueError(f'{where}: {key} has {v.shape[0]} entries but there are '
                             f'{boxes.shape[0]} boxes')
    return out


def _check_inputs(detections, ground_truths, class_names):
    """The checks common to every evaluation: a list of class names, one entry per image."""
    if isinstance(class_names, str) or len(class_names) == 0:
        raise ValueError(f'class_names must be a non-empty sequence of names, got {class_names!r}')
    if len(detections) != len(ground_truths):
        raise ValueError(f'detections and ground_truths must hold one entry per image: got '
                         f'{len(detections)} and {len(ground_truths)}')
