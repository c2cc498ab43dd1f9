"""The activation choice of the small trainable models (``activation=``)."""
from __future__ import annotations

from convcore.nn import LeakyReLU, ReLU, Sigmoid, Tanh

ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu")
_LAYERS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid, "leaky_relu": LeakyReLU}


def check_activation(name):
    if not isinstance(name, str) or name not in _LAYERS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return name


def activation_layer(name):
    """A fresh layer for ``name`` (checked by :func:`check_activation`)."""
    return _LAYERS[name]()
