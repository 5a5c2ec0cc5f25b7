"""The Region Proposal Network (Faster R-CNN, Ren et al., 2015, Sec. 3.1).

A small network slides over the last shared conv map: a 3x3 conv (512 channels for VGG16) with
ReLU, then two sibling 1x1 convs giving, at each position and for each of its A anchors, two
objectness scores (softmax over object / not object) and four box offsets relative to the anchor.

    head:      RPNHead(C) on feats (1, C, H, W) -> logits (1, 2A, H, W), deltas (1, 4A, H, W)
    training:  anchor_targets.py (Sec. 3.1.2) -> rpn_loss here (Eq. 1)
    proposing: proposal_layer.py: decode, clip, drop tiny boxes, top-N, NMS 0.7, top-N (Sec. 3.3)

Channel layout, as in the released code: logits channels [0, A) are "not object" and [A, 2A)
"object" for anchors 0..A-1; deltas channel 4a + j is offset j of anchor a. `flatten_outputs`
turns them into (H*W*A, 2) and (H*W*A, 4) rows in the (y, x, a) order of `shift_anchors`.
"""
import numpy as np

from .. import backend, nn
from .. import functional as F
from ..seed import gaussian


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then 1x1 convs for 2A scores and 4A deltas; weights N(0, 0.01), biases 0
    (Sec. 3.1.3: "new layers ... zero-mean Gaussian distribution with standard deviation 0.01")."""

    def __init__(self, in_channels, mid_channels=512, num_anchors=9):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, mid_channels, 3, padding=1)
        self.cls_score = nn.Conv2d(mid_channels, 2 * num_anchors, 1)
        self.bbox_pred = nn.Conv2d(mid_channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.cls_score, self.bbox_pred):
            layer.weight.data = gaussian(layer.weight.shape, 0.01)
            layer.bias.data[:] = 0
        self.num_anchors = num_anchors

    def forward(self, feats):
        h = F.relu(self.conv(feats))                   # (1, 512, H, W)
        return self.cls_score(h), self.bbox_pred(h)    # (1, 2A, H, W), (1, 4A, H, W)


def flatten_outputs(logits, deltas):
    """(1, 2A, H, W), (1, 4A, H, W) Tensors -> (H*W*A, 2) logits and (H*W*A, 4) deltas, rows in
    (y, x, a) order (differentiable: reshape and transpose)."""
    N, A2, H, W = logits.shape
    if N != 1 or A2 % 2 or tuple(deltas.shape) != (1, 2 * A2, H, W):
        raise ValueError(f'RPN outputs must be (1, 2A, H, W) and (1, 4A, H, W) for one image, got '
                         f'{tuple(logits.shape)} and {tuple(deltas.shape)}')
    A = A2 // 2
    scores = logits.reshape(2, A, H, W).transpose(2, 3, 1, 0).reshape(-1, 2)   # (HWA, 2)
    offsets = deltas.reshape(A, 4, H, W).transpose(2, 3, 0, 1).reshape(-1, 4)  # (HWA, 4)
    return scores, offsets


# ---------------------------------------------------------------------------------------------
# The loss (Sec. 3.1.2 and 3.1.3); the targets are `anchor_targets.py`'s
# ---------------------------------------------------------------------------------------------
def rpn_loss(logits, deltas, labels, bbox_targets, sigma=3.0):
    """The RPN's loss for one image (Eq. 1), normalised as in the released code.

    logits (1, 2A, H, W) and deltas (1, 4A, H, W) Tensors from `RPNHead`; labels (HWA,) and
    bbox_targets (HWA, 4) from `anchor_targets`. Over the S sampled anchors (label >= 0):
      L_cls = mean of the softmax log loss (so divided by S, the paper's N_cls = 256);
      L_reg = sum over positive anchors of smoothL1_sigma(t - t*) / S.
    `F.smooth_l1_loss` divides by the rows of its input, so it is given the S sampled rows with
    weight 1 on the positives' four columns and 0 on the negatives': that is the code's
    bbox_outside_weights = 1/S, with lambda = 1 (the paper's lambda = 10 with N_reg ~ 2400
    anchor locations weighs the two terms about the same). sigma = 3 makes the quadratic zone
    |x| < 1/9, as in the code. Returns (loss_cls, loss_reg) Tensors.
    """
    scores, offsets = flatten_outputs(logits, deltas)               # (HWA, 2), (HWA, 4)
    labels = np.asarray(backend.to_device(labels, 'cpu'), np.int64).reshape(-1)
    if labels.shape[0] != scores.shape[0]:
        raise ValueError(f'rpn_loss: {labels.shape[0]} labels for {scores.shape[0]} anchors')
    keep = np.flatnonzero(labels >= 0)
    if keep.size == 0:                     # nothing sampled (no anchor inside the image)
        zero = (scores.sum() + offsets.sum()) * 0.0
        return zero, zero
    device = scores.device
    on = lambda a: backend.to_device(a, device)  # noqa: E731
    kept = labels[keep]
    targets = np.asarray(backend.to_device(bbox_targets, 'cpu'), scores.dtype)[keep]
    weight = np.repeat((kept == 1)[:, None], 4, axis=1).astype(scores.dtype)   # (S, 4)
    rows = on(keep)                                    # uploaded once, used twice
    loss_cls = F.cross_entropy(scores[rows], kept)     # labels checked on the host, then uploaded
    loss_reg = F.smooth_l1_loss(offsets[rows], on(targets), on(weight), sigma=sigma)
    return loss_cls, loss_reg
