"""Eval-mode folding: a convolution followed by batch norm (and ReLU) runs as
one convolution.

In eval mode batch norm is a fixed affine map per channel,
``bn(z) = a * z + c`` with ``a = gamma / sqrt(running_var + eps)`` and
``c = beta - a * running_mean``.  After a convolution ``z = W * x + b`` it
folds into the convolution's weights: ``W' = a W`` and ``b' = a b + c``; a
ReLU that directly follows is applied in place to the convolution's output.
The folded layer skips the batch-norm pass and its output array.

``Module.eval()`` plans the folds (``eval(fold=False)`` does not) and
``train()`` drops them.  The folded weights are computed on the first
forward call and kept (one extra copy of each folded convolution's weights,
and for a 3x3 or 5x5 layer whose forward pass runs Winograd's algorithm,
its transformed weights -- 16/9 of a 3x3 layer's weights, 64/25 of a 5x5
layer's -- made once instead of at every call) until the parameters are replaced, an optimizer step or pruning
changes them, ``load_state_dict`` copies new values in, or the module leaves
eval mode; parameter values changed in place by other means while in eval
mode need another ``eval()``.

A fold is planned only where the dataflow is certain: adjacent children of a
``Sequential`` and the (conv, bn) stages of the residual blocks, with each
module used once in the network and batch norm tracking running statistics.
A backward pass in eval mode still gives every gradient of the unfolded
network (the batch norm's input is recomputed from the saved convolution
input, one extra convolution).
"""
from __future__ import annotations

import numpy as np

from convcore._ops.conv import _conv2d_packed
from convcore.backends import get_backend

__all__ = ["Fold", "plan", "clear", "sequence_groups"]


class Fold:
    """One planned fold: ``conv`` then ``bn`` (or None) then ``relu`` (or None)."""

    __slots__ = ("conv", "bn", "relu", "_key", "_params", "_packs")

    def __init__(self, conv, bn, relu):
        self.conv, self.bn, self.relu = conv, bn, relu
        self._key = self._params = None
        self._packs = {}

    def _arrays(self):
        conv, bn = self.conv, self.bn
        arrs = [conv.weight.data, None if conv.bias is None else conv.bias.data]
        if bn is not None:
            arrs += [bn.running_mean, bn.running_var,
                     None if bn.weight is None else bn.weight.data,
                     None if bn.bias is None else bn.bias.data]
        return arrs

    def _versions(self):
        conv, bn = self.conv, self.bn
        ps = [conv.weight, conv.bias] + ([] if bn is None else [bn.weight, bn.bias])
        return tuple(getattr(p, "_version", 0) for p in ps if p is not None)

    def params(self):
        """The folded (weight, bias), computed in float64 and kept while the
        parameter arrays are the same objects and no optimizer step (or
        pruning) has changed them."""
        arrs = self._arrays()
        key = (tuple(id(a) for a in arrs) + self._versions() +
               (None if self.bn is None else self.bn.eps,))
        if self._params is None or key != self._key:
            self._packs.clear()
            self._params, self._key = self._fold(arrs), key
        return self._params

    def active(self):
        """Whether every part is still this fold's and in eval mode."""
        for part in (self.conv, self.bn, self.relu):
            if part is not None and (part._fold is not self or part.training):
                return False
        return True

    def conv_forward(self, F, x):
        """The folded convolution (and ReLU, in place) of x."""
        conv = self.conv
        w, b = self.params()
        # (the folded weights never change while they are kept: the backend
        # may pack them once for the calls that run faster so)
        y = _conv2d_packed(x, w, b, self._packs, **conv._args())
        if self.relu is not None:
            get_backend(y).relu_inplace(y)    # NaN propagates
        return y

    def bn_input(self, F):
        """What the batch norm would have received: the unfolded convolution
        of the saved input (for a backward pass in eval mode)."""
        conv = self.conv
        return F.conv2d(conv._x, conv.weight.data,
                        None if conv.bias is None else conv.bias.data, **conv._args())

    def invalidate(self):
        self._key = self._params = None
        self._packs.clear()

    def _fold(self, arrs):
        w, b = arrs[0], arrs[1]
        if self.bn is None:
            return w, b
        xp = get_backend(w).xp
        mean, var, gamma, beta = (None if a is None else a.astype(np.float64)
                                  for a in arrs[2:])
        a = (1.0 if gamma is None else gamma) / xp.sqrt(var + self.bn.eps)
        c = (0.0 if beta is None else beta) - a * mean
        wf = (w.astype(np.float64) * a.reshape(-1, 1, 1, 1)).astype(w.dtype)
        bf = (c if b is None else a * b.astype(np.float64) + c).astype(w.dtype)
        return wf, bf


def _uses(root):
    """How many times each module object appears in the tree."""
    counts = {}

    def walk(m):
        counts[id(m)] = counts.get(id(m), 0) + 1
        for c in m._modules.values():
            walk(c)
    walk(root)
    return counts


def plan(root):
    """Plan the folds of every eligible group below ``root`` and mark the
    modules; returns the list of folds."""
    from convcore.nn.layers import BatchNorm2d, Conv2d, ReLU
    clear(root)
    counts = _uses(root)
    folds = []

    def once(m):
        return counts.get(id(m)) == 1

    def foldable_bn(conv, bn):
        return (isinstance(bn, BatchNorm2d) and once(bn)
                and bn.track_running_stats and bn.running_mean is not None
                and bn.num_features == conv.out_channels)

    for m in root.modules():
        for group in m._fold_groups():
            conv, bn, relu = (list(group) + [None, None])[:3]
            if not (type(conv) is Conv2d and once(conv)) or conv._fold is not None:
                continue
            if bn is not None and not foldable_bn(conv, bn):
                continue
            if relu is not None and not (type(relu) is ReLU and once(relu)):
                relu = None
            if bn is None and relu is None:
                continue
            f = Fold(conv, bn, relu)
            for part in (conv, bn, relu):
                if part is not None:
                    object.__setattr__(part, "_fold", f)
            folds.append(f)
    return folds


def clear(root):
    """Drop every fold below ``root``."""
    for m in root.modules():
        if getattr(m, "_fold", None) is not None:
            object.__setattr__(m, "_fold", None)


def sequence_groups(children):
    """(conv, bn, relu) / (conv, bn) / (conv, None, relu) groups of adjacent
    modules in a sequence."""
    from convcore.nn.layers import BatchNorm2d, Conv2d, ReLU
    out = []
    for i, m in enumerate(children):
        if type(m) is not Conv2d:
            continue
        nxt = children[i + 1:i + 3]
        if nxt and isinstance(nxt[0], BatchNorm2d):
            relu = nxt[1] if len(nxt) > 1 and type(nxt[1]) is ReLU else None
            out.append((m, nxt[0], relu))
        elif nxt and type(nxt[0]) is ReLU:
            out.append((m, None, nxt[0]))
    return out
