"""convcore.nn: layers with explicit forward and backward passes.

Constructor arguments and defaults follow ``torch.nn``.  ``forward`` caches
what ``backward`` needs; ``backward(grad_output)`` returns the gradient with
respect to the input and accumulates (``+=``) into each parameter's ``.grad``.
"""
from convcore.nn.module import Module, Parameter
from convcore.nn.layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv2d, Dropout,
                                Flatten, Linear, LocalResponseNorm, MaxPool2d, ReLU, Sequential)
from convcore.nn.common import (ConvTranspose2d, Dropout2d, Identity, LeakyReLU, LogSoftmax,
                                Sigmoid, Softmax, Tanh, Upsample)
from convcore.losses import CrossEntropyLoss
from convcore.nn.blocks import BasicBlock, Bottleneck, Inception
from convcore.nn._io import load_state_dict_file, save_state_dict
from convcore.nn.sync_batchnorm import SyncBatchNorm2d, convert_sync_batchnorm

__all__ = ["Module", "Parameter", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
           "ReLU", "Linear", "Flatten", "Dropout", "BatchNorm2d", "LocalResponseNorm",
           "Sequential", "BasicBlock", "Bottleneck", "Inception", "save_state_dict",
           "load_state_dict_file", "ConvTranspose2d", "Identity", "Softmax", "LogSoftmax",
           "Dropout2d", "Upsample", "Tanh", "Sigmoid", "LeakyReLU", "CrossEntropyLoss",
           "SyncBatchNorm2d", "convert_sync_batchnorm"]


def __dir__():   # dir() shows the public names only
    return sorted(__all__)
