"""The networks of the notes: LeNet-5, AlexNet, VGG (configurations A to E),
GoogLeNet, ResNet-18/34/50 and the CIFAR ResNets (20, 32, 44, 56, 110 layers).

Every constructor takes ``num_classes``, ``in_channels``, ``dtype`` and
``rng`` (None, a seed or a ``numpy.random.Generator``: the same seed gives
the same weights).  VGG and ResNet use torchvision's module names, so their
``state_dict()`` keys and shapes match torchvision's.

One module per family, as torchvision lays them out (``lenet``, ``alexnet``,
``vgg``, ``googlenet``, ``resnet``, ``resnet_cifar``); the name table that
``get_model`` and the training checkpoints look names up in is in
``registry``.  Everything is imported from here.
"""
from convcore.models.lenet import lenet5
from convcore.models.alexnet import alexnet
from convcore.models.vgg import VGG_CONFIGS, vgg, vgg11, vgg13, vgg16, vgg19
from convcore.models.googlenet import GoogLeNet, googlenet
from convcore.models.resnet import resnet18, resnet34, resnet50
from convcore.models._cnn import cnn_bn, cnn_bn_wide
from convcore.models.resnet_cifar import (PadShortcut, resnet20, resnet32, resnet44, resnet56,
                                          resnet110, resnet_cifar)
from convcore.models.registry import MODELS, get_model

__all__ = ["lenet5", "alexnet", "vgg", "vgg11", "vgg13", "vgg16", "vgg19", "VGG_CONFIGS",
           "googlenet", "GoogLeNet", "resnet18", "resnet34", "resnet50", "get_model",
           "MODELS", "cnn_bn", "cnn_bn_wide", "resnet_cifar", "resnet20", "resnet32",
           "resnet44", "resnet56", "resnet110", "PadShortcut"]


def __dir__():   # dir() shows the public names only
    return sorted(__all__)
