"""Unstructured pruning: magnitude masks, sparsity counts."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from convcore.nn import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv2d, Dropout, Linear,
                         MaxPool2d, ReLU)

_PRUNABLE = (Conv2d, Linear)
# layers that keep channel c of their input in channel c of their output
_PER_CHANNEL = (ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Dropout, BatchNorm2d)


def _check_amount(amount):
    if isinstance(amount, bool) or not isinstance(amount, (int, float, np.floating)):
        raise TypeError(f"amount must be a float in [0, 1), got {type(amount).__name__}")
    amount = float(amount)
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {amount}")
    return amount


def _prunable(model):
    return [(name, m) for name, m in model.named_modules() if isinstance(m, _PRUNABLE)]


class Masks:
    """Which weights of each pruned layer stay (``True``) or are held at zero.

    ``masks[name]`` is a boolean array of the shape of ``<name>.weight``.
    :meth:`apply` zeroes the pruned weights; :meth:`mask_grads` zeroes their
    gradients (call it before the optimiser step, :meth:`apply` after it, as
    :func:`fine_tune` does, so neither momentum nor weight decay revives them).
    """

    def __init__(self, masks):
        self.masks = OrderedDict(masks)

    def __getitem__(self, name):
        return self.masks[name]

    def __iter__(self):
        return iter(self.masks)

    def __len__(self):
        return len(self.masks)

    def _weights(self, model):
        mods = dict(model.named_modules())
        for name, mask in self.masks.items():
            if name not in mods:
                raise ValueError(f"the model has no layer {name!r} to mask")
            w = mods[name].weight
            if w.shape != mask.shape:
                raise ValueError(f"mask of {name!r} has shape {mask.shape}, the weight "
                                 f"{w.shape}")
            yield w, mask

    def apply(self, model):
        for w, mask in self._weights(model):
            w.data[...] *= mask
            if hasattr(w, "_version"):
                w._version += 1   # (eval-mode folds of it are made again)
        return model

    def mask_grads(self, model):
        for w, mask in self._weights(model):
            w.grad[...] *= mask
        return model

    def sparsity(self):
        """Fraction of masked (zero) weights over all masked layers."""
        total = sum(m.size for m in self.masks.values())
        return 1.0 - sum(int(m.sum()) for m in self.masks.values()) / max(total, 1)

    def __repr__(self):
        return f"Masks({len(self.masks)} layers, sparsity {self.sparsity():.1%})"


def magnitude_prune(model, amount, scope="global", layers=None):
    """Set the fraction ``amount`` of weights of smallest magnitude to zero.

    Parameters
    ----------
    model : convcore.nn.Module
    amount : float in [0, 1)
        Fraction of the weights to remove (biases and batch-norm parameters
        are never pruned).
    scope : {'global', 'layer'}
        ``'global'``: one threshold over all the layers' weights together
        (large layers lose more); ``'layer'``: the fraction in every layer.
    layers : list of str, optional
        Names of the Conv2d / Linear layers to prune (default: all).

    Returns
    -------
    Masks
        Exactly ``round(amount * n)`` weights are masked (``n`` per layer or
        in total); ties at the threshold are broken by position.

    Examples
    --------
    >>> import convcore as cc
    >>> from convcore.prune import magnitude_prune, sparsity
    >>> net = cc.models.lenet5(rng=0)
    >>> masks = magnitude_prune(net, 0.9)
    >>> round(sparsity(net)["total"], 3)
    0.9
    """
    amount = _check_amount(amount)
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    targets = _prunable(model)
    if layers is not None:
        wanted = set(layers)
        missing = wanted - {n for n, _ in targets}
        if missing:
            raise ValueError(f"no Conv2d or Linear layer named {sorted(missing)}; the model "
                             f"has {[n for n, _ in targets]}")
        targets = [(n, m) for n, m in targets if n in wanted]
    if not targets:
        raise ValueError("the model has no Conv2d or Linear layer to prune")
    masks = OrderedDict()
    if scope == "layer":
        for name, m in targets:
            masks[name] = _smallest_mask(np.abs(_host(m.weight.data)), amount)
    else:
        flat = np.concatenate([np.abs(_host(m.weight.data)).ravel() for _, m in targets])
        keep = _smallest_mask(flat, amount)
        start = 0
        for name, m in targets:
            n = m.weight.size
            masks[name] = keep[start:start + n].reshape(m.weight.shape)
            start += n
    out = Masks(masks)
    out.apply(model)
    return out


def _host(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def _smallest_mask(mag, amount):
    """Boolean mask, False at the round(amount * size) smallest entries."""
    k = int(round(amount * mag.size))
    keep = np.ones(mag.shape, bool)
    if k:
        idx = np.argsort(mag, axis=None, kind="stable")[:k]
        keep.reshape(-1)[idx] = False
    return keep


def sparsity(model):
    """Fraction of zero weights in each Conv2d / Linear layer and in total
    (``'total'``), biases not counted."""
    out, zeros, total = OrderedDict(), 0, 0
    for name, m in _prunable(model):
        w = _host(m.weight.data)
        z = int(w.size - np.count_nonzero(w))
        out[name] = z / w.size
        zeros += z
        total += w.size
    out["total"] = zeros / max(total, 1)
    return out


def count_nonzero(model):
    """``(nonzero parameters, all parameters)`` of the model."""
    nz = tot = 0
    for p in model.parameters():
        a = _host(p.data)
        nz += int(np.count_nonzero(a))
        tot += a.size
    return nz, tot


def _sparse_macs(model, input_shape):
    """MACs that multiply a nonzero weight (what a sparse kernel would do):
    each layer's MACs times its fraction of nonzero weights."""
    from convcore._summary import summary
    s = summary(model, input_shape)
    frac = {n: 1.0 - z for n, z in sparsity(model).items() if n != "total"}
    return int(sum(r["macs"] * frac.get(r["name"], 1.0) for r in s.rows)), s.total_macs
