"""PyTorch twins of the notes' networks, written by hand for the benchmarks.

Each twin is the architecture the notes (and convcore's docstrings) describe,
written directly in ``torch.nn`` with the module names of convcore's models,
so that weights move between them by state-dict name.  They share no code
with convcore: ``bench_nets.py`` checks in float64 that a twin and the
convcore network give the same logits and input gradient before timing them.
Imported only in processes that import PyTorch.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

LRN = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)


def lenet5(num_classes=10, in_channels=1):
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(in_channels, 6, 5, padding=2)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(6, 16, 5)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("avgpool", nn.AdaptiveAvgPool2d(5)), ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(400, 120)), ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(120, 84)), ("relu4", nn.ReLU()),
        ("fc3", nn.Linear(84, num_classes))]))


def alexnet(num_classes=1000, in_channels=3):
    features = nn.Sequential(
        nn.Conv2d(in_channels, 96, 11, stride=4), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.LocalResponseNorm(**LRN),
        nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.LocalResponseNorm(**LRN),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
    classifier = nn.Sequential(
        nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, num_classes))
    return nn.Sequential(OrderedDict([("features", features),
                                      ("avgpool", nn.AdaptiveAvgPool2d(6)),
                                      ("flatten", nn.Flatten()), ("classifier", classifier)]))


_VGG = {"A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
        "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"]}


def _vgg(cfg, num_classes=1000, in_channels=3):
    layers, c = [], in_channels
    for v in _VGG[cfg]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
            c = v
    classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, num_classes))
    return nn.Sequential(OrderedDict([("features", nn.Sequential(*layers)),
                                      ("avgpool", nn.AdaptiveAvgPool2d(7)),
                                      ("flatten", nn.Flatten()), ("classifier", classifier)]))


def vgg11(num_classes=1000, in_channels=3):
    return _vgg("A", num_classes, in_channels)


def vgg16(num_classes=1000, in_channels=3):
    return _vgg("D", num_classes, in_channels)


class Inception(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pp):
        super().__init__()
        self.branch1 = nn.Sequential(nn.Conv2d(cin, c1, 1), nn.ReLU())
        self.branch2 = nn.Sequential(nn.Conv2d(cin, c3r, 1), nn.ReLU(),
                                     nn.Conv2d(c3r, c3, 3, padding=1), nn.ReLU())
        self.branch3 = nn.Sequential(nn.Conv2d(cin, c5r, 1), nn.ReLU(),
                                     nn.Conv2d(c5r, c5, 5, padding=2), nn.ReLU())
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                     nn.Conv2d(cin, pp, 1), nn.ReLU())

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x),
                          self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    def __init__(self, num_classes=1000, in_channels=3):
        super().__init__()
        self.stem = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(in_channels, 64, 7, stride=2, padding=3)), ("relu1", nn.ReLU()),
            ("pool1", nn.MaxPool2d(3, 2, padding=1)), ("norm1", nn.LocalResponseNorm(**LRN)),
            ("conv2", nn.Conv2d(64, 64, 1)), ("relu2", nn.ReLU()),
            ("conv3", nn.Conv2d(64, 192, 3, padding=1)), ("relu3", nn.ReLU()),
            ("norm2", nn.LocalResponseNorm(**LRN)), ("pool2", nn.MaxPool2d(3, 2, padding=1)),
            ("inception3a", Inception(192, 64, 96, 128, 16, 32, 32)),
            ("inception3b", Inception(256, 128, 128, 192, 32, 96, 64)),
            ("pool3", nn.MaxPool2d(3, 2, padding=1)),
            ("inception4a", Inception(480, 192, 96, 208, 16, 48, 64))]))
        self.middle = nn.Sequential(OrderedDict([
            ("inception4b", Inception(512, 160, 112, 224, 24, 64, 64)),
            ("inception4c", Inception(512, 128, 128, 256, 24, 64, 64)),
            ("inception4d", Inception(512, 112, 144, 288, 32, 64, 64))]))
        self.head = nn.Sequential(OrderedDict([
            ("inception4e", Inception(528, 256, 160, 320, 32, 128, 128)),
            ("pool4", nn.MaxPool2d(3, 2, padding=1)),
            ("inception5a", Inception(832, 256, 160, 320, 32, 128, 128)),
            ("inception5b", Inception(832, 384, 192, 384, 48, 128, 128)),
            ("avgpool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
            ("dropout", nn.Dropout(0.4)), ("fc", nn.Linear(1024, num_classes))]))

    def forward(self, x):
        return self.head(self.middle(self.stem(x)))


def googlenet(num_classes=1000, in_channels=3):
    return GoogLeNet(num_classes, in_channels)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return self.relu(h + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False),
                                            nn.BatchNorm2d(out))

    def forward(self, x):
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return self.relu(h + (x if self.downsample is None else self.downsample(x)))


def _resnet(block, counts, num_classes, in_channels):
    mods = OrderedDict([("conv1", nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)),
                        ("bn1", nn.BatchNorm2d(64)), ("relu", nn.ReLU()),
                        ("maxpool", nn.MaxPool2d(3, 2, 1))])
    cin = 64
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), counts)):
        blocks = []
        for j in range(n):
            blocks.append(block(cin, planes, 2 if (i > 0 and j == 0) else 1))
            cin = planes * block.expansion
        mods[f"layer{i + 1}"] = nn.Sequential(*blocks)
    mods["avgpool"] = nn.AdaptiveAvgPool2d(1)
    mods["flatten"] = nn.Flatten()
    mods["fc"] = nn.Linear(512 * block.expansion, num_classes)
    return nn.Sequential(mods)


def resnet18(num_classes=1000, in_channels=3):
    return _resnet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels)


def resnet34(num_classes=1000, in_channels=3):
    return _resnet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels)


def resnet50(num_classes=1000, in_channels=3):
    return _resnet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels)


def build(fn_name, num_classes=1000, in_channels=3):
    return globals()[fn_name](num_classes=num_classes, in_channels=in_channels)


def load_npz(model, path):
    """Copy every parameter and buffer from ``path`` (an .npz of the convcore
    network's state dict) by name, one array at a time; ValueError if a name
    or shape is missing or differs."""
    import numpy as np
    with np.load(path) as z:
        state = model.state_dict()
        opt = "num_batches_tracked"    # a counter: copied where both sides keep it
        keys = {k for k in z.files if not k.endswith(opt)}
        want = {k for k in state if not k.endswith(opt)}
        if want != keys:
            raise ValueError(f"state-dict names differ: only in the twin {sorted(want - keys)}, "
                             f"only in convcore {sorted(keys - want)}")
        want |= {k for k in z.files if k.endswith(opt) and k in state}
        with torch.no_grad():
            for k in sorted(want):
                a = z[k]
                if tuple(a.shape) != tuple(state[k].shape):
                    raise ValueError(f"{k}: twin shape {tuple(state[k].shape)}, convcore "
                                     f"{a.shape}")
                state[k].copy_(torch.from_numpy(np.asarray(a)))
                del a
    return model
