"""Detection over many images: files, folders and glob patterns in; one picture per image and
one COCO-results JSON out.

The JSON is the list COCO's evaluation server and pycocotools' `loadRes` read: one
`{"image_id", "category_id", "bbox": [x, y, w, h], "score"}` per detection, plus the image's
`file_name`. Boxes go back from tinyrcnn's 0-based inclusive corners to COCO's `[x, y, w, h]`
(w = x2 - x1 + 1). `category_id` is the model's COCO category id where it was trained on a COCO
file (`category_ids` in its JSON), else its label k (1..K, `class_names[k - 1]`). `image_id` is
the number in the file name when every name is a number (COCO's 000000397133.jpg is 397133),
else the image's position 1..N in the order read.

An image that cannot be read is skipped with a message, the others go on, and their results are
written; the caller is told which failed.
"""
import glob
import json
import os
import time

import numpy as np

from .data.image import read_image
from .export import DEMO_MODEL
from .fast_rcnn.detect import detect
from .proposals import selective_search
from .utils import atomic_write, progress
from .viz import draw_detections

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.tif', '.tiff', '.webp')


def default_weights(path):
    """The model `detect`/`test` use: PATH; by default out/demo/model where `make demo` has
    written it, else the demo model shipped in the package."""
    if path:
        return path
    return 'out/demo/model' if os.path.exists('out/demo/model.json') else DEMO_MODEL


def read_proposals(path):
    """A .npy of (P, 4) boxes, one error line naming the file otherwise."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f'{path}: proposals file not found') from None
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f'{path}: not a .npy of (P, 4) boxes ({e})') from None


def expand_inputs(inputs):
    """Image files, folders (their images, not recursive, sorted) and glob patterns -> a list of
    paths, each once, in the order given. A folder without images, a pattern that matches
    nothing or a missing file is one error naming it."""
    paths = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            found = sorted(os.path.join(item, n) for n in os.listdir(item)
                           if n.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(item, n)))
            if not found:
                raise ValueError(f'{item}: no images ({", ".join(IMAGE_SUFFIXES)}) in this folder')
        elif os.path.exists(item):
            found = [item]
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item) if os.path.isfile(p))
            if not found:
                raise FileNotFoundError(f'{item}: no file matches this pattern')
        else:
            raise FileNotFoundError(f'image not found: {item}')
        paths.extend(found)
    return list(dict.fromkeys(paths))


def image_ids(paths):
    """COCO image ids for the paths: the numbers of their names when all are distinct numbers,
    else 1..N."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(s) for s in stems]
    return list(range(1, len(paths) + 1))


def coco_results(dets, image_id, category_ids=None, file_name=None):
    """One image's detections (dict of boxes, scores, labels) as COCO result dicts."""
    out = []
    for (x1, y1, x2, y2), score, label in zip(dets['boxes'].tolist(), dets['scores'].tolist(),
                                              dets['labels'].tolist()):
        result = {'image_id': image_id,
                  'category_id': category_ids[label - 1] if category_ids else int(label),
                  'bbox': [round(x1, 2), round(y1, 2), round(x2 - x1 + 1, 2), round(y2 - y1 + 1, 2)],
                  'score': round(float(score), 5)}
        if file_name is not None:
            result['file_name'] = file_name
        out.append(result)
    return out


def picture_names(paths):
    """IMAGE_detections.png for each path; a name two images would share gets its position."""
    names = [os.path.splitext(os.path.basename(p))[0] + '_detections.png' for p in paths]
    taken = {}
    for n in names:
        taken[n] = taken.get(n, 0) + 1
    return [n if taken[n] == 1 else f'{i + 1:06d}_{n}' for i, n in enumerate(names)]


def detect_files(model, info, paths, *, out_dir=None, pictures=None, json_path=None, threshold=0.05,
                 show=0.5, proposal_mode='fast', proposals=None, scales=None, log=print):
    """Detect in every image of `paths` with a model and its description (`load_model`).

    pictures: a list of PNG paths, one per image (default: OUT_DIR/IMAGE_detections.png; None
    with no out_dir: none drawn). json_path: where to write the COCO results (None: not
    written). proposals: (P, 4) boxes for a single image (Fast R-CNN; default: selective search).
    Returns dict(results (the COCO list), detections {path: dets}, failed [(path, why)],
    seconds {'proposals', 'detection'}, proposals: how many each image had (Fast R-CNN)).
    """
    faster = info['architecture'] == 'faster_rcnn'
    if pictures is None and out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        pictures = [os.path.join(out_dir, n) for n in picture_names(paths)]
    ids = image_ids(paths)
    results, detections, failed, counts = [], {}, [], []
    seconds = {'proposals': 0.0, 'detection': 0.0}
    bar = progress(range(len(paths)), desc='detect') if len(paths) > 1 else range(len(paths))
    try:
        for i in bar:
            path = paths[i]
            try:
                image = read_image(path)
                t = time.time()
                props = None if faster else (proposals if proposals is not None
                                             else selective_search(image, mode=proposal_mode))
                seconds['proposals'] += time.time() - t
                counts += [] if faster else [len(props)]
                t = time.time()
                dets = detect(model, image, props, score_thresh=threshold,
                              scales=scales or tuple(info['scales']), max_size=info['max_size'],
                              source=info['source'])
                seconds['detection'] += time.time() - t
            except (ValueError, OSError) as e:       # unreadable or unusable: say which, go on
                why = str(e).splitlines()[0] if str(e) else type(e).__name__
                failed.append((path, why))
                if len(paths) > 1:
                    log(f'skipped {path}: {why}')
                    continue
                raise ValueError(why if why.startswith(path) else f'{path}: {why}') from None
            detections[path] = dets
            results += coco_results(dets, ids[i], info.get('category_ids'), os.path.basename(path))
            if pictures:
                draw_detections(image, dets, info['class_names'], pictures[i], score_min=show)
    finally:                                         # what is done is written, also on an interrupt
        if json_path:
            text = json.dumps(results)
            atomic_write(json_path, lambda f: f.write(text.encode()))
    return dict(results=results, detections=detections, failed=failed, seconds=seconds,
                proposals=counts)
