"""The networks of the notes: LeNet-5, AlexNet, VGG (configurations A to E),
GoogLeNet, ResNet-18/34/50 and the CIFAR ResNets (20, 32, 44, 56, 110 layers).

Every constructor takes ``num_classes``, ``in_channels``, ``dtype`` and
``rng`` (None, a seed or a ``numpy.random.Generator``: the same seed gives
the same weights).  VGG and ResNet use torchvision's module names, so their
``state_dict()`` keys and shapes match torchvision's.
"""
from __future__ import annotations

from collections import OrderedDict

from convcore._rng import as_rng
from convcore._validate import as_int
from convcore.nn import (AdaptiveAvgPool2d, BasicBlock, BatchNorm2d, Bottleneck, Conv2d,
                         Dropout, Flatten, Inception, Linear, LocalResponseNorm, MaxPool2d,
                         Module, ReLU, Sequential)
from convcore.nn.module import _not_ready
from convcore.models._act import activation_layer, check_activation

__all__ = ["lenet5", "alexnet", "vgg", "vgg11", "vgg13", "vgg16", "vgg19", "VGG_CONFIGS",
           "googlenet", "GoogLeNet", "resnet18", "resnet34", "resnet50", "get_model",
           "MODELS"]


def __dir__():   # dir() shows the public names only
    return sorted(__all__)


def _common(num_classes, in_channels, rng):
    return (as_int(num_classes, "num_classes", minimum=1),
            as_int(in_channels, "in_channels", minimum=1), as_rng(rng))


# ---------------------------------------------------------------------- LeNet
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


# -------------------------------------------------------------------- AlexNet
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


# ------------------------------------------------------------------------ VGG
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


# ------------------------------------------------------------------ GoogLeNet
class GoogLeNet(Module):
    """GoogLeNet (Szegedy et al., 2014): the stem, nine Inception modules,
    global average pooling, dropout 0.4 and one FC layer.

    With ``aux_logits`` two auxiliary classifiers hang off inception (4a)
    and (4d); in training mode ``forward`` then returns ``(logits, aux1,
    aux2)`` and ``backward`` takes a matching tuple of gradients.
    """

    def __init__(self, num_classes=1000, in_channels=3, aux_logits=False, dtype=None,
                 rng=None):
        super().__init__()
        num_classes, in_channels, rng = _common(num_classes, in_channels, rng)
        kw = dict(rng=rng)
        self.aux_logits = bool(aux_logits)
        lrn = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)
        self.stem = Sequential(OrderedDict([
            ("conv1", Conv2d(in_channels, 64, 7, stride=2, padding=3, **kw)), ("relu1", ReLU()),
            ("pool1", MaxPool2d(3, 2, padding=1)), ("norm1", LocalResponseNorm(**lrn)),
            ("conv2", Conv2d(64, 64, 1, **kw)), ("relu2", ReLU()),
            ("conv3", Conv2d(64, 192, 3, padding=1, **kw)), ("relu3", ReLU()),
            ("norm2", LocalResponseNorm(**lrn)), ("pool2", MaxPool2d(3, 2, padding=1)),
            ("inception3a", Inception(192, 64, 96, 128, 16, 32, 32, rng=rng)),
            ("inception3b", Inception(256, 128, 128, 192, 32, 96, 64, rng=rng)),
            ("pool3", MaxPool2d(3, 2, padding=1)),
            ("inception4a", Inception(480, 192, 96, 208, 16, 48, 64, rng=rng)),
        ]))
        self.middle = Sequential(OrderedDict([
            ("inception4b", Inception(512, 160, 112, 224, 24, 64, 64, rng=rng)),
            ("inception4c", Inception(512, 128, 128, 256, 24, 64, 64, rng=rng)),
            ("inception4d", Inception(512, 112, 144, 288, 32, 64, 64, rng=rng)),
        ]))
        self.head = Sequential(OrderedDict([
            ("inception4e", Inception(528, 256, 160, 320, 32, 128, 128, rng=rng)),
            ("pool4", MaxPool2d(3, 2, padding=1)),
            ("inception5a", Inception(832, 256, 160, 320, 32, 128, 128, rng=rng)),
            ("inception5b", Inception(832, 384, 192, 384, 48, 128, 128, rng=rng)),
            ("avgpool", AdaptiveAvgPool2d(1)), ("flatten", Flatten()),
            ("dropout", Dropout(0.4, rng=rng)), ("fc", Linear(1024, num_classes, **kw)),
        ]))
        if self.aux_logits:
            self.aux1 = self._aux(512, num_classes, rng)
            self.aux2 = self._aux(528, num_classes, rng)
        self._aux_used = None
        if dtype is not None:
            self.astype(dtype)

    @staticmethod
    def _aux(c, num_classes, rng):
        # The paper: 5x5/3 average pool (4x4 on 224x224 input; adaptive here so
        # small inputs work), 1x1 conv 128, FC 1024, dropout 0.7, FC.
        return Sequential(OrderedDict([
            ("pool", AdaptiveAvgPool2d(4)), ("conv", Conv2d(c, 128, 1, rng=rng)),
            ("relu1", ReLU()), ("flatten", Flatten()), ("fc1", Linear(2048, 1024, rng=rng)),
            ("relu2", ReLU()), ("dropout", Dropout(0.7, rng=rng)),
            ("fc2", Linear(1024, num_classes, rng=rng))]))

    def forward(self, x):
        h1 = self.stem(x)
        h2 = self.middle(h1)
        out = self.head(h2)
        self._aux_used = self.aux_logits and self.training
        if self._aux_used:
            return out, self.aux1(h1), self.aux2(h2)
        return out

    def backward(self, grad_output):
        if self._aux_used is None:
            raise _not_ready(self)
        if self._aux_used:
            if not isinstance(grad_output, (tuple, list)) or len(grad_output) != 3:
                raise ValueError("GoogLeNet with auxiliary classifiers in training mode needs "
                                 "a tuple of three gradients (logits, aux1, aux2)")
            g, ga1, ga2 = grad_output
            g2 = self.head.backward(g) + self.aux2.backward(ga2)
            g1 = self.middle.backward(g2) + self.aux1.backward(ga1)
        else:
            g1 = self.middle.backward(self.head.backward(grad_output))
        return self.stem.backward(g1)

    def _summary(self, input_shape, prefix, rows):
        p = (prefix + ".") if prefix else ""
        h1 = self.stem._summary(input_shape, p + "stem", rows)
        h2 = self.middle._summary(h1, p + "middle", rows)
        out = self.head._summary(h2, p + "head", rows)
        if self.aux_logits:
            self.aux1._summary(h1, p + "aux1", rows)
            self.aux2._summary(h2, p + "aux2", rows)
        return out


def googlenet(num_classes=1000, in_channels=3, aux_logits=False, dtype=None, rng=None):
    """GoogLeNet of the 2014 paper (see :class:`GoogLeNet`).

    Examples
    --------
    >>> from convcore import models
    >>> import numpy as np
    >>> net = models.googlenet(num_classes=10, rng=0)
    >>> net(np.zeros((1, 3, 32, 32), np.float32)).shape
    (1, 10)
    """
    return GoogLeNet(num_classes, in_channels, aux_logits, dtype, rng)


# --------------------------------------------------------------------- ResNet
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


MODELS = {"lenet5": lenet5, "alexnet": alexnet, "vgg11": vgg11, "vgg13": vgg13,
          "vgg16": vgg16, "vgg19": vgg19, "googlenet": googlenet, "resnet18": resnet18,
          "resnet34": resnet34, "resnet50": resnet50}


def get_model(name, **kwargs):
    """Build a model by name (``'vgg16'``, ``'vgg-A-LRN'``, ``'resnet18'``, ...)."""
    key = str(name).lower()
    if key in MODELS:
        return MODELS[key](**kwargs)
    if key.startswith("vgg-") and key[4:].upper() in VGG_CONFIGS:
        return vgg(key[4:].upper(), **kwargs)
    raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)} or "
                     f"vgg-<A|A-LRN|B|C|D|E>")


from convcore.models._cnn import cnn_bn, cnn_bn_wide  # noqa: E402

__all__ += ["cnn_bn", "cnn_bn_wide"]
MODELS["cnn_bn"] = cnn_bn
MODELS["cnn_bn_wide"] = cnn_bn_wide

from convcore.models.resnet_cifar import (PadShortcut, resnet20, resnet32, resnet44,  # noqa: E402
                                          resnet56, resnet110, resnet_cifar)

__all__ += ["resnet_cifar", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
            "PadShortcut"]
MODELS.update(resnet20=resnet20, resnet32=resnet32, resnet44=resnet44, resnet56=resnet56,
              resnet110=resnet110)
