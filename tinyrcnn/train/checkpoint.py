"""Checkpoints: everything a run needs to continue exactly where it stopped, one file per save.

OUT/checkpoint_00001000.npz holds the parameters (`param/NAME`), the optimiser's buffers
(`opt/KEY/I`: momentum, Adam's moments), the trainer's extra arrays (the target statistics) and
one JSON string `meta` (iteration, loss history, the optimiser's and the schedule's scalars, the
settings and the data set the run was made with). The newest `keep` files stay; older ones go
once a newer one is safely written. Writing is atomic (a temporary file, then a rename), so a run
killed, or a disk that fills, while saving leaves the files already there whole. Every member of
the zip carries a CRC that reading it through checks: `read_checkpoint` reads them all, so a
damaged file is found before anything of it is used, and `newest_checkpoint` falls back to the
one before, saying why.
"""
import dataclasses
import glob
import json
import os
import re
import zipfile

import numpy as np

from ..utils import atomic_write
from .config import FasterTrainConfig, TrainConfig

NAME = 'checkpoint_{:08d}.npz'
LEGACY = 'checkpoint.npz'           # the one checkpoint of earlier versions, still read
# Settings a resumed run may change: they do not change what the next iterations compute
# (`device` does, by rounding: a run moved to a GPU goes on, not bit for bit). `iterations` too,
# except in the alternating schedule, whose steps are fractions of it.
MAY_CHANGE = ('iterations', 'checkpoint_every', 'keep_checkpoints', 'skip_nonfinite', 'device',
              'weights')


def checkpoint_files(out_dir):
    """The checkpoints in out_dir, newest (highest iteration) first; a legacy one last."""
    found = [(int(m.group(1)), path) for path in glob.glob(os.path.join(out_dir, 'checkpoint_*.npz'))
             if (m := re.fullmatch(r'checkpoint_(\d+)\.npz', os.path.basename(path)))]
    legacy = os.path.join(out_dir, LEGACY)
    return [p for _, p in sorted(found, reverse=True)] + ([legacy] if os.path.exists(legacy) else [])


def remove_temporaries(out_dir):
    """Remove what writes killed half-way left behind (atomic_write's `.NAME.xxxx.tmp`)."""
    for path in glob.glob(os.path.join(out_dir, '.*.tmp')):
        try:
            os.remove(path)
        except OSError:
            pass


def save_checkpoint(out_dir, iteration, model, optimizer, meta, arrays, keep=2):
    """Write OUT/checkpoint_{iteration}.npz (model, optimizer state_dict, the JSON-able `meta`,
    the dict of NumPy `arrays`), then remove all but the newest `keep`. Returns its path. A
    failed write raises OSError saying so; the checkpoints already on disk are left as they are."""
    path = os.path.join(out_dir, NAME.format(iteration))
    out = {f'param/{k}': v for k, v in model.state_dict().items()}
    opt_scalars = {}
    for key, value in optimizer.state_dict().items():   # buffers (lists of arrays) and scalars
        if isinstance(value, list):
            opt_scalars[key] = {'buffers': len(value)}
            out.update({f'opt/{key}/{i}': v for i, v in enumerate(value) if v is not None})
        else:
            opt_scalars[key] = value
    out['meta'] = np.array(json.dumps(dict(meta, optimizer=opt_scalars)))
    out.update(arrays)
    try:
        atomic_write(path, lambda f: np.savez(f, **out))
    except OSError as e:
        raise OSError(f'cannot write the checkpoint {path} ({e.strerror or e}); the checkpoints '
                      f'already on disk are intact') from None
    for old in checkpoint_files(out_dir)[keep:]:
        if old != path:
            try:
                os.remove(old)
            except OSError:
                pass
    return path


def read_checkpoint(path):
    """Everything in a checkpoint, every member read through (so its CRC is checked): a dict
    meta, the model's state dict, the optimiser's state dict and the other arrays by name.
    Raises ValueError naming the file and the damage."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop('meta')))
        state = {k[6:]: arrays.pop(k) for k in list(arrays) if k.startswith('param/')}
        opt = {}
        for key, value in meta['optimizer'].items():
            if isinstance(value, dict):
                value = [arrays.pop(f'opt/{key}/{i}', None) for i in range(value['buffers'])]
            opt[key] = value
        int(meta['iteration']), list(meta['history']), dict(meta['schedule'])
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f'{path}: damaged ({reason})') from None
    return meta, state, opt, arrays


def data_fingerprint(dataset):
    """What identifies a training set: its size, a digest of its image ids, its classes."""
    import hashlib
    ids = getattr(dataset, 'ids', None)
    digest = hashlib.sha256('\n'.join(map(str, ids)).encode()).hexdigest()[:16] if ids else None
    return {'images': len(dataset), 'ids_sha256': digest, 'class_names': list(dataset.class_names)}


def differences(meta, settings, data):
    """The settings (a dict) and data set (`data_fingerprint`) of this run against a
    checkpoint's: ['key (checkpoint X, now Y)', ...] for what may not change on a resume."""
    saved, out = meta.get('config', {}), []
    settings = json.loads(json.dumps(settings))             # tuples as the JSON's lists
    may_change = [k for k in MAY_CHANGE if k != 'iterations' or settings.get('schedule') != 'alternating']
    for key in sorted(set(saved) | set(settings)):
        if key not in may_change and saved.get(key) != settings.get(key):
            out.append(f'{key} (checkpoint {saved.get(key)!r}, now {settings.get(key)!r})')
    if 'data' in meta and meta['data'] != data:
        out.append(f"the data set (checkpoint {meta['data']['images']} images, now {data['images']})")
    return out


def newest_checkpoint(out_dir):
    """The newest checkpoint in out_dir that reads whole: (path, read_checkpoint's four values,
    [(path, why) of the newer ones skipped]). FileNotFoundError when there is none; ValueError
    listing the damage when every one is damaged."""
    skipped = []
    for path in checkpoint_files(out_dir):
        try:
            return path, read_checkpoint(path), skipped
        except ValueError as e:
            skipped.append((path, str(e)))
    if skipped:
        raise ValueError(f'no usable checkpoint in {out_dir}: ' + '; '.join(why for _, why in skipped))
    raise FileNotFoundError(f'no checkpoint to resume from in {out_dir}')


def resume_settings(out_dir, model=None):
    """('fast' or 'faster', the settings) of the newest checkpoint in out_dir whose description
    reads (what `train --resume` continues with); `model`, where given, must be the
    checkpoint's kind."""
    files = checkpoint_files(out_dir)
    if not files:
        raise FileNotFoundError(f'no checkpoint to resume from in {out_dir}')
    damaged = []
    for path in files:
        try:
            saved = read_checkpoint(path)[0]['config']    # the one --resume will load: all read
        except (ValueError, KeyError, TypeError) as e:
            damaged.append(str(e) if isinstance(e, ValueError) else f'{path}: no settings')
            continue
        fast = {f.name for f in dataclasses.fields(TrainConfig)}
        faster = {f.name for f in dataclasses.fields(FasterTrainConfig)}
        kind = 'faster' if set(saved) & (faster - fast) else 'fast'
        if model not in (None, kind):
            raise ValueError(f'{path} is a checkpoint of {kind.capitalize()} R-CNN, not of '
                             f'{model.capitalize()} R-CNN: use --model {kind} or another --out')
        return kind, saved
    raise ValueError(f'no usable checkpoint in {out_dir}: ' + '; '.join(damaged))
