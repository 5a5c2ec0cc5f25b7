"""Anchors: the reference boxes of the Region Proposal Network (Faster R-CNN, Ren et al., 2015, Sec. 3.1).

At every position of the last shared conv map the RPN predicts k = len(ratios) * len(scales)
proposals, each relative to one anchor: a box centred on that position's receptive cell with one
aspect ratio and one scale. The k anchors of the first 16x16 cell are made once
(`generate_anchors`) and translated over the map (`shift_anchors`), which is what makes the RPN
translation invariant (Sec. 3.1.1).

Boxes are [x1, y1, x2, y2] in 0-based inclusive pixels, as everywhere in tinyrcnn.
"""
import numpy as np


def _with_size(cx, cy, ws, hs):
    """Boxes of widths ws and heights hs (inclusive pixels) centred on (cx, cy) -> (n, 4)."""
    ws, hs = np.asarray(ws, np.float64), np.asarray(hs, np.float64)
    return np.stack([cx - 0.5 * (ws - 1), cy - 0.5 * (hs - 1),
                     cx + 0.5 * (ws - 1), cy + 0.5 * (hs - 1)], axis=1)


def generate_anchors(base_size=16, ratios=(0.5, 1, 2), scales=(8, 16, 32)):
    """The anchors of the first base_size x base_size cell -> (len(ratios) * len(scales), 4).

    As in the released Faster R-CNN code: for each ratio r = h / w (outer loop), the base cell's
    area is reshaped to width round(sqrt(area / r)) and height round(width * r) (NumPy's
    round-half-to-even, so widths are whole pixels), then each scale s (inner loop) multiplies
    both sides. With the defaults the first anchor is [-84, -40, 99, 55]: 184 x 96 pixels
    around the cell's centre (7.5, 7.5).
    """
    ratios, scales = np.asarray(ratios, np.float64), np.asarray(scales, np.float64)
    if base_size <= 0 or ratios.ndim != 1 or scales.ndim != 1 or not len(ratios) or not len(scales) \
            or (ratios <= 0).any() or (scales <= 0).any():
        raise ValueError(f'generate_anchors expects a positive base_size and non-empty sequences of '
                         f'positive ratios and scales, got {base_size}, {ratios.tolist()}, '
                         f'{scales.tolist()}')
    c = 0.5 * (base_size - 1)                       # centre of the cell [0, base_size - 1]
    ws = np.round(np.sqrt(base_size * base_size / ratios))   # (R,) same area, aspect ratio r
    hs = np.round(ws * ratios)
    ws = (ws[:, None] * scales[None, :]).reshape(-1)         # (R*S,) ratio-major
    hs = (hs[:, None] * scales[None, :]).reshape(-1)
    return _with_size(c, c, ws, hs).astype(np.float32)       # (A, 4)


def shift_anchors(anchors, feat_h, feat_w, stride=16):
    """All anchors of an feat_h x feat_w map -> (feat_h * feat_w * A, 4), ordered (y, x, a).

    The anchors at map position (y, x) are the base anchors moved by (x * stride, y * stride):
    the same order as the RPN's outputs flattened from (A, H, W) to (H, W, A)."""
    anchors = np.asarray(anchors, np.float32)
    if anchors.ndim != 2 or anchors.shape[1] != 4:
        raise ValueError(f'anchors must be (A, 4) boxes, got shape {anchors.shape}')
    if feat_h < 0 or feat_w < 0 or stride <= 0:
        raise ValueError(f'shift_anchors expects a map size >= 0 and stride > 0, got '
                         f'{feat_h}x{feat_w}, stride {stride}')
    sy, sx = np.meshgrid(np.arange(feat_h) * stride, np.arange(feat_w) * stride, indexing='ij')
    shifts = np.stack([sx, sy, sx, sy], axis=-1).reshape(-1, 1, 4).astype(np.float32)  # (HW, 1, 4)
    return (shifts + anchors[None]).reshape(-1, 4)                                     # (HWA, 4)
