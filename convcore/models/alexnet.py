"""AlexNet as the notes draw it: five convolutions with local response
normalisation after the first two, three fully connected layers."""
from __future__ import annotations

from collections import OrderedDict

from convcore.models._common import _common
from convcore.nn import (AdaptiveAvgPool2d, Conv2d, Dropout, Flatten, Linear, LocalResponseNorm,
                         MaxPool2d, ReLU, Sequential)

__all__ = ["alexnet"]


def alexnet(num_classes=1000, in_channels=3, dropout=0.5, dtype=None, rng=None):
    """AlexNet as the notes draw it (227x227x3 input): CONV1 96@11x11/4 ->
    55x55x96, MAX POOL1 3x3/2 -> 27x27x96, NORM1, CONV2 256@5x5 pad 2, MAX
    POOL2 -> 13x13x256, NORM2, CONV3 384, CONV4 384, CONV5 256 (3x3 pad 1),
    MAX POOL3 -> 6x6x256, FC6 4096, FC7 4096, FC8 ``num_classes``.

    NORM is local response normalisation with the paper's constants
    (size 5, alpha 1e-4, beta 0.75, k 2).  Inputs smaller than about 67x67
    shrink to nothing before the classifier.

    Examples
    --------
    >>> from convcore import models
    >>> net = models.alexnet(num_classes=10, rng=0)
    >>> net.features[0].weight.shape
    (96, 3, 11, 11)
    """
    num_classes, in_channels, rng = _common(num_classes, in_channels, rng)
    kw = dict(dtype=dtype, rng=rng)
    features = Sequential(
        Conv2d(in_channels, 96, 11, stride=4, **kw), ReLU(), MaxPool2d(3, 2),
        LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),
        Conv2d(96, 256, 5, padding=2, **kw), ReLU(), MaxPool2d(3, 2),
        LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),
        Conv2d(256, 384, 3, padding=1, **kw), ReLU(),
        Conv2d(384, 384, 3, padding=1, **kw), ReLU(),
        Conv2d(384, 256, 3, padding=1, **kw), ReLU(), MaxPool2d(3, 2))
    classifier = Sequential(
        Dropout(dropout, rng=rng), Linear(256 * 6 * 6, 4096, **kw), ReLU(),
        Dropout(dropout, rng=rng), Linear(4096, 4096, **kw), ReLU(),
        Linear(4096, num_classes, **kw))
    return Sequential(OrderedDict([("features", features), ("avgpool", AdaptiveAvgPool2d(6)),
                                   ("flatten", Flatten()), ("classifier", classifier)]))
