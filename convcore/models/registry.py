"""The models ``convcore train --model`` and :func:`get_model` know by name.

:data:`MODELS` is the only table a name read from a file (a checkpoint, a
plan) is looked up in; ``vgg-<column>`` names any column of
:data:`~convcore.models.VGG_CONFIGS`.
"""
from __future__ import annotations

import functools

from convcore.models._cnn import cnn_bn, cnn_bn_wide
from convcore.models.alexnet import alexnet
from convcore.models.googlenet import googlenet
from convcore.models.lenet import lenet5
from convcore.models.resnet import resnet18, resnet34, resnet50
from convcore.models.resnet_cifar import resnet20, resnet32, resnet44, resnet56, resnet110
from convcore.models.vgg import VGG_CONFIGS, vgg, vgg11, vgg13, vgg16, vgg19

__all__ = ["MODELS", "get_model"]

MODELS = {"lenet5": lenet5, "alexnet": alexnet, "vgg11": vgg11, "vgg13": vgg13,
          "vgg16": vgg16, "vgg19": vgg19, "googlenet": googlenet, "resnet18": resnet18,
          "resnet34": resnet34, "resnet50": resnet50, "cnn_bn": cnn_bn,
          "cnn_bn_wide": cnn_bn_wide, "resnet20": resnet20, "resnet32": resnet32,
          "resnet44": resnet44, "resnet56": resnet56, "resnet110": resnet110}


def constructor(name):
    """The constructor registered under `name` (any case; ``vgg-<column>``
    for a column of the configuration table), or None."""
    key = str(name).lower()
    if key in MODELS:
        return MODELS[key]
    if key.startswith("vgg-") and key[4:].upper() in VGG_CONFIGS:
        return functools.partial(vgg, key[4:].upper())
    return None


def get_model(name, **kwargs):
    """Build a model by name (``'vgg16'``, ``'vgg-A-LRN'``, ``'resnet18'``, ...)."""
    fn = constructor(name)
    if fn is None:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)} or "
                         f"vgg-<A|A-LRN|B|C|D|E>")
    return fn(**kwargs)
