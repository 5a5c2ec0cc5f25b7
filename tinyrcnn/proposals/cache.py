"""Proposals for a whole data set, computed once (one process per core) and cached in a file.

Fast R-CNN trains and tests on precomputed selective-search boxes (Sec. 4, "each image ... 2k
proposals"); computing them is the slow part of the pipeline, so they are kept on disk.
"""
import functools
import os
import zipfile

import numpy as np

from ..utils import progress
from ..weights import save_npz
from .selective_search import MODES, selective_search


def _proposals_of(dataset, mode, max_proposals, i):
    return selective_search(dataset[i]['image'], mode, max_proposals)


def compute_dataset_proposals(dataset, cache_path, mode='fast', max_proposals=2000, workers=None):
    """Selective search boxes for every image of `dataset`, cached in one .npz file.

    dataset: has len() and ds[i] -> dict with 'image' (H, W, 3) uint8 and 'id' (an `ids` list is
    used when present, so a complete cache is read without decoding any image). The cache holds
    one (P, 4) float32 array per image id plus the mode and max_proposals it was made with;
    boxes already cached with the same settings are reused, missing ones computed, and the file
    rewritten atomically (other settings: everything is recomputed). `workers` processes
    (default: one per CPU core) share the images. Returns a dict id -> (P, 4) float32 boxes,
    in the dataset's order.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    ids = getattr(dataset, 'ids', None)
    if ids is None or len(ids) != len(dataset):
        ids = [dataset[i]['id'] for i in range(len(dataset))]
    cached = {}
    if os.path.exists(cache_path):
        try:
            with np.load(cache_path, allow_pickle=False) as z:
                same = ('__mode__' in z.files and str(z['__mode__']) == mode
                        and '__max_proposals__' in z.files and int(z['__max_proposals__']) == max_proposals)
                if same:                 # keep every image, also those of other splits
                    cached = {key: z[key] for key in z.files if not key.startswith('__')}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise ValueError(f'{cache_path}: not a readable proposal cache ({e}); '
                             f'delete it to recompute') from e
    missing = [i for i, image_id in enumerate(ids) if str(image_id) not in cached]
    if missing:
        workers = min(workers or os.cpu_count() or 1, len(missing))
        job = functools.partial(_proposals_of, dataset, mode, max_proposals)
        if workers > 1:   # one image per task; each result depends only on its image
            import multiprocessing
            with multiprocessing.get_context('fork').Pool(workers) as pool:
                results = pool.imap(job, missing)
                for i, boxes in zip(missing, progress(results, total=len(missing),
                                                      desc=f'selective search ({mode})')):
                    cached[str(ids[i])] = boxes
        else:
            for i in progress(missing, desc=f'selective search ({mode})'):
                cached[str(ids[i])] = job(i)
        arrays = {'__mode__': np.array(mode), '__max_proposals__': np.array(max_proposals), **cached}
        save_npz(arrays, cache_path)
    return {image_id: cached[str(image_id)] for image_id in ids}


def dataset_proposals(dataset, root, mode='fast', max_proposals=2000):
    """`compute_dataset_proposals` with the cache in ROOT/proposals_MODE_MAX.npz (the data set's
    own folder): what `train`, `test` and the demo use."""
    path = os.path.join(root, f'proposals_{mode}_{max_proposals}.npz')
    return compute_dataset_proposals(dataset, path, mode, max_proposals)
