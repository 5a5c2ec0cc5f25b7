"""Pictures: detections on an image, precision/recall curves, a training run's loss curve.

Each draws on a bare matplotlib Figure with an Agg canvas (no display, no global pyplot state)
and writes the file atomically; the format follows the extension (PNG when there is none).
"""
import math
import os

import numpy as np

from . import backend
from .data.image import check_image
from .utils import atomic_write


def _save(fig, path, **kwargs):
    fmt = os.path.splitext(os.fspath(path))[1].lstrip('.').lower() or 'png'
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=100, **kwargs))
    return path


def draw_detections(image, detections, class_names, path, score_min=0.5, ground_truth=None):
    """Save a picture of the detections scoring >= score_min (box, class name, score) to `path`,
    with the optional ground truth (dict `boxes`, optional `labels`) as dashed white boxes."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    image = check_image(image)
    H, W = image.shape[:2]
    fig = Figure(figsize=(max(W, 320) / 100, max(W, 320) / 100 * H / W), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(image)
    ax.set_axis_off()
    colours = colormaps['tab10']

    def box(b, **style):
        # inclusive pixels: pixel i spans [i - 0.5, i + 0.5] in imshow's coordinates
        x1, y1, x2, y2 = (float(v) for v in b)
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1 + 1, y2 - y1 + 1, fill=False, **style))

    def name(label):
        label = int(label)
        return class_names[label - 1] if 1 <= label <= len(class_names) else f'class {label}'

    if ground_truth is not None:
        gt_boxes = backend.to_device(ground_truth['boxes'], 'cpu').reshape(-1, 4)
        gt_labels = ground_truth.get('labels')
        for k, b in enumerate(gt_boxes):
            box(b, edgecolor='white', linestyle='--', linewidth=1.2)
            if gt_labels is not None:
                ax.text(b[0], b[3], name(gt_labels[k]), color='white', fontsize=7, va='top')

    boxes, scores, labels = (backend.to_device(detections[k], 'cpu') for k in ('boxes', 'scores', 'labels'))
    for b, s, k in zip(boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)):
        if s < score_min:
            continue
        colour = colours(int(k) % 10)
        box(b, edgecolor=colour, linewidth=2)
        ax.text(b[0], b[1] - 2, f'{name(k)} {float(s):.2f}', color='white', fontsize=8, va='bottom',
                bbox=dict(facecolor=colour, alpha=0.8, pad=1, edgecolor='none'))
    ax.set(xlim=(-0.5, W - 0.5), ylim=(H - 0.5, -0.5))
    return _save(fig, path)


def plot_pr_curves(result, path):
    """Save the precision/recall curve of every class with ground truth (an `evaluate_voc`
    result) to `path`."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    for name, ap in result['ap'].items():
        if not math.isnan(ap):
            ax.plot(result['recall'][name], result['precision'][name], label=f'{name} ({ap:.3f})')
    ax.set(xlabel='recall', ylabel='precision', xlim=(0, 1), ylim=(0, 1.02),
           title=f'precision/recall, mAP {result["map"]:.3f}')
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize='small', loc='lower left')
    return _save(fig, path, bbox_inches='tight')


def plot_losses(history, names, title, path):
    """Save the loss curves of a training run: history rows (iteration, loss_1, ..., loss_k),
    one curve per name, each a running mean over about 2% of the run."""
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    h = np.array(history)
    fig = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    k = max(1, len(h) // 50)
    smooth = lambda v: np.convolve(v, np.ones(k) / k, mode='valid')  # noqa: E731
    for col, name in enumerate(names, start=1):
        ax.plot(h[k - 1:, 0], smooth(h[:, col]), label=name)
    ax.set_xlabel('iteration')
    ax.set_ylabel('loss')
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
