"""SGD with momentum, weight decay and parameter groups, and a step learning-rate schedule.

The update is Caffe's, which the Fast R-CNN paper trained with (Sec. 2.3):
    v <- momentum * v + lr * lr_mult * (g + weight_decay * w)
    w <- w - v
Parameter groups carry their own `lr_mult` and `weight_decay`, for the paper's biases that learn
at twice the base rate with no decay.
"""
import numpy as np

from . import backend


def _host_copy(buffer):
    """A NumPy copy that shares no memory with the optimiser's own buffer."""
    return np.array(backend.to_device(buffer, 'cpu'), copy=True)


def _device_copy(buffer, p):
    return backend.to_device(np.array(buffer, dtype=p.dtype, copy=True), p.device)


class SGD:
    """SGD(params, lr, momentum=0.9, weight_decay=5e-4).

    params: an iterable of Parameters, or of dicts {'params': [...], 'lr_mult': 2.0,
    'weight_decay': 0.0} (missing keys take the defaults: lr_mult 1, the global weight_decay).
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=5e-4):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f'SGD expects lr, momentum, weight_decay >= 0, got {lr}, {momentum}, '
                             f'{weight_decay}')
        params = list(params)
        if params and not isinstance(params[0], dict):
            params = [{'params': params}]
        self.groups = []
        for g in params:
            unknown = set(g) - {'params', 'lr_mult', 'weight_decay'}
            if unknown:
                raise ValueError(f'unknown parameter-group keys {sorted(unknown)}; expected '
                                 f"'params', 'lr_mult', 'weight_decay'")
            self.groups.append({'params': list(g['params']), 'lr_mult': float(g.get('lr_mult', 1.0)),
                                'weight_decay': float(g.get('weight_decay', weight_decay))})
        self.lr, self.momentum = lr, momentum
        self.velocity = {}

    def parameters(self):
        return [p for g in self.groups for p in g['params']]

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def _updates(self):
        """(parameter, its group's learning rate, gradient with weight decay, xp) for every
        parameter that has a gradient."""
        for g in self.groups:
            lr, wd = self.lr * g['lr_mult'], g['weight_decay']
            for p in g['params']:
                if p.grad is not None:
                    yield p, lr, (p.grad + wd * p.data if wd else p.grad), \
                        backend.get_array_module(p.data)

    @staticmethod
    def _buffer(store, p, xp):
        """The state buffer of p in `store`, created as zeros the first time."""
        if id(p) not in store:
            store[id(p)] = xp.zeros_like(p.data)
        return store[id(p)]

    def step(self):
        for p, lr, grad, xp in self._updates():
            v = self._buffer(self.velocity, p, xp)
            v *= self.momentum
            v += lr * grad
            p.data -= v

    def state_dict(self):
        """Momentum buffers in parameter order, as NumPy arrays (None where unused)."""
        bufs = [self.velocity.get(id(p)) for p in self.parameters()]
        return {'lr': self.lr, 'momentum': self.momentum,
                'velocity': [None if b is None else _host_copy(b) for b in bufs]}

    def load_state_dict(self, state):
        params = self.parameters()
        if len(state['velocity']) != len(params):
            raise ValueError(f"optimiser state has {len(state['velocity'])} buffers for "
                             f'{len(params)} parameters')
        self.lr, self.momentum = state['lr'], state['momentum']
        self.velocity = {}
        for p, b in zip(params, state['velocity']):
            if b is not None:
                self.velocity[id(p)] = _device_copy(b, p)


class Adam(SGD):
    """Adam (Kingma & Ba, 2015) with the same parameter groups as SGD.

    Not the paper's optimiser: the CPU demo trains a small trunk from scratch, with no ImageNet
    weights, and Adam gets there in far fewer iterations than SGD. Weight decay is added to the
    gradient (L2), as Caffe's Adam solver does.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr, momentum=betas[0], weight_decay=weight_decay)
        self.beta2, self.eps = betas[1], eps
        self.second = {}
        self.steps = 0

    def step(self):
        self.steps += 1
        b1, b2, t = self.momentum, self.beta2, self.steps
        scale = (1 - b2 ** t) ** 0.5 / (1 - b1 ** t)          # bias corrections of both moments
        for p, lr, grad, xp in self._updates():
            m = self._buffer(self.velocity, p, xp)
            v = self._buffer(self.second, p, xp)
            dt = p.data.dtype.type
            fast = backend.fast_cpu('adam', p.data)            # the CPU speed hook: one pass
            if fast is not None and fast(p.data, grad, m, v, dt(1 - b1), dt(b1), dt(b2),
                                         dt((1 - b2) / (1 - b1)), dt(self.eps), dt(lr * scale)):
                continue
            work = xp.multiply(grad, dt(1 - b1))               # one scratch array, reused:
            m *= dt(b1)
            m += work                                          # m = b1 m + (1 - b1) g
            xp.multiply(work, grad, out=work)
            v *= dt(b2)
            v += xp.multiply(work, dt((1 - b2) / (1 - b1)), out=work)   # v = b2 v + (1 - b2) g^2
            xp.sqrt(v, out=work)
            work += dt(self.eps)
            xp.divide(m, work, out=work)
            work *= dt(lr * scale)
            p.data -= work                                     # p -= lr m_hat / (sqrt(v_hat) + eps)

    def state_dict(self):
        state = super().state_dict()
        state['second'] = [None if self.second.get(id(p)) is None else _host_copy(self.second[id(p)])
                           for p in self.parameters()]
        state['steps'] = self.steps
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.steps = state['steps']
        self.second = {id(p): _device_copy(b, p)
                       for p, b in zip(self.parameters(), state['second']) if b is not None}


class StepLR:
    """Multiply the optimiser's base lr by `gamma` every `step_size` iterations (or at `milestones`)."""

    def __init__(self, optimizer, step_size=None, gamma=0.1, milestones=None):
        if (step_size is None) == (milestones is None):
            raise ValueError('StepLR needs exactly one of step_size or milestones')
        self.optimizer, self.step_size, self.gamma = optimizer, step_size, gamma
        self.milestones = sorted(milestones) if milestones is not None else None
        self.base_lr, self.iteration = optimizer.lr, 0

    def lr_at(self, iteration):
        if self.milestones is not None:
            drops = sum(1 for m in self.milestones if iteration >= m)
        else:
            drops = iteration // self.step_size
        return self.base_lr * self.gamma ** drops

    def step(self):
        self.iteration += 1
        self.optimizer.lr = self.lr_at(self.iteration)

    def state_dict(self):
        return {'iteration': self.iteration, 'base_lr': self.base_lr}

    def load_state_dict(self, state):
        self.iteration, self.base_lr = state['iteration'], state['base_lr']
        self.optimizer.lr = self.lr_at(self.iteration)
