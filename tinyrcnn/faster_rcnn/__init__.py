"""Faster R-CNN (Ren et al., NIPS 2015), one idea per file; the detector itself is Fast R-CNN's.

    anchors.py           k reference boxes per position, 3 scales x 3 ratios (Sec. 3.1.1)
    rpn.py               the Region Proposal Network's head and its loss (Sec. 3.1, 3.1.2)
    anchor_targets.py    which anchors are object, which background, 256 per image (Sec. 3.1.2-3.1.3)
    proposal_layer.py    RPN outputs -> proposals: decode, clip, NMS 0.7, top N (Sec. 3.3)
    proposal_targets.py  the head's training RoIs from the RPN's proposals (Sec. 3.2)
    network.py           FasterRCNN: a FastRCNN with an RPN on its trunk (Sec. 3)
    loss.py              one image's loss: RPN + head, approximate joint training (Sec. 3.2)
"""
from .anchor_targets import anchor_targets
from .anchors import generate_anchors, shift_anchors
from .loss import faster_rcnn_losses
from .network import RPN_DEFAULTS, FasterRCNN
from .proposal_layer import proposal_layer
from .proposal_targets import proposal_targets
from .rpn import RPNHead, flatten_outputs, rpn_loss

__all__ = ['generate_anchors', 'shift_anchors', 'RPNHead', 'flatten_outputs', 'rpn_loss',
           'anchor_targets', 'proposal_layer', 'proposal_targets', 'RPN_DEFAULTS', 'FasterRCNN',
           'faster_rcnn_losses']
