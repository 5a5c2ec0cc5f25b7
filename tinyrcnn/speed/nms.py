"""nms's CPU speed path: the same greedy loop, compiled (`nms.cpp`).

`boxes.nms` (the reference) visits the boxes by decreasing score and, for each box it keeps,
computes its IoU with every box still in the running: eight small NumPy calls per kept box,
about 50 us each round, so 15 ms for the RPN's 600 boxes of which it keeps 300 (the Faster
R-CNN demo, every image). Here the boxes are sorted and their areas computed as there, and the
loop runs in C++ with the reference's formula in the boxes' dtype, so the kept indices are the
reference's exactly (tests/speed/test_speed.py). Without a compiler `compiled_nms` returns None
and `boxes.nms` runs its loop.
"""
import numpy as np

from . import native

_P, _I = native.pointer, native.i64
_SIGNATURES = {'nms': [_P] * 5 + [_I, native.double, _I, _P, _P, _P]}     # as in nms.cpp


def compiled_nms(boxes, scores, thresh, max_keep=None, presorted=False):
    """`boxes.nms` for NumPy boxes already checked, `thresh` in their dtype; None where the
    loop cannot be compiled."""
    fn = native.typed('nms.cpp', 'nms', boxes.dtype, _SIGNATURES, 'nms runs its NumPy loop')
    if fn is None:
        return None
    order = np.arange(len(scores)) if presorted else np.argsort(-scores, kind='stable')
    x1, y1, x2, y2 = (np.ascontiguousarray(c) for c in boxes[order].T)
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    n = len(order)
    limit = n if max_keep is None else min(int(max_keep), n)
    suppressed, kept = np.zeros(n, np.uint8), np.zeros(1, np.int64)
    keep = np.empty(max(limit, 1), np.int64)
    fn(x1.ctypes.data, y1.ctypes.data, x2.ctypes.data, y2.ctypes.data, areas.ctypes.data, n,
       float(thresh), limit, suppressed.ctypes.data, keep.ctypes.data, kept.ctypes.data)
    return order[keep[:kept[0]]].astype(np.int64)
