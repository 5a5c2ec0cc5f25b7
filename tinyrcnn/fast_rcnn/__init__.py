"""Fast R-CNN (Girshick, ICCV 2015), one paper section per file.

    network.py    the network: a pretrained VGG with RoI pooling and two sibling outputs (Sec. 2.1-2.2)
    minibatch.py  hierarchical sampling: N images, R/N RoIs each, 25% foreground (Sec. 2.3)
    loss.py       the multi-task loss: log loss + smooth L1 (Sec. 2.3, Eq. 1-3)
    detect.py     detection: one pass, per-class NMS, image pyramids (Sec. 2.4, 3); evaluation
    svd.py        truncated SVD of the fc layers (Sec. 3.1)
"""
from .detect import detect, evaluate, im_detect, postprocess
from .loss import multitask_loss
from .minibatch import expand_targets, make_minibatch, prepare_roidb, sample_rois, target_stats
from .network import FastRCNN, build_trunk
from .svd import svd_linear

__all__ = ['FastRCNN', 'build_trunk', 'prepare_roidb', 'target_stats', 'sample_rois',
           'expand_targets', 'make_minibatch', 'multitask_loss', 'im_detect', 'postprocess',
           'detect', 'evaluate', 'svd_linear']
