"""Checkpoints: everything a run needs to continue exactly where it stopped, in one `.npz`.

The file holds the parameters (`param/NAME`), the optimiser's buffers (`opt/KEY/I`: momentum,
Adam's moments), any extra arrays of the trainer (the target statistics) and one JSON string
`meta` (iteration, loss history, the optimiser's and the schedule's scalars, the settings).
It is written atomically: a run killed while saving leaves the previous checkpoint whole.
"""
import json
import os

import numpy as np

from ..utils import atomic_write


def save_checkpoint(path, model, optimizer, meta, arrays):
    """Write model, optimizer (its `state_dict`), the JSON-able dict `meta` and the dict of
    NumPy `arrays` to `path`."""
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
    atomic_write(path, lambda f: np.savez(f, **out))
    return path


def load_checkpoint(path, model, optimizer, array_names=()):
    """Load what `save_checkpoint` wrote into model and optimizer; returns (meta, {name: array}
    for `array_names`)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f'no checkpoint to resume from: {path}')
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z['meta']))
        model.load_state_dict({k[6:]: z[k] for k in z.files if k.startswith('param/')})
        opt = {}
        for key, value in meta['optimizer'].items():
            if isinstance(value, dict):
                names = [f'opt/{key}/{i}' for i in range(value['buffers'])]
                value = [z[name] if name in z.files else None for name in names]
            opt[key] = value
        arrays = {name: z[name] for name in array_names}
    optimizer.load_state_dict(opt)
    return meta, arrays
