"""tinyrcnn.viz: the pictures are real PNG files, written atomically."""
import os

import numpy as np

from tinyrcnn.eval import evaluate_voc
from tinyrcnn.viz import draw_detections, plot_losses, plot_pr_curves

PNG = b'\x89PNG\r\n\x1a\n'
IMAGE = np.full((100, 150, 3), 128, np.uint8)


def test_draw_detections_writes_png(tmp_path):
    dets = dict(boxes=np.array([[5, 5, 40, 30], [50, 10, 90, 60]], np.float32),
                scores=np.array([0.9, 0.2], np.float32), labels=np.array([1, 2]))
    gt = dict(boxes=np.array([[6, 4, 41, 31]], np.float32), labels=np.array([1]))
    path = tmp_path / 'out' / 'dets.png'
    assert draw_detections(IMAGE, dets, ['cat', 'dog'], path, ground_truth=gt) == path
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 1000
    assert os.listdir(path.parent) == ['dets.png']   # no temporary file left behind


def test_pr_curves_and_loss_curve(tmp_path):
    gts = [dict(boxes=np.array([[0, 0, 9, 9], [20, 20, 39, 39]], np.float32), labels=np.array([1, 1]))]
    dets = [dict(boxes=np.array([[0, 0, 9, 9], [60, 60, 69, 69]], np.float32),
                 scores=np.array([.9, .8]), labels=np.array([1, 1]))]
    path = tmp_path / 'plots' / 'pr.png'
    plot_pr_curves(evaluate_voc(dets, gts, ('cat', 'dog')), path)
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 1000
    history = [(i, 2.0 / i, 1.0 / i, 1.0 / i) for i in range(1, 120)]
    path = plot_losses(history, ('total', 'a', 'b'), 'losses', tmp_path / 'loss.png')
    assert path.read_bytes()[:8] == PNG
