"""ResNet-18, -34 and -50 for ImageNet-sized input, with torchvision's module
names (the CIFAR ResNets of the paper are in :mod:`convcore.models.resnet_cifar`)."""
from __future__ import annotations

from collections import OrderedDict

from convcore.models._common import _common
from convcore.nn import (AdaptiveAvgPool2d, BasicBlock, BatchNorm2d, Bottleneck, Conv2d, Flatten,
                         Linear, MaxPool2d, ReLU, Sequential)

__all__ = ["resnet18", "resnet34", "resnet50"]


def _resnet(block, layers, num_classes, in_channels, dtype, rng, cifar_stem=False):
    num_classes, in_channels, rng = _common(num_classes, in_channels, rng)
    if cifar_stem:   # 3x3 stride-1 stem, no max pool: 32x32 input ends on 4x4 maps
        mods = OrderedDict([
            ("conv1", Conv2d(in_channels, 64, 3, padding=1, bias=False, rng=rng)),
            ("bn1", BatchNorm2d(64)), ("relu", ReLU())])
    else:
        mods = OrderedDict([
            ("conv1", Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False, rng=rng)),
            ("bn1", BatchNorm2d(64)), ("relu", ReLU()),
            ("maxpool", MaxPool2d(3, stride=2, padding=1))])
    inplanes = 64
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
        blocks = []
        for j in range(n):
            stride = 2 if (i > 0 and j == 0) else 1
            blocks.append(block(inplanes, planes, stride=stride, rng=rng))
            inplanes = planes * block.expansion
        mods[f"layer{i + 1}"] = Sequential(*blocks)
    mods["avgpool"] = AdaptiveAvgPool2d(1)
    mods["flatten"] = Flatten()
    mods["fc"] = Linear(512 * block.expansion, num_classes, rng=rng)
    net = Sequential(mods)
    return net if dtype is None else net.astype(dtype)


def resnet18(num_classes=1000, in_channels=3, dtype=None, rng=None, cifar_stem=False):
    """ResNet-18: basic blocks [2, 2, 2, 2]; 11,689,512 parameters for 1000
    classes; torchvision's state-dict names.

    ``cifar_stem=True`` replaces the 7x7 stride-2 stem and its max pool by a
    3x3 stride-1 convolution, as usually done for 32x32 images (the last
    stage then works on 4x4 maps instead of 1x1); the state-dict keys stay
    the same, only ``conv1.weight`` is 3x3.  The same option exists for
    :func:`resnet34` and :func:`resnet50`.  For the ResNet paper's own CIFAR
    networks see :func:`resnet20` ... :func:`resnet110`.

    Examples
    --------
    >>> from convcore import models
    >>> models.resnet18(rng=0).num_parameters()
    11689512
    """
    return _resnet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, dtype, rng, cifar_stem)


def resnet34(num_classes=1000, in_channels=3, dtype=None, rng=None, cifar_stem=False):
    """ResNet-34: basic blocks [3, 4, 6, 3] (21,797,672 parameters);
    ``cifar_stem`` as in :func:`resnet18`."""
    return _resnet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels, dtype, rng, cifar_stem)


def resnet50(num_classes=1000, in_channels=3, dtype=None, rng=None, cifar_stem=False):
    """ResNet-50: bottleneck blocks [3, 4, 6, 3] (25,557,032 parameters);
    ``cifar_stem`` as in :func:`resnet18`."""
    return _resnet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels, dtype, rng, cifar_stem)
