"""Fine-tuning with masks, a whole pruning run, and ``convcore prune``."""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict

import numpy as np

from convcore.nn import Module
from convcore.prune.channels import prune_channels
from convcore.prune.magnitude import (_check_amount, _sparse_macs, count_nonzero,
                                      magnitude_prune, sparsity)

def fine_tune(model, train_it, epochs, lr=0.01, masks=None, momentum=0.9, weight_decay=0.0,
              test_it=None, num_classes=None, log=print):
    """``epochs`` of SGD (momentum, cosine schedule) with cross-entropy,
    keeping ``masks`` (gradients masked before each step, weights after).
    Returns the history: one dict per epoch (train loss and accuracy; test
    accuracy when ``test_it`` is given)."""
    from convcore import losses, optim
    from convcore.train.evaluate import _forward_batches, accuracy_from_confusion
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
    from convcore.train.evaluate import _forward_batches, accuracy_from_confusion
    nz, tot = count_nonzero(model)
    sparse_macs, dense_macs = _sparse_macs(model, input_shape)
    t0 = time.perf_counter()
    conf, _ = _forward_batches(model, test_it, np, num_classes)
    secs = time.perf_counter() - t0
    return {"params": tot, "nonzero_params": nz, "macs": dense_macs,
            "nonzero_macs": sparse_macs, "test_acc": accuracy_from_confusion(conf)[0],
            "test_images_per_s": int(conf.sum()) / secs if secs > 0 else None}


def prune_run(run, amount=0.9, epochs=2, structured=False, scope="global", lr=None,
              out=None, data_dir=None, threads=None, limit_train=None, limit_test=None,
              log=print):
    """Prune a trained run and fine-tune it; write the result as a new run.

    Unstructured (default): :func:`magnitude_prune` with ``scope``;
    ``structured``: :func:`prune_channels`.  The new run (``out``, default
    ``<run>-pruned``) holds ``checkpoint.npz`` (loadable by ``convcore
    evaluate``) and ``prune.json``: parameters, nonzero parameters, MACs,
    MACs on nonzero weights, test accuracy and test-set forward throughput
    (images per second, timed once, on whatever else the machine is doing)
    before and after, and the fine-tuning history.  Returns that dict.
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
             f"{a['test_acc'] * 100:.2f}%"),
            ("test images / s (forward)", *(f"{m['test_images_per_s']:,.0f}"
                                            if m.get("test_images_per_s") else "-"
                                            for m in (b, p, a)))]
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
