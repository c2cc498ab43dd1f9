"""Blocks with more than one path: ResNet's basic and bottleneck blocks and
the Inception module."""
from __future__ import annotations

from convcore import functional as F
from convcore._rng import as_rng
from convcore._validate import as_int
from convcore.backends import get_backend
from convcore.nn.layers import BatchNorm2d, Conv2d, MaxPool2d, ReLU, Sequential
from convcore.nn.module import Module, _not_ready

__all__ = ["BasicBlock", "Bottleneck", "Inception"]


def _plain_row(rows, name, typ, shape):
    rows.append({"name": name, "type": typ, "output_shape": tuple(shape), "params": 0,
                 "weights": 0, "macs": 0})


class _Residual(Module):
    """``relu(main(x) + shortcut(x))``: the main path is a list of
    (conv, bn) stages with a ReLU between stages; the shortcut is the identity
    or ``downsample`` (1x1 conv + BN, the projection shortcut)."""

    expansion = 1

    _saved_state = ("_post",)

    def _stages(self):
        raise NotImplementedError

    def _fold_groups(self):
        return self._stages()

    def _make_downsample(self, inplanes, planes, stride, downsample, rng):
        out = planes * self.expansion
        if downsample is None and (stride != 1 or inplanes != out):
            downsample = Sequential(Conv2d(inplanes, out, 1, stride=stride, bias=False, rng=rng),
                                    BatchNorm2d(out))
        if downsample is not None and downsample is not False:
            self.downsample = downsample
        else:
            self.downsample = None

    def forward(self, x):
        # Each ReLU's output is kept as its mask (its sign is the input's):
        # between stages it is the array the next convolution keeps anyway,
        # and the sum is rectified in place, so the block holds no
        # activation of its own.
        post = []
        h = x
        stages = self._stages()
        be = get_backend(x)
        for i, (conv, bn) in enumerate(stages):
            h = bn(conv(h))
            if i < len(stages) - 1:
                h = F.relu(h) if h is x else be.relu_inplace(h)   # NaN propagates
                post.append(h)
        s = x if self.downsample is None else self.downsample(x)
        if s.shape != h.shape:
            raise ValueError(f"{type(self).__name__}: shortcut shape {tuple(s.shape)} does not "
                             f"match the main path {tuple(h.shape)}; give a downsample")
        if h is x or h is s:
            h = be.relu_inplace(h + s)
        else:                           # the main path's last output is the block's alone
            be.add_relu_inplace(h, s)   # (sum and ReLU in one parallel pass)
        post.append(h)
        self._post = post
        return h

    def backward(self, grad_output):
        post = getattr(self, "_post", None)
        if post is None:
            raise _not_ready(self)
        g_sum = F.relu_backward(grad_output, post[-1])
        g = g_sum
        stages = self._stages()
        for i in range(len(stages) - 1, -1, -1):
            conv, bn = stages[i]
            g = conv.backward(bn.backward(g))
            if i > 0:
                g = F.relu_backward(g, post[i - 1])
        s = g_sum if self.downsample is None else self.downsample.backward(g_sum)
        be = get_backend(g_sum)
        if (g is not None and g is not s and g.base is None and g.dtype == s.dtype
                and g.shape == s.shape and getattr(g.flags, "writeable", True)):
            return be.add_inplace(g, s)   # the first convolution's fresh input gradient
        return g + s

    def _summary(self, input_shape, prefix, rows):
        shape = tuple(input_shape)
        stages = self._stages()
        names = {id(m): n for n, m in self._modules.items()}
        for i, (conv, bn) in enumerate(stages):
            shape = conv._summary(shape, f"{prefix}.{names[id(conv)]}", rows)
            shape = bn._summary(shape, f"{prefix}.{names[id(bn)]}", rows)
            if i < len(stages) - 1:
                _plain_row(rows, f"{prefix}.relu{i + 1}", "ReLU", shape)
        if self.downsample is not None:
            self.downsample._summary(tuple(input_shape), f"{prefix}.downsample", rows)
        _plain_row(rows, f"{prefix}.add_relu", "Add+ReLU", shape)
        return shape


class BasicBlock(_Residual):
    """ResNet-18/34 block: two 3x3 convolutions with batch norm, plus the
    shortcut (identity, or a 1x1 projection when the shape changes).

    ``downsample=None`` builds the projection when ``stride != 1`` or
    ``inplanes != planes``; pass a module to use your own, ``False`` for none.

    Examples
    --------
    >>> import numpy as np
    >>> from convcore import nn
    >>> blk = nn.BasicBlock(4, 8, stride=2, rng=0)
    >>> blk(np.ones((1, 4, 6, 6), np.float32)).shape
    (1, 8, 3, 3)
    """

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, rng=None):
        super().__init__()
        inplanes = as_int(inplanes, "inplanes", minimum=1)
        planes = as_int(planes, "planes", minimum=1)
        stride = as_int(stride, "stride", minimum=1)
        rng = as_rng(rng)
        self.conv1 = Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False, rng=rng)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = Conv2d(planes, planes, 3, padding=1, bias=False, rng=rng)
        self.bn2 = BatchNorm2d(planes)
        self._make_downsample(inplanes, planes, stride, downsample, rng)
        self.stride = stride

    def _stages(self):
        return [(self.conv1, self.bn1), (self.conv2, self.bn2)]


class Bottleneck(_Residual):
    """ResNet-50 block: 1x1 reduce, 3x3 (carrying the stride), 1x1 expand to
    ``4 * planes`` channels, each with batch norm, plus the shortcut.

    Examples
    --------
    >>> import numpy as np
    >>> from convcore import nn
    >>> nn.Bottleneck(16, 4, rng=0)(np.ones((1, 16, 3, 3), np.float32)).shape
    (1, 16, 3, 3)
    """

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, rng=None):
        super().__init__()
        inplanes = as_int(inplanes, "inplanes", minimum=1)
        planes = as_int(planes, "planes", minimum=1)
        stride = as_int(stride, "stride", minimum=1)
        rng = as_rng(rng)
        self.conv1 = Conv2d(inplanes, planes, 1, bias=False, rng=rng)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False, rng=rng)
        self.bn2 = BatchNorm2d(planes)
        self.conv3 = Conv2d(planes, planes * 4, 1, bias=False, rng=rng)
        self.bn3 = BatchNorm2d(planes * 4)
        self._make_downsample(inplanes, planes, stride, downsample, rng)
        self.stride = stride

    def _stages(self):
        return [(self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)]


class Inception(Module):
    """GoogLeNet's Inception module: four branches on the same input,
    concatenated along channels -- 1x1; 1x1 then 3x3; 1x1 then 5x5; 3x3 max
    pool then 1x1 -- each convolution followed by ReLU (the 2014 paper).

    Examples
    --------
    >>> import numpy as np
    >>> from convcore import nn
    >>> m = nn.Inception(192, 64, 96, 128, 16, 32, 32, rng=0)   # inception (3a)
    >>> m(np.ones((1, 192, 4, 4), np.float32)).shape
    (1, 256, 4, 4)
    """

    _saved_state = ("_splits",)

    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj,
                 rng=None):
        super().__init__()
        rng = as_rng(rng)
        self.branch1 = Sequential(Conv2d(in_channels, ch1x1, 1, rng=rng), ReLU())
        self.branch2 = Sequential(Conv2d(in_channels, ch3x3red, 1, rng=rng), ReLU(),
                                  Conv2d(ch3x3red, ch3x3, 3, padding=1, rng=rng), ReLU())
        self.branch3 = Sequential(Conv2d(in_channels, ch5x5red, 1, rng=rng), ReLU(),
                                  Conv2d(ch5x5red, ch5x5, 5, padding=2, rng=rng), ReLU())
        self.branch4 = Sequential(MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                  Conv2d(in_channels, pool_proj, 1, rng=rng), ReLU())
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj
        self._splits = None

    def _branches(self):
        return [self.branch1, self.branch2, self.branch3, self.branch4]

    def forward(self, x):
        # The concatenated output is the only copy of the branches' results:
        # each branch's last ReLU writes into its slice of it and keeps that
        # slice as its mask, so no branch holds an output of its own.
        xp = get_backend(x).xp
        out, splits, start = None, [], 0
        for b in self._branches():
            mods = list(b)
            last = mods[-1] if mods else None
            h = x
            for m in (mods[:-1] if isinstance(last, ReLU) else mods):
                h = m(h)
            c = int(h.shape[-3])
            if out is None:
                # the output's channel count: each branch's last convolution
                total = sum(self._branch_channels(br) for br in self._branches())
                out = xp.empty(tuple(h.shape[:-3]) + (total,) + tuple(h.shape[-2:]), h.dtype)
            if start + c > out.shape[-3] or tuple(h.shape[-2:]) != tuple(out.shape[-2:]):
                raise ValueError(f"Inception: branch outputs {tuple(h.shape)} do not fit "
                                 f"the concatenation {tuple(out.shape)}")
            view = out[..., start:start + c, :, :]
            if isinstance(last, ReLU):
                last._forward_into(h, view)
            else:
                view[...] = h
            del h
            splits.append(c)
            start += c
        if start != out.shape[-3]:
            raise ValueError(f"Inception: the branches give {start} channels, expected "
                             f"{out.shape[-3]}")
        self._splits = splits
        return out

    @staticmethod
    def _branch_channels(branch):
        for m in reversed(list(branch)):
            if isinstance(m, Conv2d):
                return m.out_channels
        raise ValueError("Inception: every branch needs a convolution")

    def backward(self, grad_output):
        if self._splits is None:
            raise _not_ready(self)
        # branch by branch on its slice of the gradient (each last ReLU's
        # mask is its slice of the output): only one branch's gradients are
        # alive at a time besides the running sum
        gx, start = None, 0
        for b, c in zip(self._branches(), self._splits):
            g = b.backward(grad_output[..., start:start + c, :, :])
            if g is not None:
                if gx is None:
                    gx = g
                elif (g.dtype == gx.dtype and gx.base is None
                      and getattr(gx.flags, "writeable", True)):
                    gx += g          # a branch's own fresh gradient: added in place
                else:
                    gx = gx + g
            del g
            start += c
        return gx

    def _summary(self, input_shape, prefix, rows):
        shapes = [b._summary(tuple(input_shape), f"{prefix}.branch{i + 1}", rows)
                  for i, b in enumerate(self._branches())]
        out = shapes[0][:-3] + (sum(s[-3] for s in shapes),) + shapes[0][-2:]
        _plain_row(rows, f"{prefix}.concat", "Concat", out)
        return out
