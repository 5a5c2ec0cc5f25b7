"""Layers: `Module` (parameters, state dicts, train/eval, devices) and the usual building blocks.

Parameter names follow PyTorch (`features.0.weight`), so torchvision state dicts load as they are.
"""
import math
from collections import OrderedDict

import numpy as np

from . import backend
from . import functional as F
from .tensor import Tensor
from .seed import rng


class Parameter(Tensor):
    """A tensor that a Module owns and an optimiser updates."""

    def __init__(self, data, requires_grad=True):
        super().__init__(data, requires_grad=requires_grad)


class Module:
    """Base class: assign Parameters and Modules as attributes, implement `forward`."""

    def __init__(self):
        self.training = True

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def children(self):
        return [(k, v) for k, v in vars(self).items() if isinstance(v, Module)]

    def named_parameters(self, prefix=''):
        """(name, Parameter) pairs in definition order, recursing into sub-modules."""
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value.named_parameters(prefix + name + '.')

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def modules(self):
        yield self
        for _, child in self.children():
            yield from child.modules()

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def to(self, device=None, dtype=None):
        """Move (in place) every parameter to 'cpu' or 'cuda' and/or cast it; returns self."""
        if device is not None:
            backend.check_device(device)
        for p in self.parameters():
            if device is not None:
                p.data = backend.to_device(p.data, device)
                if p.grad is not None:
                    p.grad = backend.to_device(p.grad, device)
            if dtype is not None:
                p.data = p.data.astype(dtype)
                p.grad = None if p.grad is None else p.grad.astype(dtype)
        return self

    def state_dict(self):
        """An ordered dict name -> NumPy copy of each parameter."""
        return OrderedDict((name, p.numpy()) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters, keeping each parameter's device and dtype.

        With strict=True, missing keys, unexpected keys and shape mismatches are all listed
        in one ValueError (`check_state_dict`). With strict=False only shape mismatches of the
        keys both sides have are errors. Values must be real numbers, all finite: a weight of
        another kind (complex, text, bool) or a NaN is a ValueError naming its key, before any
        parameter changes.
        """
        params = OrderedDict(self.named_parameters())
        expected = {k: p.shape for k, p in params.items() if strict or k in state_dict}
        given = state_dict if strict else {k: v for k, v in state_dict.items() if k in params}
        check_state_dict(expected, given)
        values = {}
        for k in params:
            if k in state_dict:
                value = state_dict[k]
                value = backend.to_device(value.data if isinstance(value, Tensor) else value, 'cpu')
                value = np.asarray(value)
                if value.dtype.kind not in 'fiu':
                    raise ValueError(f'state dict entry {k}: {value.dtype} values, expected real numbers')
                if value.dtype.kind == 'f' and not np.isfinite(value).all():
                    raise ValueError(f'state dict entry {k}: holds NaN or infinite values')
                values[k] = value
        for k, value in values.items():       # copies: a parameter never aliases the caller's array
            p = params[k]
            p.data = backend.to_device(np.array(value, dtype=p.dtype), p.device)
        return self

    def num_parameters(self):
        return int(sum(p.size for p in self.parameters()))

    def __repr__(self):
        lines = [f'{type(self).__name__}({self.extra_repr()}']
        for name, child in self.children():
            lines.append(f'  ({name}): ' + repr(child).replace('\n', '\n  '))
        return lines[0] + ')' if len(lines) == 1 else '\n'.join(lines) + '\n)'

    def extra_repr(self):
        return ''


def check_state_dict(expected, given):
    """Check `given` (name -> array) against `expected` (name -> shape) before loading it.

    Raises ValueError listing every missing key, unexpected key and shape mismatch, one per
    line, so that one run shows all that is wrong; returns None when everything fits.
    """
    def shape(v):
        return tuple(getattr(v, 'shape', None) or np.shape(v))

    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [k for k in expected if k in given and tuple(expected[k]) != shape(given[k])]
    if not (missing or unexpected or wrong):
        return None
    lines = [f'state dict does not fit the model: {len(missing)} missing, '
             f'{len(unexpected)} unexpected, {len(wrong)} with the wrong shape']
    lines += [f'  missing: {k} {tuple(expected[k])}' for k in missing]
    lines += [f'  unexpected: {k} {shape(given[k])}' for k in unexpected]
    lines += [f'  wrong shape: {k}: expected {tuple(expected[k])}, given {shape(given[k])}'
              for k in wrong]
    raise ValueError('\n'.join(lines))


def _uniform(shape, bound):
    return rng().uniform(-bound, bound, size=shape).astype(np.float32)


class Conv2d(Module):
    """Convolution layer; weights (K, C, kh, kw) initialised like PyTorch (uniform +-1/sqrt(fan_in))."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if np.isscalar(kernel_size) else kernel_size
        bound = 1.0 / math.sqrt(in_channels * kh * kw)
        self.weight = Parameter(_uniform((out_channels, in_channels, kh, kw), bound))
        self.bias = Parameter(_uniform((out_channels,), bound)) if bias else None
        self.stride, self.padding = stride, padding
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, (kh, kw)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, '
                f'stride={self.stride}, padding={self.padding}')


class Linear(Module):
    """Fully connected layer; weight (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = Parameter(_uniform((out_features, in_features), bound))
        self.bias = Parameter(_uniform((out_features,), bound)) if bias else None
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f'in_features={self.in_features}, out_features={self.out_features}'


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self):
        return f'kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}'


class Dropout(Module):
    def __init__(self, p=0.5):
        super().__init__()
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f'p={self.p}'


class AdaptiveAvgPool2d(Module):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f'output_size={self.output_size}'


class Flatten(Module):
    """(N, ...) -> (N, prod(...))."""

    def forward(self, x):
        return x.reshape(x.shape[0], -1)


class Sequential(Module):
    """Modules applied in order; children are named '0', '1', ... as in PyTorch."""

    def __init__(self, *modules):
        super().__init__()
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def __getitem__(self, i):
        mods = [m for _, m in self.children()]
        if isinstance(i, slice):
            return Sequential(*mods[i])
        return mods[i]

    def __len__(self):
        return len(self.children())

    def __iter__(self):
        return iter([m for _, m in self.children()])

    def forward(self, x):
        for m in self:
            x = m(x)
        return x


class RoIPool(Module):
    """RoI max pooling layer (Fast R-CNN, Sec. 2.1); see `F.roi_pool`."""

    def __init__(self, output_size=(7, 7), spatial_scale=1 / 16):
        super().__init__()
        self.output_size, self.spatial_scale = output_size, spatial_scale

    def forward(self, x, rois):
        return F.roi_pool(x, rois, self.output_size, self.spatial_scale)

    def extra_repr(self):
        return f'output_size={self.output_size}, spatial_scale={self.spatial_scale}'
