"""VGG: the columns A to E of the notes' configuration table, with
torchvision's module names."""
from __future__ import annotations

from collections import OrderedDict

from convcore.models._common import _common
from convcore.nn import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear,
                         LocalResponseNorm, MaxPool2d, ReLU, Sequential)

__all__ = ["VGG_CONFIGS", "vgg", "vgg11", "vgg13", "vgg16", "vgg19"]

# The columns of the notes' configuration table: an int is a 3x3 conv with
# that many filters, ('conv1', n) a 1x1 conv, 'LRN' local response
# normalisation, 'M' a 2x2/2 max pool.
VGG_CONFIGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, ("conv1", 256), "M",
          512, 512, ("conv1", 512), "M", 512, 512, ("conv1", 512), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
          512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"],
}


def vgg(config="D", num_classes=1000, in_channels=3, batch_norm=False, dropout=0.5,
        dtype=None, rng=None):
    """VGG network from a column of the configuration table
    (``'A'``, ``'A-LRN'``, ``'B'``, ``'C'``, ``'D'``, ``'E'``).

    Module names follow torchvision (``features.N``, ``avgpool``,
    ``classifier.{0,3,6}``); with ``batch_norm`` each conv is followed by a
    BatchNorm2d (torchvision's ``vgg*_bn``).  The adaptive 7x7 average pool
    lets 32x32 inputs through.  Parameters (millions): A 133, A-LRN 133,
    B 133, C 134, D 138, E 144.

    Examples
    --------
    >>> from convcore import models
    >>> round(models.vgg("D", rng=0).num_parameters() / 1e6)
    138
    """
    if not isinstance(config, str) or config.upper() not in VGG_CONFIGS:
        raise ValueError(f"config must be one of {sorted(VGG_CONFIGS)}, got {config!r}")
    num_classes, in_channels, rng = _common(num_classes, in_channels, rng)
    kw = dict(dtype=dtype, rng=rng)
    layers, c = [], in_channels
    for v in VGG_CONFIGS[config.upper()]:
        if v == "M":
            layers.append(MaxPool2d(2, 2))
        elif v == "LRN":
            layers.append(LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0))
        else:
            k, n = (1, v[1]) if isinstance(v, tuple) else (3, v)
            layers.append(Conv2d(c, n, k, padding=k // 2, **kw))
            if batch_norm:
                layers.append(BatchNorm2d(n, dtype=dtype))
            layers.append(ReLU())
            c = n
    classifier = Sequential(
        Linear(512 * 7 * 7, 4096, **kw), ReLU(), Dropout(dropout, rng=rng),
        Linear(4096, 4096, **kw), ReLU(), Dropout(dropout, rng=rng),
        Linear(4096, num_classes, **kw))
    return Sequential(OrderedDict([("features", Sequential(*layers)),
                                   ("avgpool", AdaptiveAvgPool2d(7)), ("flatten", Flatten()),
                                   ("classifier", classifier)]))


def vgg11(**kw):
    """VGG configuration A (11 weight layers); arguments as :func:`vgg`."""
    return vgg("A", **kw)


def vgg13(**kw):
    """VGG configuration B (13 weight layers); arguments as :func:`vgg`."""
    return vgg("B", **kw)


def vgg16(**kw):
    """VGG configuration D (16 weight layers); arguments as :func:`vgg`."""
    return vgg("D", **kw)


def vgg19(**kw):
    """VGG configuration E (19 weight layers); arguments as :func:`vgg`."""
    return vgg("E", **kw)
