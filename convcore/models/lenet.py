"""LeNet-5, the small network of the notes' first examples, for 28x28 digits."""
from __future__ import annotations

from collections import OrderedDict

from convcore.models._act import activation_layer, check_activation
from convcore.models._common import _common
from convcore.nn import AdaptiveAvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, Sequential

__all__ = ["lenet5"]


def lenet5(num_classes=10, in_channels=1, dtype=None, rng=None, activation="relu"):
    """LeNet-5 for 28x28 digits: conv 6@5x5 (pad 2), max pool, conv 16@5x5,
    max pool, FC 120, 84, ``num_classes``, with ReLU: 61,706 parameters for
    one input channel and 10 classes.

    ``activation`` ('relu', 'tanh', 'sigmoid' or 'leaky_relu') replaces every
    ReLU (the layers are then named ``tanh1``, ...), for the comparison the
    AlexNet paper makes (ReLU trains several times faster than tanh).

    An adaptive average pool to 5x5 before the classifier (the identity on
    28x28 input) lets it take 32x32 images too.

    Examples
    --------
    >>> from convcore import models
    >>> models.lenet5(rng=0).num_parameters()
    61706
    """
    num_classes, in_channels, rng = _common(num_classes, in_channels, rng)
    act = check_activation(activation)
    kw = dict(dtype=dtype, rng=rng)
    return Sequential(OrderedDict([
        ("conv1", Conv2d(in_channels, 6, 5, padding=2, **kw)), (f"{act}1", activation_layer(act)),
        ("pool1", MaxPool2d(2)),
        ("conv2", Conv2d(6, 16, 5, **kw)), (f"{act}2", activation_layer(act)),
        ("pool2", MaxPool2d(2)),
        ("avgpool", AdaptiveAvgPool2d(5)), ("flatten", Flatten()),
        ("fc1", Linear(16 * 5 * 5, 120, **kw)), (f"{act}3", activation_layer(act)),
        ("fc2", Linear(120, 84, **kw)), (f"{act}4", activation_layer(act)),
        ("fc3", Linear(84, num_classes, **kw)),
    ]))
