"""Faster R-CNN (Ren et al., 2015): Fast R-CNN with a Region Proposal Network on its conv trunk.

One network, two modules (Sec. 3): the RPN (`models.rpn`) slides over the last shared conv map
and proposes boxes; the Fast R-CNN head pools those boxes from the same map and classifies and
refines them. `FasterRCNN` is a `FastRCNN` (same `features`, `roi_pool`, `classifier`,
`cls_score`, `bbox_pred`, `head`) plus `rpn`, so Fast R-CNN weights, export and `im_detect`
apply to it unchanged.

    model = FasterRCNN('vgg-tiny', num_classes=6, anchor_scales=(2, 4, 8))
    losses = model(images, im_info, gt_boxes, gt_labels, cfg, rng)   # train(): dict of losses
    dets = detect(model.eval(), image, scale=192, max_size=320, source='tiny')  # no selective search
"""
import time

import numpy as np

from .. import backend, nn
from .. import boxes as bx
from ..tensor import Tensor, no_grad
from .anchors import generate_anchors, shift_anchors
from .fast_rcnn import FastRCNN
from .rpn import RPNHead, anchor_targets, flatten_outputs, proposal_layer, rpn_loss

# Sec. 3.3 and the released code: 12000 boxes before NMS and 2000 after while training,
# 6000 and 300 at test time; NMS at IoU 0.7; boxes under 16 original pixels dropped.
RPN_DEFAULTS = dict(train_pre_nms_top_n=12000, train_post_nms_top_n=2000,
                    test_pre_nms_top_n=6000, test_post_nms_top_n=300,
                    rpn_nms_thresh=0.7, rpn_min_size=16)


class FasterRCNN(FastRCNN):
    """FasterRCNN(trunk='vgg16', num_classes=20, ..., anchor_scales=(8, 16, 32),
    anchor_ratios=(0.5, 1, 2), rpn_channels=None, **RPN_DEFAULTS).

    rpn_channels: width of the RPN's 3x3 conv; None takes the trunk's channel count (512 for
    VGG16, the paper's choice). Anchors have base size 1/spatial_scale (16) and the given
    scales and ratios (Sec. 3.1.1: 3 scales x 3 ratios, k = 9).

    forward(images (1, 3, H, W), im_info (H, W, scale), gt_boxes (G, 4), gt_labels (G,), cfg, rng)
      in train() mode with ground truth: a dict of Tensors loss, rpn_cls, rpn_loc, cls, loc
      (approximate joint training: the proposals are constants, Sec. 3.2 (ii));
      otherwise: proposals (P, 4) array in input pixels, cls_score (P, K+1), bbox_pred (P, 4(K+1)).
    """

    def __init__(self, trunk='vgg16', num_classes=20, freeze_stages=2, roi_size=(7, 7),
                 spatial_scale=1 / 16, weights=None, anchor_scales=(8, 16, 32),
                 anchor_ratios=(0.5, 1, 2), rpn_channels=None, **rpn_settings):
        super().__init__(trunk, num_classes, freeze_stages, roi_size, spatial_scale, weights)
        unknown = set(rpn_settings) - set(RPN_DEFAULTS)
        if unknown:
            raise ValueError(f'unknown RPN settings {sorted(unknown)}; expected {sorted(RPN_DEFAULTS)}')
        self.settings = dict(RPN_DEFAULTS, **rpn_settings)
        self.feat_stride = int(round(1 / spatial_scale))
        self.anchor_scales, self.anchor_ratios = tuple(anchor_scales), tuple(anchor_ratios)
        self.base_anchors = generate_anchors(self.feat_stride, anchor_ratios, anchor_scales)  # (A, 4)
        channels = [m for m in self.features if isinstance(m, nn.Conv2d)][-1].out_channels
        self.rpn_channels = rpn_channels or channels
        self.rpn = RPNHead(channels, self.rpn_channels, len(self.base_anchors))

    def anchors(self, feat_h, feat_w):
        return shift_anchors(self.base_anchors, feat_h, feat_w, self.feat_stride)  # (HWA, 4)

    def propose(self, logits, deltas, im_info, mode=None):
        """RPN outputs (arrays, one image) -> proposals (P, 4) float32 NumPy in input pixels and
        their objectness (P,), with the 'train' or 'test' top-N settings (None: by the model's
        mode)."""
        scores, offsets = flatten_outputs(logits, deltas)             # (HWA, 2), (HWA, 4)
        xp = backend.get_array_module(scores)
        objectness = 1 / (1 + xp.exp(scores[:, 0] - scores[:, 1]))   # softmax, "object" column
        mode = mode or ('train' if self.training else 'test')
        H, W, scale = im_info
        boxes, objectness = proposal_layer(
            objectness, offsets, self.anchors(*logits.shape[2:]), (H, W), scale,
            self.settings[f'{mode}_pre_nms_top_n'], self.settings[f'{mode}_post_nms_top_n'],
            self.settings['rpn_nms_thresh'], self.settings['rpn_min_size'])
        return backend.to_device(boxes, 'cpu'), backend.to_device(objectness, 'cpu')

    def forward(self, images, im_info, gt_boxes=None, gt_labels=None, cfg=None, rng=None,
                proposals=None, stage='joint'):
        """See the class docstring. `proposals` (P, 4) replaces the RPN's own (the alternating
        schedule's step 2 trains the head on boxes from an earlier RPN); `stage` 'rpn' or 'head'
        keeps only that part's loss."""
        if images.shape[0] != 1:
            raise ValueError(f'FasterRCNN takes one image at a time (N=1, Sec. 3.1.3), got {images.shape[0]}')
        feats = self.features(images)                              # (1, C, H/16, W/16)
        logits, deltas = self.rpn(feats)                           # (1, 2A, h, w), (1, 4A, h, w)
        training = self.training and gt_boxes is not None
        if proposals is None and not (training and stage == 'rpn'):   # an RPN step needs none
            proposals, _ = self.propose(logits.data, deltas.data, im_info)
        if training:
            return self.losses(feats, logits, deltas, proposals, im_info, gt_boxes, gt_labels,
                               cfg, rng, stage)
        return proposals, *self.head(feats, self._rois(proposals, feats))

    def _rois(self, boxes, feats):
        rois = np.hstack([np.zeros((len(boxes), 1), np.float32), boxes]).astype(feats.dtype)
        return backend.to_device(rois, feats.device)               # (P, 5)

    def losses(self, feats, logits, deltas, proposals, im_info, gt_boxes, gt_labels, cfg, rng,
               stage='joint'):
        """RPN loss + Fast R-CNN loss for one image (Sec. 3.2 (ii), approximate joint training).

        cfg: a `train_faster.FasterTrainConfig`; rng: the iteration's NumPy Generator for the
        samplings; stage: 'joint' (both), 'rpn' or 'head' (the alternating schedule's steps)."""
        if cfg is None:
            from ..train_faster import FasterTrainConfig
            cfg = FasterTrainConfig()
        if stage not in ('joint', 'rpn', 'head'):
            raise ValueError(f"stage must be 'joint', 'rpn' or 'head', got {stage!r}")
        rng = np.random.default_rng(0) if rng is None else rng
        H, W, _ = im_info
        gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
        gt_labels = np.asarray(gt_labels, np.int64).reshape(-1)
        zero = feats.sum() * 0.0
        out = dict(rpn_cls=zero, rpn_loc=zero, cls=zero, loc=zero)
        if stage in ('joint', 'rpn'):
            labels, targets = anchor_targets(
                self.anchors(*feats.shape[2:]), gt_boxes, (H, W), rng, cfg.rpn_batch_size,
                cfg.rpn_fg_fraction, cfg.rpn_positive_overlap, cfg.rpn_negative_overlap,
                cfg.rpn_allowed_border)
            out['rpn_cls'], out['rpn_loc'] = rpn_loss(logits, deltas, labels, targets, cfg.rpn_sigma)
        if stage in ('joint', 'head'):
            rois, labels, bbox_targets, bbox_weights = proposal_targets(
                proposals, gt_boxes, gt_labels, self.num_classes, cfg, rng)
            if len(rois):
                from ..train import multitask_loss
                cls_score, bbox_pred = self.head(feats, self._rois(rois, feats))
                on = lambda a: backend.to_device(a, feats.device)  # noqa: E731
                _, out['cls'], out['loc'] = multitask_loss(cls_score, bbox_pred, on(labels),
                                                           on(bbox_targets), on(bbox_weights), cfg)
        out['loss'] = out['rpn_cls'] + out['rpn_loc'] + out['cls'] + out['loc'] * cfg.loss_lambda
        return out


def proposal_targets(proposals, gt_boxes, gt_labels, num_classes, cfg, rng,
                     means=bx.BBOX_NORMALIZE_MEANS, stds=bx.BBOX_NORMALIZE_STDS):
    """Training RoIs for the Fast R-CNN head from the RPN's proposals (the released code's
    ProposalTargetLayer): the ground-truth boxes join the proposals, then Fast R-CNN's own
    sampling (`train.sample_rois`: R RoIs, fg_fraction foreground at IoU >= fg_thresh, the rest
    background at IoU in [bg_thresh_lo, bg_thresh_hi)). Targets are normalised with FIXED
    means and stds (0, 0, 0, 0) and (0.1, 0.1, 0.2, 0.2), the code's values, so they need no
    pass over the data; export folds them into bbox_pred as for Fast R-CNN.

    Returns rois (R, 4) in input pixels, labels (R,), bbox_targets and bbox_weights (R, 4(K+1)).
    """
    from ..train import expand_targets, sample_rois
    gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    rois = np.concatenate([np.asarray(proposals, np.float32).reshape(-1, 4), gt_boxes])  # (P+G, 4)
    if len(gt_boxes) and len(rois):
        iou = bx.box_iou(rois, gt_boxes)                           # (P+G, G)
        assignment, max_iou = iou.argmax(axis=1), iou.max(axis=1)
    else:
        assignment, max_iou = np.zeros(len(rois), np.int64), np.zeros(len(rois), np.float32)
    entry = dict(rois=rois, max_iou=max_iou, assignment=assignment, gt_boxes=gt_boxes,
                 gt_labels=np.asarray(gt_labels, np.int64).reshape(-1))
    keep, labels = sample_rois(entry, cfg.rois_per_batch // cfg.ims_per_batch, cfg, rng)
    rois = rois[keep]
    gt = gt_boxes[assignment[keep]] if len(gt_boxes) else rois
    targets = bx.normalize_targets(bx.encode(rois, gt), means, stds) if len(rois) else np.zeros((0, 4))
    bbox_targets, bbox_weights = expand_targets(targets.astype(np.float32), labels, num_classes)
    return rois, labels, bbox_targets, bbox_weights


# ---------------------------------------------------------------------------------------------
# Detection (Sec. 3 and 4: proposals and detection in one network pass, no selective search)
# ---------------------------------------------------------------------------------------------
def im_detect(model, image, scale=600, max_size=1000, source='torchvision'):
    """Class probabilities and per-class boxes for the RPN's proposals of one image.

    The image is resized (shorter side `scale`, longer at most `max_size`), the trunk runs once,
    the RPN proposes (test settings: 6000 / NMS 0.7 / 300 by default), and the head scores the
    proposals on the same feature map. As in `detect.im_detect`, offsets are decoded against the
    proposals in original pixels and clipped. Returns scores (P, K+1), boxes (P, 4(K+1)) and
    the proposals (P, 4), all float32 in original image pixels.
    """
    from ..data.transforms import preprocess, rescale
    from ..detect import _check_image, _softmax
    image = _check_image(image)
    H, W = image.shape[:2]
    resized, _, factor = rescale(image, None, scale, max_size)
    param = next(iter(model.parameters()))
    blob = backend.to_device(preprocess(resized, source)[None].astype(param.dtype), param.device)
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            proposals, cls_score, bbox_pred = model(Tensor(blob), (*resized.shape[:2], factor))
    finally:
        model.train(was_training)
    K = model.num_classes
    proposals = (proposals / np.float32(factor)).astype(np.float32)  # (P, 4) original pixels
    if len(proposals) == 0:
        return np.zeros((0, K + 1), np.float32), np.zeros((0, 4 * (K + 1)), np.float32), proposals
    logits = backend.to_device(cls_score.data, 'cpu').astype(np.float64)    # (P, K+1)
    deltas = backend.to_device(bbox_pred.data, 'cpu').astype(np.float32)    # (P, 4(K+1))
    boxes = bx.clip_boxes(bx.decode(proposals, deltas), H, W)
    return _softmax(logits).astype(np.float32), boxes.astype(np.float32), proposals


def detect(model, image, score_thresh=0.05, nms_thresh=0.3, max_per_image=100, scale=600,
           max_size=1000, source='torchvision'):
    """Detect objects in one image end to end: RPN proposals, the head, then Fast R-CNN's
    per-class thresholding and NMS (`detect.postprocess`). Returns dict boxes (D, 4), scores
    (D,), labels (D,) in 1..K, by decreasing score."""
    from ..detect import postprocess
    scores, boxes, _ = im_detect(model, image, scale, max_size, source)
    return postprocess(scores, boxes, score_thresh, nms_thresh, max_per_image)


def evaluate_faster(model, dataset, scale=600, max_size=1000, source='torchvision',
                    use_07_metric=True, limit=None, score_thresh=0.05, nms_thresh=0.3,
                    max_per_image=100):
    """`detect` on every image of `dataset` and VOC AP, like `detect.evaluate_model` but with
    the RPN's proposals. seconds_per_image covers everything from pixels to detections.
    Returns (result of `evaluate_voc`, detections, seconds_per_image)."""
    from ..eval import evaluate_voc
    from ..utils import progress
    class_names = tuple(dataset.class_names)
    if len(class_names) != model.num_classes:
        raise ValueError(f'the model has {model.num_classes} classes but the data set has '
                         f'{len(class_names)}: {class_names}')
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    detections, ground_truths, seconds = [], [], 0.0
    for i in progress(range(n), desc='detect'):
        image = dataset[i]['image']
        start = time.perf_counter()
        detections.append(detect(model, image, score_thresh, nms_thresh, max_per_image, scale,
                                 max_size, source))
        seconds += time.perf_counter() - start
        gt = dataset.annotation(i)
        ground_truths.append(dict(boxes=gt['boxes'], labels=gt['labels'], difficult=gt['difficult']))
    result = evaluate_voc(detections, ground_truths, class_names, use_07_metric=use_07_metric)
    return result, detections, seconds / max(n, 1)
