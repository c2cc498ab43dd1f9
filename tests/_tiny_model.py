"""A tiny model written against the convcore.nn Module contract (forward,
backward, parameters, state_dict...), using only the functional conv2d, so the
training loop can be tested on its own. Used as ``--model _tiny_model:tiny`` (with tests/ on the path)."""
import numpy as np

import convcore as cc


class _P:
    def __init__(self, data):
        self.data = data
        self.grad = np.zeros_like(data)


class Tiny:
    def __init__(self, in_channels=1, num_classes=10, image_size=8, seed=0):
        rng = np.random.default_rng(seed)
        k = 4
        self._params = {
            "conv.weight": _P((rng.standard_normal((k, in_channels, 3, 3)) * 0.3)
                              .astype(np.float32)),
            "conv.bias": _P(np.zeros(k, np.float32)),
            "fc.weight": _P((rng.standard_normal((num_classes, k * image_size ** 2))
                             / np.sqrt(k * image_size ** 2)).astype(np.float32)),
            "fc.bias": _P(np.zeros(num_classes, np.float32)),
        }
        self.training = True
        self.rng = rng            # dropout masks: state lives outside state_dict()

    def named_modules(self):
        return iter([("", self)])

    def named_parameters(self):
        return iter(self._params.items())

    def parameters(self):
        return iter(self._params.values())

    def train(self):
        self.training = True
        return self

    def eval(self):
        self.training = False
        return self

    def zero_grad(self):
        for p in self._params.values():
            p.grad[...] = 0

    def state_dict(self):
        return {k: p.data.copy() for k, p in self._params.items()}

    def load_state_dict(self, d):
        if set(d) != set(self._params):
            raise ValueError(f"keys {sorted(d)} != {sorted(self._params)}")
        for k, v in d.items():
            self._params[k].data = np.array(v, dtype=np.float32)

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        P = self._params
        self._x = x
        self._h = cc.conv2d(x, P["conv.weight"].data, P["conv.bias"].data, padding=1)
        self._r = np.maximum(self._h, 0).reshape(x.shape[0], -1)
        self._m = 1.0
        if self.training:         # dropout, p = 0.2
            self._m = ((self.rng.random(self._r.shape) >= 0.2) / 0.8).astype(np.float32)
            self._r = self._r * self._m
        return self._r @ P["fc.weight"].data.T + P["fc.bias"].data

    def backward(self, g):
        P = self._params
        P["fc.weight"].grad += g.T @ self._r
        P["fc.bias"].grad += g.sum(0)
        gr = ((g @ P["fc.weight"].data) * self._m).reshape(self._h.shape) * (self._h > 0)
        gx, gw, gb = cc.conv2d_backward(gr.astype(np.float32), self._x,
                                        P["conv.weight"].data, padding=1)
        P["conv.weight"].grad += gw
        P["conv.bias"].grad += gb
        return gx


def tiny(in_channels=1, num_classes=10, image_size=8, seed=0):
    return Tiny(in_channels, num_classes, image_size, seed)


class _Interrupting(Tiny):
    calls = 0

    def forward(self, x):
        _Interrupting.calls += self.training
        if self.training and _Interrupting.calls == 8:
            raise KeyboardInterrupt
        return super().forward(x)


def interrupting(in_channels=1, num_classes=10, image_size=8, seed=0):
    _Interrupting.calls = 0
    m = _Interrupting(in_channels, num_classes, image_size, seed)
    return m


class _Signalling(Tiny):
    """Sends itself `sig` (or raises KeyboardInterrupt) at training call `at`."""
    calls = 0
    at = 8
    sig = None

    def forward(self, x):
        cls = type(self)
        cls.calls += self.training
        if self.training and cls.calls == cls.at:
            if cls.sig is None:
                raise KeyboardInterrupt
            import os
            os.kill(os.getpid(), cls.sig)
        return super().forward(x)


def terminating(in_channels=1, num_classes=10, image_size=8, seed=0):
    """SIGTERM to this process in epoch 2 (6 batches per epoch in the tests)."""
    import signal

    class _T(_Signalling):
        at, sig = 8, signal.SIGTERM
    _T.calls = 0
    return _T(in_channels, num_classes, image_size, seed)


def interrupting_first_epoch(in_channels=1, num_classes=10, image_size=8, seed=0):
    """Ctrl-C in the middle of epoch 1."""
    class _I(_Signalling):
        at, sig = 3, None
    _I.calls = 0
    return _I(in_channels, num_classes, image_size, seed)
