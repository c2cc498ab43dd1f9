"""Pruning ("several ways to learn architectures" in the notes: start from an
over-parameterised network and remove what it does not need).

* :func:`magnitude_prune` -- unstructured: the weights of smallest magnitude
  become zero, per layer or over the whole network at once (global); a
  :class:`Masks` object keeps them zero through fine-tuning.
* :func:`prune_channels` -- structured: whole filters of a convolution go,
  with the matching batch-norm channels and the matching input channels of
  the next convolution (or columns of the next fully connected layer), so
  the network really gets smaller: fewer parameters and fewer MACs.
* :func:`fine_tune` -- a few epochs of SGD keeping the masks.

``convcore prune RUN --amount 0.9 --epochs 2`` does it to a trained run and
writes a new run with a before/after summary.
"""
from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from dataclasses import asdict

import numpy as np

from convcore.nn import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten,
                         Linear, MaxPool2d, Module, Parameter, ReLU, Sequential)

__all__ = ["Masks", "magnitude_prune", "prune_channels", "resize_to_state", "sparsity",
           "count_nonzero", "fine_tune", "prune_run"]

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


# ------------------------------------------------------------ structured pruning

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


# ------------------------------------------------------------------ fine-tuning

def fine_tune(model, train_it, epochs, lr=0.01, masks=None, momentum=0.9, weight_decay=0.0,
              test_it=None, num_classes=None, log=print):
    """``epochs`` of SGD (momentum, cosine schedule) with cross-entropy,
    keeping ``masks`` (gradients masked before each step, weights after).
    Returns the history: one dict per epoch (train loss and accuracy; test
    accuracy when ``test_it`` is given)."""
    from convcore import losses, optim
    from convcore.train import _forward_batches, accuracy_from_confusion
    params = list(model.parameters())
    opt = optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = optim.CosineAnnealingLR(opt, max(int(epochs), 1))
    loss_fn = losses.CrossEntropyLoss()
    history = []
    for epoch in range(int(epochs)):
        t0 = time.perf_counter()
        model.train()
        tot, correct, seen = 0.0, 0, 0
        for x, y in train_it.epoch(1000 + epoch):
            if not len(y):
                continue
            opt.zero_grad()
            logits = model(x)
            loss = loss_fn(logits, y)
            if not np.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} while fine-tuning; lower --lr")
            model.backward(loss_fn.backward())
            if masks is not None:
                masks.mask_grads(model)
            opt.step()
            if masks is not None:
                masks.apply(model)
            tot += loss * len(y)
            correct += int((np.asarray(logits).argmax(1) == y).sum())
            seen += len(y)
        sched.step()
        rec = {"epoch": epoch + 1, "train_loss": tot / max(seen, 1),
               "train_acc": correct / max(seen, 1), "seconds": time.perf_counter() - t0}
        if test_it is not None:
            conf, _ = _forward_batches(model, test_it, np, num_classes)
            rec["test_acc"] = accuracy_from_confusion(conf)[0]
        history.append(rec)
        log(f"fine-tune epoch {epoch + 1}/{epochs}  loss {rec['train_loss']:.4f}  train acc "
            f"{rec['train_acc'] * 100:.2f}%" + (f"  test acc {rec['test_acc'] * 100:.2f}%"
                                                if "test_acc" in rec else ""))
    return history


# ------------------------------------------------------------------ a whole run

def _measure(model, input_shape, test_it, num_classes):
    from convcore.train import _forward_batches, accuracy_from_confusion
    nz, tot = count_nonzero(model)
    sparse_macs, dense_macs = _sparse_macs(model, input_shape)
    conf, _ = _forward_batches(model, test_it, np, num_classes)
    return {"params": tot, "nonzero_params": nz, "macs": dense_macs,
            "nonzero_macs": sparse_macs, "test_acc": accuracy_from_confusion(conf)[0]}


def prune_run(run, amount=0.9, epochs=2, structured=False, scope="global", lr=None,
              out=None, data_dir=None, threads=None, limit_train=None, limit_test=None,
              log=print):
    """Prune a trained run and fine-tune it; write the result as a new run.

    Unstructured (default): :func:`magnitude_prune` with ``scope``;
    ``structured``: :func:`prune_channels`.  The new run (``out``, default
    ``<run>-pruned``) holds ``checkpoint.npz`` (loadable by ``convcore
    evaluate``) and ``prune.json``: parameters, nonzero parameters, MACs,
    MACs on nonzero weights and test accuracy before and after, and the
    fine-tuning history.  Returns that dict.
    """
    try:   # as in training: NumPy's BLAS single-threaded beside convcore's own threads
        from threadpoolctl import threadpool_limits
        limiter = threadpool_limits(limits=1, user_api="blas")
    except ImportError:
        limiter = None
    try:
        return _prune_run(run, amount, epochs, structured, scope, lr, out, data_dir, threads,
                          limit_train, limit_test, log)
    finally:
        if limiter is not None:
            limiter.restore_original_limits()


def _prune_run(run, amount, epochs, structured, scope, lr, out, data_dir, threads,
               limit_train, limit_test, log):
    from convcore import _config
    from convcore import data as _data
    from convcore import optim
    from convcore.ensemble import load_run
    from convcore.train import (TrainConfig, load_data, read_checkpoint, save_checkpoint,
                                skip_first_input_grad)
    amount = _check_amount(amount)
    if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    if threads:
        _config.set_num_threads(threads)
    meta, arrays = read_checkpoint(run)
    cfg = TrainConfig(**meta["config"])
    if data_dir is not None:
        cfg.data_dir = data_dir
    if limit_train is not None:
        cfg.limit_train = limit_train
    if limit_test is not None:
        cfg.limit_test = limit_test
    train_set, test_set = load_data(cfg)
    C = len(meta["classes"])
    shape = tuple(int(s) for s in train_set.images.shape[1:])
    model, _ = load_run(run, shape[0], shape[1], "cpu", (meta, arrays))
    if not isinstance(model, Module):
        raise ValueError(f"pruning needs a convcore.nn model; {cfg.model} is a "
                         f"{type(model).__name__}")
    mean, std = meta["mean"], meta["std"]
    augment = cfg.augment if cfg.augment is not None else cfg.dataset == "cifar10"
    augment, lighting = _data.training_augmentation(augment, train_set.images, cfg.dataset)
    train_it = _data.BatchIterator(train_set.images, train_set.labels, cfg.batch_size,
                                   shuffle=True, seed=cfg.seed, mean=mean, std=std,
                                   augment=augment, lighting=lighting)
    test_it = _data.BatchIterator(test_set.images, test_set.labels, 500, shuffle=False,
                                  mean=mean, std=std)
    before = _measure(model, shape, test_it, C)
    log(f"convcore prune: {run} ({cfg.model}, {before['params']:,} parameters, "
        f"test acc {before['test_acc'] * 100:.2f}%)")
    if structured:
        changed = prune_channels(model, amount)
        masks = None
        what = {"method": "channels", "layers": {k: list(v) for k, v in changed.items()}}
        if not changed:
            raise ValueError(f"{cfg.model} has no convolution whose filters can be removed "
                             f"(structured pruning follows chains of layers)")
    else:
        masks = magnitude_prune(model, amount, scope=scope)
        what = {"method": "magnitude", "scope": scope,
                "layers": {k: round(v, 6) for k, v in sparsity(model).items()}}
    pruned = _measure(model, shape, test_it, C)
    log(f"pruned {amount:.0%} ({what['method']}): test acc {pruned['test_acc'] * 100:.2f}% "
        f"before fine-tuning")
    skip_first_input_grad(model)
    lr = cfg.resolved_lr() if lr is None else float(lr)
    history = fine_tune(model, train_it, epochs, lr=lr, masks=masks,
                        momentum=cfg.momentum, weight_decay=cfg.weight_decay, test_it=test_it,
                        num_classes=C, log=log)
    after = _measure(model, shape, test_it, C)
    res = {"run": run, "model": cfg.model, "amount": amount, "epochs": int(epochs),
           "lr": lr, **what, "before": before, "pruned_no_fine_tune": pruned, "after": after,
           "history": history}
    out = out or (os.path.normpath(os.path.abspath(run if os.path.isdir(run)
                                                   else os.path.dirname(run))) + "-pruned")
    os.makedirs(out, exist_ok=True)
    new_meta = {k: v for k, v in meta.items() if k not in ("module_rngs",)}
    new_meta.update({"config": asdict(cfg), "pruned": {k: v for k, v in res.items()
                                                       if k != "history"},
                     "pruned_channels": bool(structured), "input_shape": list(shape)})
    if masks is not None:
        new_meta["pruned"]["sparsity"] = masks.sparsity()
    opt = optim.SGD(list(model.parameters()), lr=lr)
    save_checkpoint(os.path.join(out, "checkpoint.npz"), model, opt, None, new_meta)
    with open(os.path.join(out, "prune.json"), "w") as f:
        json.dump(res, f, indent=1)
    res["out"] = out
    res["model_obj"] = model
    return res


def format_prune_report(res):
    """The before / after table ``convcore prune`` prints."""
    b, p, a = res["before"], res["pruned_no_fine_tune"], res["after"]
    rows = [("", "before", "pruned", f"fine-tuned ({res['epochs']} ep.)"),
            ("parameters", f"{b['params']:,}", f"{p['params']:,}", f"{a['params']:,}"),
            ("nonzero parameters", f"{b['nonzero_params']:,}", f"{p['nonzero_params']:,}",
             f"{a['nonzero_params']:,}"),
            ("MACs / image", f"{b['macs']:,}", f"{p['macs']:,}", f"{a['macs']:,}"),
            ("MACs on nonzero weights", f"{b['nonzero_macs']:,}", f"{p['nonzero_macs']:,}",
             f"{a['nonzero_macs']:,}"),
            ("test accuracy", f"{b['test_acc'] * 100:.2f}%", f"{p['test_acc'] * 100:.2f}%",
             f"{a['test_acc'] * 100:.2f}%")]
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r))
             for r in rows]
    how = (f"{res['amount']:.0%} of the filters of each prunable convolution removed"
           if res["method"] == "channels" else
           f"{res['amount']:.0%} of the weights zeroed ({res['scope']} magnitude)")
    return "\n".join([how] + lines + [f"new run: {res['out']}"])


# ---------------------------------------------------------------------- CLI

def add_cli(sub):
    """The ``convcore prune`` subcommand."""
    p = sub.add_parser("prune", help="prune a trained run (magnitude or whole channels), "
                                     "fine-tune it, write a new run",
                       description="Prune a trained run and fine-tune it briefly; print "
                                   "parameters, MACs and test accuracy before and after.")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--amount", type=float, default=0.9,
                   help="fraction of weights (or, with --structured, of each layer's "
                        "filters) to remove (default %(default)s)")
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs "
                   "(default %(default)s)")
    p.add_argument("--structured", action="store_true",
                   help="remove whole filters and the channels that depend on them")
    p.add_argument("--scope", choices=("global", "layer"), default="global",
                   help="magnitude pruning: one threshold for the network or one per layer")
    p.add_argument("--lr", type=float, default=None,
                   help="fine-tuning learning rate (default: the run's)")
    p.add_argument("--out", default=None, help="new run directory (default <run>-pruned)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--limit-train", type=int, default=None, help=argparse_suppress())
    p.add_argument("--limit-test", type=int, default=None, help=argparse_suppress())
    p.set_defaults(func=cmd_prune)


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


def cmd_prune(args):
    res = prune_run(args.run, amount=args.amount, epochs=args.epochs,
                    structured=args.structured, scope=args.scope, lr=args.lr, out=args.out,
                    data_dir=args.data_dir, threads=args.threads,
                    limit_train=args.limit_train, limit_test=args.limit_test)
    print(format_prune_report(res))
    return 0
