"""Felzenszwalb's segmentation for every k of selective search at once, the merge loop compiled.

Selective search segments each colour space at several scales k (Sec. 3.2; 'fast': k = 50 and
100). scikit-image's `felzenszwalb`, the reference, smooths the image, weighs and sorts the
8-connected pixel graph's edges and runs the merge loop, once per k; only the loop depends on
k. Here the smoothing, the weights and the sort are done once per colour space, with the very
NumPy and scikit-image calls of the reference (so the same edge order, ties included), and
the loop runs per k in `felzenszwalb.cpp` (union by size with path halving, where scikit-image's
union-find walks long chains). The labels equal the reference's exactly
(tests/speed/test_felzenszwalb.py). Needs a C++ compiler (g++, as the kernels' CPU build);
without one `segment_scales` returns None and selective search runs the reference.
"""
import numpy as np

from . import native


def _library():
    """The compiled merge loop, or None (see `native.library`)."""
    return native.library('felzenszwalb.cpp', {'felzenszwalb_segment': [
        native.i64, native.i64, native.pointer, native.pointer, native.double, native.i64,
        native.pointer]}, "selective search runs scikit-image's reference")


def sorted_edges(image, sigma):
    """The smoothed image's 8-connected graph, as scikit-image's felzenszwalb builds it:
    (edges (E, 2) int64 pixel pairs, costs (E,) float64 Euclidean colour distances), both in
    the order of np.argsort(costs)."""
    from skimage.filters import gaussian
    from skimage.util import img_as_float64
    image = gaussian(img_as_float64(image), sigma=[sigma, sigma, 0], mode='reflect',
                     channel_axis=-1)
    H, W = image.shape[:2]

    def distance(a, b):
        return np.sqrt(np.sum((a - b) * (a - b), axis=-1))

    costs = np.hstack([distance(image[:, 1:], image[:, :W - 1]).ravel(),          # right
                       distance(image[1:, :], image[:H - 1, :]).ravel(),          # down
                       distance(image[1:, 1:], image[:H - 1, :W - 1]).ravel(),    # down-right
                       distance(image[1:, :W - 1], image[:H - 1, 1:]).ravel()])   # up-right
    pixel = np.arange(H * W, dtype=np.int64).reshape(H, W)
    edges = np.vstack([np.c_[pixel[:, 1:].ravel(), pixel[:, :W - 1].ravel()],
                       np.c_[pixel[1:, :].ravel(), pixel[:H - 1, :].ravel()],
                       np.c_[pixel[1:, 1:].ravel(), pixel[:H - 1, :W - 1].ravel()],
                       np.c_[pixel[:H - 1, 1:].ravel(), pixel[1:, :W - 1].ravel()]])
    order = np.argsort(costs)
    return np.ascontiguousarray(edges[order]), np.ascontiguousarray(costs[order])


def segment_scales(image, scales, sigma):
    """[felzenszwalb(image, scale=k, sigma=sigma, min_size=int(k), channel_axis=-1) for k in scales]
    (H, W) int64 label images, from one sort; None where the loop cannot be compiled."""
    lib = _library()
    if lib is None:
        return None
    H, W = image.shape[:2]
    edges, costs = sorted_edges(image, sigma)
    out = []
    for k in scales:
        labels = np.empty(H * W, np.int64)
        lib.felzenszwalb_segment(H * W, len(costs), edges.ctypes.data, costs.ctypes.data,
                                 float(k) / 255., int(k), labels.ctypes.data)
        out.append(labels.reshape(H, W))
    return out
