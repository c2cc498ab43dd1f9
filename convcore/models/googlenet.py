"""GoogLeNet (Inception v1) of the 2014 paper, with its optional auxiliary
classifiers."""
from __future__ import annotations

from collections import OrderedDict

from convcore.models._common import _common
from convcore.nn import (AdaptiveAvgPool2d, Conv2d, Dropout, Flatten, Inception, Linear,
                         LocalResponseNorm, MaxPool2d, Module, ReLU, Sequential)
from convcore.nn.module import _not_ready

__all__ = ["GoogLeNet", "googlenet"]


class GoogLeNet(Module):
    """GoogLeNet (Szegedy et al., 2014): the stem, nine Inception modules,
    global average pooling, dropout 0.4 and one FC layer.

    With ``aux_logits`` two auxiliary classifiers hang off inception (4a)
    and (4d); in training mode ``forward`` then returns ``(logits, aux1,
    aux2)`` and ``backward`` takes a matching tuple of gradients.
    """

    def __init__(self, num_classes=1000, in_channels=3, aux_logits=False, dtype=None,
                 rng=None):
        super().__init__()
        num_classes, in_channels, rng = _common(num_classes, in_channels, rng)
        kw = dict(rng=rng)
        self.aux_logits = bool(aux_logits)
        lrn = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)
        self.stem = Sequential(OrderedDict([
            ("conv1", Conv2d(in_channels, 64, 7, stride=2, padding=3, **kw)), ("relu1", ReLU()),
            ("pool1", MaxPool2d(3, 2, padding=1)), ("norm1", LocalResponseNorm(**lrn)),
            ("conv2", Conv2d(64, 64, 1, **kw)), ("relu2", ReLU()),
            ("conv3", Conv2d(64, 192, 3, padding=1, **kw)), ("relu3", ReLU()),
            ("norm2", LocalResponseNorm(**lrn)), ("pool2", MaxPool2d(3, 2, padding=1)),
            ("inception3a", Inception(192, 64, 96, 128, 16, 32, 32, rng=rng)),
            ("inception3b", Inception(256, 128, 128, 192, 32, 96, 64, rng=rng)),
            ("pool3", MaxPool2d(3, 2, padding=1)),
            ("inception4a", Inception(480, 192, 96, 208, 16, 48, 64, rng=rng)),
        ]))
        self.middle = Sequential(OrderedDict([
            ("inception4b", Inception(512, 160, 112, 224, 24, 64, 64, rng=rng)),
            ("inception4c", Inception(512, 128, 128, 256, 24, 64, 64, rng=rng)),
            ("inception4d", Inception(512, 112, 144, 288, 32, 64, 64, rng=rng)),
        ]))
        self.head = Sequential(OrderedDict([
            ("inception4e", Inception(528, 256, 160, 320, 32, 128, 128, rng=rng)),
            ("pool4", MaxPool2d(3, 2, padding=1)),
            ("inception5a", Inception(832, 256, 160, 320, 32, 128, 128, rng=rng)),
            ("inception5b", Inception(832, 384, 192, 384, 48, 128, 128, rng=rng)),
            ("avgpool", AdaptiveAvgPool2d(1)), ("flatten", Flatten()),
            ("dropout", Dropout(0.4, rng=rng)), ("fc", Linear(1024, num_classes, **kw)),
        ]))
        if self.aux_logits:
            self.aux1 = self._aux(512, num_classes, rng)
            self.aux2 = self._aux(528, num_classes, rng)
        self._aux_used = None
        if dtype is not None:
            self.astype(dtype)

    @staticmethod
    def _aux(c, num_classes, rng):
        # The paper: 5x5/3 average pool (4x4 on 224x224 input; adaptive here so
        # small inputs work), 1x1 conv 128, FC 1024, dropout 0.7, FC.
        return Sequential(OrderedDict([
            ("pool", AdaptiveAvgPool2d(4)), ("conv", Conv2d(c, 128, 1, rng=rng)),
            ("relu1", ReLU()), ("flatten", Flatten()), ("fc1", Linear(2048, 1024, rng=rng)),
            ("relu2", ReLU()), ("dropout", Dropout(0.7, rng=rng)),
            ("fc2", Linear(1024, num_classes, rng=rng))]))

    def forward(self, x):
        h1 = self.stem(x)
        h2 = self.middle(h1)
        out = self.head(h2)
        self._aux_used = self.aux_logits and self.training
        if self._aux_used:
            return out, self.aux1(h1), self.aux2(h2)
        return out

    def backward(self, grad_output):
        if self._aux_used is None:
            raise _not_ready(self)
        if self._aux_used:
            if not isinstance(grad_output, (tuple, list)) or len(grad_output) != 3:
                raise ValueError("GoogLeNet with auxiliary classifiers in training mode needs "
                                 "a tuple of three gradients (logits, aux1, aux2)")
            g, ga1, ga2 = grad_output
            g2 = self.head.backward(g) + self.aux2.backward(ga2)
            g1 = self.middle.backward(g2) + self.aux1.backward(ga1)
        else:
            g1 = self.middle.backward(self.head.backward(grad_output))
        return self.stem.backward(g1)

    def _summary(self, input_shape, prefix, rows):
        p = (prefix + ".") if prefix else ""
        h1 = self.stem._summary(input_shape, p + "stem", rows)
        h2 = self.middle._summary(h1, p + "middle", rows)
        out = self.head._summary(h2, p + "head", rows)
        if self.aux_logits:
            self.aux1._summary(h1, p + "aux1", rows)
            self.aux2._summary(h2, p + "aux2", rows)
        return out


def googlenet(num_classes=1000, in_channels=3, aux_logits=False, dtype=None, rng=None):
    """GoogLeNet of the 2014 paper (see :class:`GoogLeNet`).

    Examples
    --------
    >>> from convcore import models
    >>> import numpy as np
    >>> net = models.googlenet(num_classes=10, rng=0)
    >>> net(np.zeros((1, 3, 32, 32), np.float32)).shape
    (1, 10)
    """
    return GoogLeNet(num_classes, in_channels, aux_logits, dtype, rng)
