"""Proposals for a whole data set, computed once (one process per core, or on a Dask cluster)
and cached in a file.

Fast R-CNN trains and tests on precomputed selective-search boxes (Sec. 4, "each image ... 2k
proposals"); computing them is the slow part of the pipeline, so they are kept on disk.

Resuming: while a run computes, every finished chunk of images is written at once, atomically,
as one small .npz in the sidecar folder `<cache>.parts/`. A run that is killed loses at most the
chunks in flight; the next run with the same settings reads the sidecar and computes only what
is still missing. At the end the cache file is rewritten atomically and the sidecar removed.

The cache file's bytes depend only on its content (settings and boxes), never on how it was
made: `__mode__`, `__max_proposals__`, then one array per image id in sorted order (ids as
strings, code-point order; the images of other splits already in the cache included). One
process, N processes, a Dask cluster, interrupted and resumed or not: the same file.
"""
import contextlib
import functools
import hashlib
import math
import os
import shutil
import zipfile

import numpy as np

from ..utils import progress
from ..weights import save_npz
from .selective_search import MODES, selective_search

MAX_CHUNK = 16          # the default chunk (images per task and per sidecar file) is at most this


def _proposals_of(dataset, mode, max_proposals, i):
    return selective_search(dataset[i]['image'], mode, max_proposals)


def _proposals_of_chunk(dataset, mode, max_proposals, indices):
    """(indices, their boxes) for images `indices` of `dataset`: one task, in a local process or
    on a Dask worker (which reads the images itself, from the paths in the pickled dataset)."""
    return indices, [_proposals_of(dataset, mode, max_proposals, i) for i in indices]


def parts_folder(cache_path):
    """The sidecar folder of finished chunks of a run in progress: `<cache_path>.parts`."""
    return os.fspath(cache_path) + '.parts'


def _settings(mode, max_proposals):
    return {'__mode__': np.array(mode), '__max_proposals__': np.array(max_proposals)}


def _same_settings(z, mode, max_proposals):
    return ('__mode__' in z.files and str(z['__mode__']) == mode
            and '__max_proposals__' in z.files and int(z['__max_proposals__']) == max_proposals)


def _read_parts(folder, mode, max_proposals):
    """id -> boxes from the sidecar's chunk files made with these settings. Files of other
    settings, temporary files of a killed write (dot names) and unreadable files are skipped:
    their images are simply computed again."""
    found = {}
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    for name in names:
        if name.startswith('.') or not name.endswith('.npz'):
            continue
        try:
            with np.load(os.path.join(folder, name), allow_pickle=False) as z:
                if _same_settings(z, mode, max_proposals):
                    found.update({key: z[key] for key in z.files if not key.startswith('__')})
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            continue
    return found


def _write_part(folder, boxes, mode, max_proposals):
    """One finished chunk {id: boxes} -> the sidecar, atomically; named after its settings and
    first id (no other chunk of a run with these settings starts with that id)."""
    first = f'{mode}/{max_proposals}/{next(iter(boxes))}'
    name = hashlib.sha1(first.encode('utf-8')).hexdigest()[:20] + '.npz'
    save_npz({**_settings(mode, max_proposals), **boxes}, os.path.join(folder, name))


def _chunks(indices, chunk_size, workers):
    """`indices` cut into consecutive chunks: `chunk_size` each, by default about four per
    worker, at most MAX_CHUNK images (what a killed run can lose per worker)."""
    if chunk_size is None:
        chunk_size = min(MAX_CHUNK, max(1, math.ceil(len(indices) / (4 * max(1, workers)))))
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f'chunk_size must be a positive integer, got {chunk_size!r}')
    return [indices[k:k + chunk_size] for k in range(0, len(indices), chunk_size)]


def _compute_local(dataset, missing, mode, max_proposals, workers, chunk_size):
    """Yields (indices, boxes list) per chunk as chunks finish."""
    workers = min(workers or os.cpu_count() or 1, len(missing))
    job = functools.partial(_proposals_of_chunk, dataset, mode, max_proposals)
    chunks = _chunks(missing, chunk_size, workers)
    if workers > 1:   # each result depends only on its image: any order, any process
        import multiprocessing
        with multiprocessing.get_context('fork').Pool(workers) as pool:
            yield from pool.imap_unordered(job, chunks)
    else:
        for c in chunks:
            yield job(c)


def compute_dataset_proposals(dataset, cache_path, mode='fast', max_proposals=2000, workers=None,
                              scheduler=None, chunk_size=None):
    """Selective search boxes for every image of `dataset`, cached in one .npz file.

    dataset: has len() and ds[i] -> dict with 'image' (H, W, 3) uint8 and 'id' (an `ids` list is
    used when present, so a complete cache is read without decoding any image). The cache holds
    one (P, 4) float32 array per image id plus the mode and max_proposals it was made with;
    boxes already cached with the same settings are reused, missing ones computed, and the file
    rewritten atomically (other settings: everything is recomputed). Finished chunks of
    `chunk_size` images go to the sidecar `<cache_path>.parts/` as they complete, so a killed
    run resumes where it stopped (see the module's docstring).

    Where: `workers` processes on this machine (default: one per CPU core), or, with
    `scheduler` (a 'tcp://host:8786' address or a dask.distributed Client), the workers of a
    Dask cluster (needs `pip install 'dask[distributed]'`; the workers unpickle the dataset and
    read the images themselves, so the data must be at the same path on every worker). The file
    is the same either way. Returns a dict id -> (P, 4) float32 boxes, in the dataset's order.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    _chunks([], chunk_size, 1)                                    # a bad chunk_size fails at once
    ids = getattr(dataset, 'ids', None)
    if ids is None or len(ids) != len(dataset):
        ids = [dataset[i]['id'] for i in range(len(dataset))]
    cached = {}
    if os.path.exists(cache_path):
        try:
            with np.load(cache_path, allow_pickle=False) as z:
                if _same_settings(z, mode, max_proposals):   # keep every image, also those of other splits
                    cached = {key: z[key] for key in z.files if not key.startswith('__')}
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise ValueError(f'{cache_path}: not a readable proposal cache ({e}); '
                             f'delete it to recompute') from e
    parts = parts_folder(cache_path)
    cached.update(_read_parts(parts, mode, max_proposals))      # a killed run's finished chunks
    missing = [i for i, image_id in enumerate(ids) if str(image_id) not in cached]
    if missing:
        if scheduler is not None:
            from .cluster import compute_on_cluster
            results = compute_on_cluster(scheduler, _proposals_of_chunk, dataset, missing,
                                         (mode, max_proposals), functools.partial(_chunks, chunk_size=chunk_size))
        else:
            results = _compute_local(dataset, missing, mode, max_proposals, workers, chunk_size)

        def images():                  # each chunk to the sidecar as it arrives
            for indices, boxes in results:
                chunk = {str(ids[i]): b for i, b in zip(indices, boxes)}
                _write_part(parts, chunk, mode, max_proposals)
                cached.update(chunk)
                yield from indices
        where = '' if scheduler is None else ', dask'
        with contextlib.closing(results):    # stop the pool or the cluster's tasks on any error
            for _ in progress(images(), total=len(missing), desc=f'selective search ({mode}{where})'):
                pass
    if missing or os.path.isdir(parts):
        arrays = {**_settings(mode, max_proposals), **{k: cached[k] for k in sorted(cached)}}
        save_npz(arrays, cache_path)
        shutil.rmtree(parts, ignore_errors=True)
    return {image_id: cached[str(image_id)] for image_id in ids}


def dataset_proposals(dataset, root, mode='fast', max_proposals=2000, scheduler=None):
    """`compute_dataset_proposals` with the cache in ROOT/proposals_MODE_MAX.npz (the data set's
    own folder): what `train`, `test` and the demo use. `scheduler`: see there."""
    path = os.path.join(root, f'proposals_{mode}_{max_proposals}.npz')
    return compute_dataset_proposals(dataset, path, mode, max_proposals, scheduler=scheduler)
