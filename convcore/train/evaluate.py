"""Evaluation: the confusion matrix and loss of a model on a batch iterator,
accuracies from it, ``convcore evaluate`` on a checkpoint, and its report."""
from __future__ import annotations

from typing import Optional

import numpy as np

from convcore import data as _data
from convcore._grad import no_grad
from convcore import losses as _losses
from convcore.train.build import _check_stored_model, _to_device, _xp_of, build_model
from convcore.train.checkpoint import _checkpoint_path, _host, _split, read_checkpoint
from convcore.train.config import TrainConfig, check_config


def _forward_batches(model, iterator, xp, num_classes, loss_fn=None):
    model.eval()
    conf = np.zeros((num_classes, num_classes), np.int64)
    total_loss, n = 0.0, 0
    for x, y in iterator.epoch(0):
        with no_grad():             # output only: no masks, indices or saved inputs
            logits = _host(model(xp.asarray(x) if xp is not np else x))
        if loss_fn is not None:
            total_loss += loss_fn(logits, y) * len(y)
        pred = logits.argmax(axis=1)
        np.add.at(conf, (y, pred), 1)
        n += len(y)
    return conf, (total_loss / max(n, 1))


def accuracy_from_confusion(conf):
    total = conf.sum()
    acc = float(np.trace(conf) / total) if total else 0.0
    per = np.diag(conf) / np.maximum(conf.sum(axis=1), 1)
    return acc, per


def evaluate_checkpoint(path: str, data_dir: Optional[str] = None, threads=None,
                        device: Optional[str] = None, limit_test: Optional[int] = None,
                        model: Optional[str] = None):
    """Accuracy, per-class accuracy and confusion matrix of a checkpoint on its
    dataset's test set. Returns a dict.

    The checkpoint's model is looked up in ``convcore.models``; a run of a
    custom model needs `model` (``module:function``) from the caller: a
    checkpoint never makes convcore import code."""
    meta, arrays = read_checkpoint(path)
    cfg = TrainConfig(**meta["config"])
    allow_import = model is not None
    if model is not None:
        cfg.model = model
    else:
        _check_stored_model(cfg.model, _checkpoint_path(path))
    if data_dir is not None:
        cfg.data_dir = data_dir
    if device is not None:
        cfg.device = device
    if limit_test is not None:
        cfg.limit_test = limit_test
    check_config(cfg)
    from convcore import _config
    if threads:
        _config.set_num_threads(threads)
    _, test_set = _data.load_dataset(cfg.dataset, cfg.data_dir)
    if cfg.limit_test:
        test_set = test_set.subset(np.arange(min(cfg.limit_test, len(test_set))))
    C = len(meta["classes"])
    net = build_model(cfg.model, test_set.images.shape[1], C, test_set.images.shape[2],
                      cfg.seed, allow_import=allow_import, activation=cfg.activation)
    state = _split(arrays, "model/")
    try:
        if meta.get("pruned_channels"):   # a run of `convcore prune --structured`
            from convcore.prune import resize_to_state
            resize_to_state(net, state)
        net.load_state_dict(state)
    except ValueError as e:
        raise ValueError(f"{_checkpoint_path(path)}: {e}") from None
    model = _to_device(net, cfg.device)
    it = _data.BatchIterator(test_set.images, test_set.labels, 500, shuffle=False,
                             mean=meta["mean"], std=meta["std"])
    conf, loss = _forward_batches(model, it, _xp_of(model), C, _losses.CrossEntropyLoss())
    acc, per = accuracy_from_confusion(conf)
    return {"accuracy": acc, "per_class_accuracy": per.tolist(),
            "mean_class_accuracy": float(per.mean()), "loss": loss,
            "confusion": conf.tolist(), "classes": meta["classes"], "epoch": meta["epoch"]}


def format_report(res: dict) -> str:
    lines = [f"test accuracy {res['accuracy'] * 100:.2f}%  (mean per-class "
             f"{res['mean_class_accuracy'] * 100:.2f}%, loss {res['loss']:.4f}, epoch "
             f"{res['epoch']})", "", "per-class accuracy:"]
    w = max(len(c) for c in res["classes"])
    for c, a in zip(res["classes"], res["per_class_accuracy"]):
        lines.append(f"  {c:<{w}}  {a * 100:6.2f}%")
    lines += ["", "confusion matrix (rows: true class, columns: predicted):"]
    conf = np.asarray(res["confusion"])
    cw = max(5, len(str(conf.max())) + 1)
    lines.append(" " * (w + 2) + "".join(f"{i:>{cw}d}" for i in range(conf.shape[0])))
    for i, (c, row) in enumerate(zip(res["classes"], conf)):
        lines.append(f"  {c:<{w}}" + "".join(f"{v:>{cw}d}" for v in row))
    return "\n".join(lines)
