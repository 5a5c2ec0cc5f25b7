"""The Fast R-CNN network (Girshick, 2015, Sec. 2 and 3.1).

A pretrained VGG is changed in three ways (Sec. 2.2): its last max pool becomes RoI pooling
to the size fc6 expects (7x7 for VGG16), its last layer and softmax become two sibling layers
(`cls_score` over K+1 classes, `bbox_pred` with 4 numbers per class), and it takes two inputs:
images and RoIs in those images. conv1 and conv2 stay frozen (Sec. 4.5: "not all conv layers
should be fine-tuned"). `compress()` applies truncated SVD to fc6 and fc7 (Sec. 3.1).
"""
from .. import nn
from ..seed import gaussian
from ..vgg import VGG, vgg16, vgg_tiny
from .svd import svd_linear


def build_trunk(trunk, weights=None):
    """'vgg16' or 'vgg-tiny' (optionally with pretrained `weights`), or a VGG instance."""
    if isinstance(trunk, VGG):
        return trunk
    builders = {'vgg16': vgg16, 'vgg-tiny': vgg_tiny}
    if trunk not in builders:
        raise ValueError(f"unknown trunk {trunk!r}; choose 'vgg16', 'vgg-tiny' or pass a VGG model")
    return builders[trunk](weights=weights)


class FastRCNN(nn.Module):
    """FastRCNN(trunk, num_classes, freeze_stages=2, roi_size=(7, 7), spatial_scale=1/16).

    trunk: 'vgg16', 'vgg-tiny' or a (pretrained) VGG model. num_classes: K object classes;
    the network scores K + 1 (0 is background). freeze_stages: how many conv stages (blocks
    ending in a max pool) keep their pretrained weights fixed; 2 = conv1 and conv2, the paper's
    choice for VGG16. forward(images (N, 3, H, W), rois (R, 5)) -> cls_score (R, K+1),
    bbox_pred (R, 4(K+1)).
    """

    def __init__(self, trunk='vgg16', num_classes=20, freeze_stages=2, roi_size=(7, 7),
                 spatial_scale=1 / 16, weights=None):
        super().__init__()
        vgg = build_trunk(trunk, weights)
        layers = list(vgg.features)
        if not isinstance(layers[-1], nn.MaxPool2d):
            raise ValueError('the trunk must end in a max pool, which RoI pooling replaces')
        self.features = nn.Sequential(*layers[:-1])              # up to conv5_3 + ReLU, stride 16
        self.roi_pool = nn.RoIPool(roi_size, spatial_scale)
        fc6, fc7 = vgg.classifier[0], vgg.classifier[3]
        channels = [m for m in layers if isinstance(m, nn.Conv2d)][-1].out_channels
        if fc6.in_features != channels * roi_size[0] * roi_size[1]:
            raise ValueError(f'fc6 expects {fc6.in_features} inputs but RoI pooling gives '
                             f'{channels}x{roi_size[0]}x{roi_size[1]}')
        p = vgg.classifier[2].p
        self.classifier = nn.Sequential(fc6, nn.ReLU(), nn.Dropout(p), fc7, nn.ReLU(), nn.Dropout(p))
        hidden = fc7.out_features
        self.num_classes = num_classes
        self.cls_score = nn.Linear(hidden, num_classes + 1)
        self.bbox_pred = nn.Linear(hidden, 4 * (num_classes + 1))
        # Sec. 2.2/2.3: the new layers start from zero-mean Gaussians, std 0.01 and 0.001.
        self.cls_score.weight.data = gaussian(self.cls_score.weight.shape, 0.01)
        self.bbox_pred.weight.data = gaussian(self.bbox_pred.weight.shape, 0.001)
        self.cls_score.bias.data[:] = 0
        self.bbox_pred.bias.data[:] = 0
        self.freeze_stages = freeze_stages
        self._freeze(freeze_stages)

    def _freeze(self, stages):
        stage = 0
        for m in self.features:
            if isinstance(m, nn.MaxPool2d):
                stage += 1
            elif isinstance(m, nn.Conv2d) and stage < stages:
                for p in m.parameters():
                    p.requires_grad = False

    def trainable_parameters(self):
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def head(self, feats, rois):
        """RoI pooling and the fully connected head on a computed feature map."""
        pooled = self.roi_pool(feats, rois)                      # (R, C, 7, 7)
        R, C, ph, pw = pooled.shape
        h = self.classifier(pooled.reshape(R, C * ph * pw))      # (R, 4096)
        return self.cls_score(h), self.bbox_pred(h)              # (R, K+1), (R, 4(K+1))

    def forward(self, images, rois):
        return self.head(self.features(images), rois)

    def compress(self, fc6_rank=1024, fc7_rank=256):
        """Truncated SVD of fc6 and fc7 (Sec. 3.1): W (u x v) ~ U_t S_t V_t^T becomes two layers,
        S_t V_t^T (t x v, no bias) then U_t (u x t) with the original bias: u*v parameters
        become t*(u + v). Returns a dict of parameter counts before and after."""
        before = self.num_parameters()
        for index, rank in ((0, fc6_rank), (3, fc7_rank)):
            layer = self.classifier[index]
            if isinstance(layer, nn.Sequential):
                raise ValueError('this model is already compressed')
            setattr(self.classifier, str(index), svd_linear(layer, rank))
        return {'parameters_before': before, 'parameters_after': self.num_parameters()}
