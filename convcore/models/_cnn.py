"""A small CNN with batch normalisation for Fashion-MNIST-sized images: the
stronger model that ``convcore train --model cnn_bn`` trains; its default widths
are sized for a 2-core CPU."""
from __future__ import annotations

from collections import OrderedDict

from convcore._rng import as_rng
from convcore._validate import as_int
from convcore.models._act import activation_layer, check_activation
from convcore.nn import (AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear,
                         MaxPool2d, Sequential)


def cnn_bn(num_classes=10, in_channels=1, widths=(16, 32, 64), dropout=0.2, dtype=None,
           rng=None, activation="relu"):
    """Three VGG-style blocks (3x3 conv without bias, BatchNorm, ReLU, 2x2 max
    pool) of `widths` channels, then an adaptive average pool to 3x3,
    dropout and one linear classifier. On 28x28 input the pool is the
    identity (28 -> 14 -> 7 -> 3); 32x32 images work too.  ``activation``
    ('relu', 'tanh', 'sigmoid' or 'leaky_relu') replaces the ReLUs.

    Examples
    --------
    >>> from convcore import models
    >>> models.cnn_bn(rng=0).num_parameters()
    29178
    """
    num_classes = as_int(num_classes, "num_classes", minimum=1)
    in_channels = as_int(in_channels, "in_channels", minimum=1)
    widths = tuple(as_int(w, "widths", minimum=1) for w in widths)
    if not widths:
        raise ValueError("widths must name at least one block")
    rng = as_rng(rng)
    act = check_activation(activation)
    layers = []
    c = in_channels
    for i, w in enumerate(widths, 1):
        layers += [(f"conv{i}", Conv2d(c, w, 3, padding=1, bias=False, dtype=dtype, rng=rng)),
                   (f"bn{i}", BatchNorm2d(w, dtype=dtype)), (f"{act}{i}", activation_layer(act)),
                   (f"pool{i}", MaxPool2d(2))]
        c = w
    layers += [("avgpool", AdaptiveAvgPool2d(3)), ("flatten", Flatten()),
               ("dropout", Dropout(dropout, rng=rng)),
               ("fc", Linear(c * 9, num_classes, dtype=dtype, rng=rng))]
    return Sequential(OrderedDict(layers))


def cnn_bn_wide(num_classes=10, in_channels=1, dropout=0.2, dtype=None, rng=None,
                activation="relu"):
    """:func:`cnn_bn` with (32, 64, 128) channels: the stronger Fashion-MNIST
    network (104,426 parameters).

    Examples
    --------
    >>> from convcore import models
    >>> models.cnn_bn_wide(rng=0).num_parameters()
    104426
    """
    return cnn_bn(num_classes=num_classes, in_channels=in_channels, widths=(32, 64, 128),
                  dropout=dropout, dtype=dtype, rng=rng, activation=activation)
