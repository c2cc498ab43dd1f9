"""The ResNets for 32x32 images of the ResNet paper (He et al., 2015, section
4.2): a 3x3 convolution of 16 filters, three stages of ``n`` basic blocks
with 16, 32 and 64 filters on 32x32, 16x16 and 8x8 maps, global average
pooling and one FC layer: ``6n + 2`` weight layers (20, 32, 44, 56, 110).

Where a stage halves the map and doubles the channels the shortcut is the
paper's option A by default -- the identity, subsampled and zero-padded with
the missing channels, so it has no parameters -- or option B, a 1x1
projection with batch norm (the shortcut of :class:`convcore.nn.BasicBlock`).
"""
from __future__ import annotations

from collections import OrderedDict

from convcore._rng import as_rng
from convcore._validate import as_int
from convcore.backends import get_backend
from convcore.nn import (AdaptiveAvgPool2d, BasicBlock, BatchNorm2d, Conv2d, Flatten, Linear,
                         Module, ReLU, Sequential)
from convcore.nn.module import _not_ready

__all__ = ["PadShortcut", "resnet_cifar", "resnet20", "resnet32", "resnet44", "resnet56",
           "resnet110"]


class PadShortcut(Module):
    """Option A shortcut: ``x[:, :, ::stride, ::stride]`` with zero channels
    added on both sides up to ``out_channels`` (the identity on the channels
    it has, zero elsewhere).  No parameters.

    The first ``(out_channels - in_channels) // 2`` output channels are zero,
    then come the input's channels, then zeros again.

    Examples
    --------
    >>> import numpy as np
    >>> from convcore.models import PadShortcut
    >>> s = PadShortcut(16, 32, stride=2)
    >>> y = s(np.ones((1, 16, 8, 8), np.float32))
    >>> y.shape, float(y[0, :8].sum()), float(y[0, 8:24].sum()), float(y[0, 24:].sum())
    ((1, 32, 4, 4), 0.0, 256.0, 0.0)
    """

    def __init__(self, in_channels, out_channels, stride=2):
        super().__init__()
        self.in_channels = as_int(in_channels, "in_channels", minimum=1)
        self.out_channels = as_int(out_channels, "out_channels", minimum=1)
        self.stride = as_int(stride, "stride", minimum=1)
        if self.out_channels < self.in_channels:
            raise ValueError(f"PadShortcut adds channels: out_channels must be >= in_channels "
                             f"({self.in_channels}), got {self.out_channels}")
        self.front = (self.out_channels - self.in_channels) // 2
        self._in_shape = None

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"PadShortcut expects (N, {self.in_channels}, H, W), got shape "
                             f"{tuple(x.shape)}")
        s, f = self.stride, self.front
        sub = x[:, :, ::s, ::s]
        xp = get_backend(x).xp
        y = xp.zeros((x.shape[0], self.out_channels) + sub.shape[2:], dtype=x.dtype)
        y[:, f:f + self.in_channels] = sub
        self._in_shape = tuple(x.shape)
        return y

    def backward(self, grad_output):
        if self._in_shape is None:
            raise _not_ready(self)
        s, f = self.stride, self.front
        xp = get_backend(grad_output).xp
        gx = xp.zeros(self._in_shape, dtype=grad_output.dtype)
        gx[:, :, ::s, ::s] = grad_output[:, f:f + self.in_channels]
        return gx

    def output_shape(self, input_shape):
        n, c, h, w = input_shape
        s = self.stride
        return (n, self.out_channels, -(-h // s), -(-w // s))

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def resnet_cifar(depth=20, num_classes=10, in_channels=3, shortcut="A", dtype=None, rng=None):
    """ResNet of ``depth = 6n + 2`` layers for 32x32 images (see the module
    docstring); ``shortcut`` is ``'A'`` (zero-padded identity, no parameters)
    or ``'B'`` (1x1 projection + batch norm where the shape changes).

    Parameters with option A and 10 classes (the paper's CIFAR-10 table in
    brackets): 20 layers 269,722 (0.27M), 32: 464,154 (0.46M), 44: 658,586
    (0.66M), 56: 853,018 (0.85M), 110: 1,727,962 (1.7M).  Option B adds the
    two projections: 2,752 more.

    Examples
    --------
    >>> from convcore import models
    >>> models.resnet_cifar(20, rng=0).num_parameters()
    269722
    """
    depth = as_int(depth, "depth", minimum=8)
    if (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 (20, 32, 44, 56, 110, ...), got {depth}")
    if not isinstance(shortcut, str) or shortcut.upper() not in ("A", "B"):
        raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
    num_classes = as_int(num_classes, "num_classes", minimum=1)
    in_channels = as_int(in_channels, "in_channels", minimum=1)
    rng = as_rng(rng)
    n = (depth - 2) // 6
    mods = OrderedDict([
        ("conv1", Conv2d(in_channels, 16, 3, padding=1, bias=False, rng=rng)),
        ("bn1", BatchNorm2d(16)), ("relu", ReLU())])
    inplanes = 16
    for i, planes in enumerate((16, 32, 64)):
        blocks = []
        for j in range(n):
            stride = 2 if (i > 0 and j == 0) else 1
            down = None
            if shortcut.upper() == "A" and (stride != 1 or inplanes != planes):
                down = PadShortcut(inplanes, planes, stride)
            blocks.append(BasicBlock(inplanes, planes, stride=stride, downsample=down, rng=rng))
            inplanes = planes
        mods[f"layer{i + 1}"] = Sequential(*blocks)
    mods["avgpool"] = AdaptiveAvgPool2d(1)
    mods["flatten"] = Flatten()
    mods["fc"] = Linear(64, num_classes, rng=rng)
    net = Sequential(mods)
    return net if dtype is None else net.astype(dtype)


def _depth(depth, name):
    def build(num_classes=10, in_channels=3, shortcut="A", dtype=None, rng=None):
        return resnet_cifar(depth, num_classes, in_channels, shortcut, dtype, rng)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"ResNet-{depth} for 32x32 images ({(depth - 2) // 6} basic blocks per "
                     f"stage); arguments as :func:`resnet_cifar`.")
    return build


resnet20 = _depth(20, "resnet20")
resnet32 = _depth(32, "resnet32")
resnet44 = _depth(44, "resnet44")
resnet56 = _depth(56, "resnet56")
resnet110 = _depth(110, "resnet110")
