"""What made the host wait for the device, and what crossed the bus, counted by call site.

Three kinds of event are recorded, each at the first frame outside the stand-in (and NumPy):

    launch a RawKernel launch (asynchronous on a GPU; counted to show which kernels ran)
    sync   the host blocks until the GPU has finished: .get(), .item(), .tolist(),
           int()/float()/bool() of a device array, cupy.asnumpy, printing an array, a sort
           (Thrust synchronises), nonzero/flatnonzero/unique/argwhere and boolean-mask indexing
           (the size of the result is read back first), an explicit synchronize()
    d2h    a device -> host copy (every one is also a sync)
    h2d    a host -> device copy: cupy.asarray/array of host data, and the uploads CuPy makes
           behind your back (a NumPy array or a list used as an index or as a scattered value)

    with cupy._standin.counting() as tally:     # only the events inside the block
        train_one_iteration()
    tally.total('sync'); print(tally.report())
    cupy._standin.counts()                      # everything since the last reset()

With CUPY_STANDIN_REPORT=FILE in the environment, a process writes its counts by call site
to FILE (JSON) when it exits: how a test sees what a command line run did on the "GPU".
"""
import atexit
import collections
import contextlib
import json
import os
import sys
import threading

import numpy as np

KINDS = ('sync', 'd2h', 'h2d', 'launch')
_STANDIN = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))      # tests/cupy_standin
_ROOT = os.path.dirname(os.path.dirname(_STANDIN))                          # the checkout
_NUMPY = os.path.dirname(os.path.abspath(np.__file__))
_lock = threading.Lock()


class Tally:
    """Events (kind, call site, what) -> how many times. A call site is the chain of the
    first DEPTH frames outside the stand-in, innermost first: 'path:line' each."""

    def __init__(self):
        self.events = collections.Counter()

    def total(self, kind='sync'):
        return sum(n for (k, _, _), n in self.events.items() if k == kind)

    def by_site(self, kind='sync', depth=1):
        """Counter 'path:line (what)' -> n for one kind of event; depth > 1 adds the callers
        ('site < caller < ...'), to see past helpers such as backend.to_device."""
        out = collections.Counter()
        for (k, chain, what), n in self.events.items():
            if k == kind:
                out[f"{' < '.join(chain[:depth])} ({what})"] += n
        return out

    def report(self, per=1, depth=1, kinds=KINDS):
        """The counts of each kind by call site, divided by `per` (e.g. iterations)."""
        lines = []
        for kind in kinds:
            lines.append(f'{kind}: {self.total(kind) / per:g}')
            for site, n in sorted(self.by_site(kind, depth).items()):
                lines.append(f'    {n / per:6g}  {site}')
        return '\n'.join(lines)

    def __repr__(self):
        return 'Tally(' + ', '.join(f'{k}={self.total(k)}' for k in KINDS) + ')'


_everything = Tally()
_active = [_everything]


DEPTH = 4


def _call_site():
    chain, frame = [], sys._getframe(2)
    while frame is not None and len(chain) < DEPTH:
        path = frame.f_code.co_filename
        if not path.startswith((_STANDIN, _NUMPY)):
            if path.startswith(_ROOT + os.sep):
                path = os.path.relpath(path, _ROOT)
            chain.append(f'{path}:{frame.f_lineno}')
        frame = frame.f_back
    return tuple(chain) or ('?',)


def record(kind, what):
    """Note one event of `kind` ('sync', 'd2h' or 'h2d'), e.g. record('sync', 'argsort')."""
    chain = _call_site()
    with _lock:
        for tally in _active:
            tally.events[(kind, chain, what)] += 1


def counts():
    """Every event since the process started (or since reset())."""
    return _everything


def reset():
    _everything.events.clear()


@contextlib.contextmanager
def counting():
    """A fresh Tally of the events inside the block (blocks may nest)."""
    tally = Tally()
    _active.append(tally)
    try:
        yield tally
    finally:
        _active.remove(tally)


def _write_report(path):
    with open(path, 'w') as f:
        json.dump({kind: dict(_everything.by_site(kind)) for kind in KINDS}, f, indent=1)


if os.environ.get('CUPY_STANDIN_REPORT'):
    atexit.register(_write_report, os.environ['CUPY_STANDIN_REPORT'])
