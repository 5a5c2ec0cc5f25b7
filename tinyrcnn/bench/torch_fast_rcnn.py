"""Fast R-CNN from PyTorch layers, the reference side of the training row (`bench.train`).

The network has the same module names as tinyrcnn's FastRCNN (`features.N`, `classifier.N`,
`cls_score`, `bbox_pred`), so that one state dict loads into both. RoI max pooling is
torchvision.ops.roi_pool where torchvision is installed; otherwise `roi_pool` below builds it
from torch ops. Nothing here is used by tinyrcnn itself; PyTorch is imported by the caller.
"""
import numpy as np


def layout(model):
    """The trunk of a tinyrcnn FastRCNN as plain tuples (picklable, for a child process):
    ('conv', in, out, kernel, stride, padding), ('relu',) or ('pool', kernel, stride)."""
    from .. import nn
    out = []
    for m in model.features:
        if isinstance(m, nn.Conv2d):
            out.append(('conv', m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding))
        elif isinstance(m, nn.ReLU):
            out.append(('relu',))
        elif isinstance(m, nn.MaxPool2d):
            out.append(('pool', m.kernel_size, m.stride or m.kernel_size))
        else:
            raise ValueError(f'no PyTorch twin for {type(m).__name__}')
    return out


def caffe_bins(length, n, dtype):
    """Caffe's (and torchvision's) bins along one axis of windows of integer `length` (R,) split
    into n: [floor(i * bin), ceil((i + 1) * bin)) with bin = length / n, all in the RoIs' float
    `dtype`, as the C++ computes them. Returns start, end (R, n) int64, relative to the window.
    Rounding can put (i + 1) * bin a hair above an integer (29 / 7 * 7 in float64 is
    29.000000000000004), and the bin then takes one more row or column than exact arithmetic
    would: the map's, past the window (the end is clipped to the map, not to the window)."""
    T = np.dtype(dtype).type
    size = (np.asarray(length).astype(T) / T(n))[:, None]
    i = np.arange(n, dtype=T)
    return np.floor(i * size).astype(np.int64), np.ceil((i + 1) * size).astype(np.int64)


def roi_pool(torch, x, rois, output_size=(7, 7), spatial_scale=1 / 16):
    """RoI max pooling (Caffe's, as torchvision.ops.roi_pool) from torch ops, for where
    torchvision is not installed. x (N, C, H, W) tensor, rois (R, 5) NumPy array of
    [batch, x1, y1, x2, y2] >= 0 in image pixels. Returns (R, C, out_h, out_w).

    Each RoI's window on the map, [x1', x1' + w) x [y1', y1' + h) with w = max(x2' - x1' + 1, 1),
    goes through adaptive_max_pool2d, whose bins [floor(i L / n), ceil((i + 1) L / n)) are
    Caffe's floor(i * bin) and ceil((i + 1) * bin) for bin = L / n in exact arithmetic. Caffe
    computes them in the RoIs' float type, and where rounding moves an edge (`caffe_bins`) that
    RoI is pooled bin by bin instead. A window may overhang the map (x2' rounds up to W): the
    map is padded with -inf there, which never wins a max, and a bin that lies wholly in the
    padding gives 0, as in Caffe.
    """
    F = torch.nn.functional
    N, C, H, W = x.shape
    out_h, out_w = output_size
    # C's round() of the scaled corners; exact here, as the corners are >= 0 and 1/16 is a
    # power of two
    x1, y1, x2, y2 = np.floor(rois[:, 1:5].astype(np.float64) * spatial_scale + 0.5).astype(np.int64).T
    batch = rois[:, 0].astype(np.int64)
    w, h = np.maximum(x2 - x1 + 1, 1), np.maximum(y2 - y1 + 1, 1)
    hs, he = caffe_bins(h, out_h, rois.dtype)
    ws, we = caffe_bins(w, out_w, rois.dtype)
    exact = lambda s, e, L, n: ((s == np.arange(n) * L[:, None] // n)      # noqa: E731
                                & (e == -(-np.arange(1, n + 1) * L[:, None] // n))).all(1)
    adaptive = exact(hs, he, h, out_h) & exact(ws, we, w, out_w)
    pad_w, pad_h = max(0, int((x1 + w).max()) - W), max(0, int((y1 + h).max()) - H)
    xp = F.pad(x, (0, pad_w, 0, pad_h), value=float('-inf')) if pad_w or pad_h else x
    pooled = []
    for r, (b, top, left) in enumerate(zip(batch, y1, x1)):
        if adaptive[r]:
            pooled.append(F.adaptive_max_pool2d(xp[b, :, top:top + h[r], left:left + w[r]],
                                                output_size))
            continue
        bins = []                         # Caffe's loop: edges clipped to the map; empty bin 0
        for i in range(out_h):
            for j in range(out_w):
                r0, r1 = np.clip([top + hs[r, i], top + he[r, i]], 0, H)
                c0, c1 = np.clip([left + ws[r, j], left + we[r, j]], 0, W)
                win = x[b, :, r0:r1, c0:c1].reshape(C, -1)
                bins.append(win.max(dim=1).values if win.shape[1] else x.new_zeros(C))
        pooled.append(torch.stack(bins, dim=1).reshape(C, out_h, out_w))
    pooled = torch.stack(pooled)                                                # (R, C, 7, 7)
    if pad_w or pad_h:
        pooled = torch.where(pooled == float('-inf'), torch.zeros_like(pooled), pooled)
    return pooled


def build(torch, trunk, state, dropout=0.0, roi_size=(7, 7), spatial_scale=1 / 16):
    """The FastRCNN of `trunk` (`layout`) with the arrays of `state` (a mapping with tinyrcnn's
    names, such as an open .npz file), and
    which RoI pooling it uses: 'torchvision.ops.roi_pool' or 'torch ops (per-RoI adaptive
    max pool)'."""
    nn = torch.nn
    layers = []
    for kind, *args in trunk:
        if kind == 'conv':
            c_in, c_out, kernel, stride, padding = args
            layers.append(nn.Conv2d(c_in, c_out, kernel, stride, padding))
        elif kind == 'relu':
            layers.append(nn.ReLU(inplace=True))
        else:
            layers.append(nn.MaxPool2d(*args))
    try:
        import torchvision.ops
        pool = lambda x, rois: torchvision.ops.roi_pool(   # noqa: E731
            x, torch.from_numpy(rois).to(x.device, x.dtype), roi_size, spatial_scale)
        pool_name = 'torchvision.ops.roi_pool'
    except Exception:
        pool = lambda x, rois: roi_pool(torch, x, rois, roi_size, spatial_scale)   # noqa: E731
        pool_name = 'torch ops (per-RoI adaptive max pool)'

    def linear(name):
        out_f, in_f = state[name + '.weight'].shape
        return nn.Linear(in_f, out_f)

    class FastRCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(linear('classifier.0'), nn.ReLU(inplace=True),
                                            nn.Dropout(dropout), linear('classifier.3'),
                                            nn.ReLU(inplace=True), nn.Dropout(dropout))
            self.cls_score, self.bbox_pred = linear('cls_score'), linear('bbox_pred')

        def forward(self, images, rois):
            pooled = pool(self.features(images), rois)             # (R, C, 7, 7)
            h = self.classifier(pooled.flatten(1))                 # (R, 4096)
            return self.cls_score(h), self.bbox_pred(h)

    net = FastRCNN()
    with torch.no_grad():                        # one array at a time: `state` may be an .npz
        for name, p in net.named_parameters():
            p.copy_(torch.from_numpy(np.ascontiguousarray(state[name])))
    return net, pool_name


def multitask_loss(torch, cls_score, bbox_pred, labels, bbox_targets, bbox_weights):
    """tinyrcnn's F.cross_entropy + F.smooth_l1_loss (sigma 1) written with torch ops: log loss
    (mean over RoIs) plus the sum of weight * smoothL1(prediction - target) over R."""
    loss_cls = torch.nn.functional.cross_entropy(cls_score, labels)
    d = (bbox_pred - bbox_targets).abs()
    loss_loc = (bbox_weights * torch.where(d < 1, 0.5 * d * d, d - 0.5)).sum() / len(labels)
    return loss_cls + loss_loc, loss_cls, loss_loc


def sgd(torch, net, trainable, lr, momentum=0.9, weight_decay=5e-4, bias_lr_mult=2.0):
    """PyTorch's SGD with Caffe's groups: biases at twice the rate, without weight decay. With
    a constant rate its update equals Caffe's (and tinyrcnn's) v <- m v + lr (g + wd w)."""
    params = dict(net.named_parameters())
    weights = [params[n] for n in trainable if not n.endswith('bias')]
    biases = [params[n] for n in trainable if n.endswith('bias')]
    return torch.optim.SGD([{'params': weights},
                            {'params': biases, 'lr': lr * bias_lr_mult, 'weight_decay': 0.0}],
                           lr=lr, momentum=momentum, weight_decay=weight_decay)
