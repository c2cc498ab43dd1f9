"""Structured pruning: whole filters and the channels that depend on them."""
from __future__ import annotations

import numpy as np

from convcore.nn import BatchNorm2d, Conv2d, Flatten, Linear, Parameter, Sequential
from convcore.prune.magnitude import _PER_CHANNEL, _check_amount, _host

def _chain(model):
    """The leaf layers of a network made only of Sequential containers, in
    the order they run; ValueError for anything else."""
    leaves = []

    def walk(m, prefix):
        if isinstance(m, Sequential):
            for name, c in m._modules.items():
                walk(c, f"{prefix}.{name}" if prefix else name)
        elif m._modules:
            raise ValueError(f"structured pruning follows chains of layers (Sequential); "
                             f"{prefix or 'the model'} is a {type(m).__name__} with branches")
        else:
            leaves.append((prefix, m))
    walk(model, "")
    return leaves


def _set_param(module, attr, value):
    setattr(module, attr, Parameter(np.ascontiguousarray(value)))


def _keep_out(conv, keep):
    _set_param(conv, "weight", _host(conv.weight.data)[keep])
    if conv.bias is not None:
        _set_param(conv, "bias", _host(conv.bias.data)[keep])
    conv.out_channels = int(len(keep))


def _keep_bn(bn, keep):
    if bn.weight is not None:
        _set_param(bn, "weight", _host(bn.weight.data)[keep])
        _set_param(bn, "bias", _host(bn.bias.data)[keep])
    if bn.running_mean is not None:
        bn.running_mean = np.ascontiguousarray(_host(bn.running_mean)[keep])
        bn.running_var = np.ascontiguousarray(_host(bn.running_var)[keep])
    bn.num_features = int(len(keep))


def _keep_in(layer, keep, per_channel):
    w = _host(layer.weight.data)
    if isinstance(layer, Conv2d):
        _set_param(layer, "weight", w[:, keep])
        layer.in_channels = int(len(keep))
    else:
        cols = (keep[:, None] * per_channel + np.arange(per_channel)).ravel()
        _set_param(layer, "weight", w[:, cols])
        layer.in_features = int(len(cols))


def prune_channels(model, amount, min_channels=1, layers=None):
    """Remove the fraction ``amount`` of filters of each convolution whose
    output feeds the next weight layer channel by channel.

    Filters are ranked by their L1 norm, times the ``|gamma| / sqrt(var +
    eps)`` of a batch norm that follows (the scale the channel really has).
    A removed filter takes with it its bias, its batch-norm channel
    (parameters and running statistics) and the matching input channels of
    the next convolution, or the matching columns of the next Linear layer
    after a flatten.  The network must be a chain of Sequential containers
    (LeNet-5, AlexNet, VGG, ``cnn_bn``); the last convolution before a
    non-per-channel layer (local response normalisation mixes channels) and
    grouped convolutions are left alone.

    Parameters
    ----------
    amount : float in [0, 1)
        Fraction of each layer's filters to remove (rounded down).
    min_channels : int
        Never leave a layer with fewer filters.
    layers : list of str, optional
        Names of the convolutions to prune (default: every one that can be).

    Returns
    -------
    dict
        ``{conv name: (channels before, channels after)}`` of pruned layers.

    Examples
    --------
    >>> import convcore as cc
    >>> from convcore.prune import prune_channels
    >>> net = cc.models.cnn_bn(rng=0)
    >>> prune_channels(net, 0.5)
    {'conv1': (16, 8), 'conv2': (32, 16), 'conv3': (64, 32)}
    >>> net.num_parameters()
    8834
    """
    amount = _check_amount(amount)
    leaves = _chain(model)
    names = [n for n, m in leaves if isinstance(m, Conv2d)]
    if layers is not None:
        missing = set(layers) - set(names)
        if missing:
            raise ValueError(f"no Conv2d named {sorted(missing)}; the model has {names}")
    done = {}
    for i, (name, conv) in enumerate(leaves):
        if not isinstance(conv, Conv2d) or conv.groups != 1:
            continue
        if layers is not None and name not in layers:
            continue
        bn, nxt, flat = None, None, False
        for _, m in leaves[i + 1:]:
            if isinstance(m, BatchNorm2d) and bn is None and nxt is None:
                bn = m
            elif isinstance(m, _PER_CHANNEL):
                continue
            elif isinstance(m, Flatten):
                flat = True
            elif isinstance(m, (Conv2d, Linear)):
                nxt = m
                break
            else:
                break
        if nxt is None or (isinstance(nxt, Conv2d) and (flat or nxt.groups != 1)):
            continue
        C = conv.out_channels
        if isinstance(nxt, Linear):
            if nxt.in_features % C:
                continue
            per = nxt.in_features // C
        else:
            per = 1
        n_remove = min(int(amount * C), C - max(int(min_channels), 1))
        if n_remove <= 0:
            continue
        score = np.abs(_host(conv.weight.data)).reshape(C, -1).sum(axis=1).astype(np.float64)
        if bn is not None and bn.weight is not None:
            var = _host(bn.running_var) if bn.running_var is not None else np.ones(C)
            score = score * np.abs(_host(bn.weight.data)) / np.sqrt(var + bn.eps)
        keep = np.sort(np.argsort(score, kind="stable")[n_remove:])
        _keep_out(conv, keep)
        if bn is not None:
            _keep_bn(bn, keep)
        _keep_in(nxt, keep, per)
        done[name] = (C, int(len(keep)))
    return done


def resize_to_state(model, state):
    """Give each Conv2d, BatchNorm2d and Linear of ``model`` the shapes of
    ``state`` (a state dict of a channel-pruned copy of the same network) so
    that ``model.load_state_dict(state)`` works; values are then loaded."""
    for name, m in model.named_modules():
        p = f"{name}." if name else ""
        w = state.get(p + "weight")
        if w is None:
            continue
        w = np.asarray(w)
        if isinstance(m, Conv2d) and w.shape != m.weight.shape:
            _set_param(m, "weight", np.zeros(w.shape, w.dtype))
            m.out_channels, m.in_channels = int(w.shape[0]), int(w.shape[1] * m.groups)
            if m.bias is not None:
                _set_param(m, "bias", np.zeros(w.shape[0], w.dtype))
        elif isinstance(m, Linear) and w.shape != m.weight.shape:
            _set_param(m, "weight", np.zeros(w.shape, w.dtype))
            m.out_features, m.in_features = int(w.shape[0]), int(w.shape[1])
            if m.bias is not None:
                _set_param(m, "bias", np.zeros(w.shape[0], w.dtype))
        elif isinstance(m, BatchNorm2d) and w.shape[0] != m.num_features:
            _keep_bn(m, np.zeros(w.shape[0], np.int64))
    return model
