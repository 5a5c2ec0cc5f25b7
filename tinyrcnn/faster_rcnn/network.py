"""Faster R-CNN (Ren et al., 2015): Fast R-CNN with a Region Proposal Network on its conv trunk.

One network, two modules (Sec. 3): the RPN (`rpn.py`) slides over the last shared conv map and
proposes boxes (`proposal_layer.py`); the Fast R-CNN head pools those boxes from the same map
and classifies and refines them. `FasterRCNN` is a `FastRCNN` (same `features`, `roi_pool`,
`classifier`, `cls_score`, `bbox_pred`, `head`) plus `rpn`, so Fast R-CNN's detection
(`fast_rcnn.detect`, with no proposals given) and export apply to it unchanged.

    model = FasterRCNN('vgg-tiny', num_classes=6, anchor_scales=(2, 4, 8))
    dets = detect(model, image, scales=(192,), max_size=320, source='tiny')  # no selective search
"""
import numpy as np

from .. import backend, nn
from ..fast_rcnn.network import FastRCNN
from .anchors import generate_anchors, shift_anchors
from .proposal_layer import proposal_layer
from .rpn import RPNHead, flatten_outputs

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

    forward(images (1, 3, H, W), im_info (H, W, scale)) -> proposals (P, 4) array in input
    pixels, cls_score (P, K+1), bbox_pred (P, 4(K+1)).
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
        self._anchors = {}                 # (feat_h, feat_w, device) -> anchors, see anchors()

    def anchors(self, feat_h, feat_w, device='cpu'):
        """The anchors of an feat_h x feat_w map, (HWA, 4) float32 on `device`, made once per
        map size and device and kept (read-only): training would otherwise shift and upload
        them again at every step."""
        key = (feat_h, feat_w, device)
        anchors = self._anchors.get(key)    # one read and one write: threads may share the cache
        if anchors is None:
            if len(self._anchors) >= 64:                           # many image sizes: start over
                self._anchors.clear()
            anchors = shift_anchors(self.base_anchors, feat_h, feat_w, self.feat_stride)
            anchors.flags.writeable = False
            anchors = anchors if device == 'cpu' else backend.to_device(anchors, device)
            self._anchors[key] = anchors
        return anchors                                             # (HWA, 4)

    def propose(self, logits, deltas, im_info, mode=None):
        """RPN outputs (arrays, one image) -> proposals (P, 4) float32 NumPy in input pixels and
        their objectness (P,), with the 'train' or 'test' top-N settings (None: by the model's
        mode)."""
        scores, offsets = flatten_outputs(logits, deltas)             # (HWA, 2), (HWA, 4)
        xp = backend.get_array_module(scores)
        objectness = 1 / (1 + xp.exp(scores[:, 0] - scores[:, 1]))   # softmax, "object" column
        mode = mode or ('train' if self.training else 'test')
        H, W, scale = im_info
        return proposal_layer(
            objectness, offsets, self.anchors(*logits.shape[2:], backend.device_of(logits)), (H, W),
            scale, self.settings[f'{mode}_pre_nms_top_n'], self.settings[f'{mode}_post_nms_top_n'],
            self.settings['rpn_nms_thresh'], self.settings['rpn_min_size'], to_host=True)

    def forward(self, images, im_info):
        """Detection for one image: proposals (P, 4) NumPy in input pixels, cls_score (P, K+1),
        bbox_pred (P, 4(K+1)). Training computes its losses from the parts instead
        (`faster_rcnn.loss.faster_rcnn_losses`)."""
        if images.shape[0] != 1:
            raise ValueError(f'FasterRCNN takes one image at a time (N=1, Sec. 3.1.3), got {images.shape[0]}')
        feats = self.features(images)                              # (1, C, H/16, W/16)
        logits, deltas = self.rpn(feats)                           # (1, 2A, h, w), (1, 4A, h, w)
        proposals, _ = self.propose(logits.data, deltas.data, im_info)
        return (proposals, *self.head(feats, proposal_rois(proposals, feats)))


def proposal_rois(boxes, feats):
    """(P, 4) host boxes of the one image of `feats` -> (P, 5) RoIs [0, x1, y1, x2, y2] in
    feats' dtype, on the host: RoI pooling checks them there and uploads them after, where a
    check on the GPU would make the host wait for the device."""
    return np.hstack([np.zeros((len(boxes), 1), np.float32), boxes]).astype(feats.dtype)  # (P, 5)
