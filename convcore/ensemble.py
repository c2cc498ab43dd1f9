"""Ensembles of trained runs ("Ensembling" among AlexNet's key aspects in the
notes): the members' class probabilities are averaged and the class of
highest mean probability is the ensemble's prediction.

``convcore evaluate RUN1 RUN2 ...`` runs :func:`evaluate_ensemble`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["softmax", "ensemble_predict", "load_run", "evaluate_ensemble",
           "format_ensemble_report"]


def softmax(logits):
    """Row-wise softmax of ``(N, K)`` logits, in float64."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def ensemble_predict(probabilities: Sequence[np.ndarray]):
    """Mean of the members' ``(N, K)`` probabilities and its argmax.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([[0.6, 0.4], [0.1, 0.9]]); b = np.array([[0.3, 0.7], [0.2, 0.8]])
    >>> mean, pred = ensemble_predict([a, b])
    >>> mean.round(3).tolist(), pred.tolist()
    ([[0.45, 0.55], [0.15, 0.85]], [1, 1])
    """
    probs = [np.asarray(p, np.float64) for p in probabilities]
    if not probs:
        raise ValueError("an ensemble needs at least one member, got none")
    shapes = {p.shape for p in probs}
    if len(shapes) != 1 or probs[0].ndim != 2:
        raise ValueError(f"members' probabilities must all be (N, K) of one shape, got "
                         f"{sorted(shapes)}")
    mean = sum(probs) / len(probs)
    return mean, mean.argmax(axis=1)


def load_run(path: str, in_channels: int, image_size: int, device: Optional[str] = None,
             checkpoint=None, model: Optional[str] = None):
    """``(model in eval mode, meta)`` of a run directory or checkpoint file for
    images of ``in_channels`` x ``image_size`` x ``image_size``, including
    runs whose convolutions were made narrower by
    :func:`convcore.prune.prune_channels` (their layers are resized to the
    checkpoint's shapes before loading).  ``checkpoint``: the ``(meta,
    arrays)`` of :func:`convcore.train.read_checkpoint`, if already read.

    The run's model is looked up in ``convcore.models``; a run of a custom
    model is rebuilt only when the caller names that model (``model``,
    ``module:function``): a checkpoint never makes convcore import code."""
    from convcore.train.build import _to_device, build_model
    from convcore.train.checkpoint import _split, read_checkpoint
    from convcore.train.config import TrainConfig
    meta, arrays = checkpoint if checkpoint is not None else read_checkpoint(path)
    cfg = TrainConfig(**meta["config"])
    # a name read from a file is imported only when the caller named it
    net = build_model(cfg.model, in_channels, len(meta["classes"]), image_size,
                      cfg.seed, allow_import=model is not None and model == cfg.model,
                      activation=cfg.activation)
    state = _split(arrays, "model/")
    if meta.get("pruned_channels"):
        from convcore.prune import resize_to_state
        resize_to_state(net, state)
    net.load_state_dict(state)
    net = _to_device(net, device or cfg.device)
    net.eval()
    return net, meta


def _probabilities(model, meta, test_set, batch=500):
    from convcore import data as _data
    from convcore.train.build import _xp_of
    from convcore.train.checkpoint import _host
    xp = _xp_of(model)
    it = _data.BatchIterator(test_set.images, test_set.labels, batch, shuffle=False,
                             mean=meta["mean"], std=meta["std"])
    out = []
    from convcore._grad import no_grad
    for x, _ in it.epoch(0):
        with no_grad():
            out.append(softmax(_host(model(xp.asarray(x) if xp is not np else x))))
    return np.concatenate(out) if out else np.zeros((0, len(meta["classes"])))


def evaluate_ensemble(paths: Sequence[str], data_dir: Optional[str] = None, threads=None,
                      device: Optional[str] = None, limit_test: Optional[int] = None,
                      model: Optional[str] = None):
    """Accuracy of each run of ``paths`` and of their ensemble (mean of the
    members' softmax probabilities) on the test set of their dataset.

    Every member must have been trained on the same dataset with the same
    classes; each is fed the test images normalised with its own training
    statistics.  Returns a dict with ``members`` (path, accuracy, loss per
    member), ``accuracy`` and ``loss`` (the ensemble's; loss is the mean
    negative log of the averaged probability of the true class),
    ``confusion`` and ``classes``.  ``model`` (``module:function``) rebuilds
    the members that were trained with that custom model.
    """
    from convcore import _config
    from convcore import data as _data
    from convcore.train import TrainConfig, accuracy_from_confusion
    paths = list(paths)
    if not paths:
        raise ValueError("evaluate needs at least one run, got none")
    if threads:
        _config.set_num_threads(threads)
    from convcore.train import read_checkpoint
    ckpts = [read_checkpoint(p) for p in paths]
    meta0 = ckpts[0][0]
    first = TrainConfig(**meta0["config"])
    for p, (meta, _) in zip(paths, ckpts):
        cfg = TrainConfig(**meta["config"])
        if cfg.dataset != first.dataset or meta["classes"] != meta0["classes"]:
            raise ValueError(f"ensemble members must share one dataset and its classes: "
                             f"{paths[0]} is {first.dataset} {meta0['classes']}, "
                             f"{p} is {cfg.dataset} {meta['classes']}")
    _, test_set = _data.load_dataset(first.dataset, data_dir or first.data_dir)
    if limit_test:
        test_set = test_set.subset(np.arange(min(limit_test, len(test_set))))
    _, in_ch, size, _ = test_set.images.shape
    loaded = [load_run(p, in_ch, size, device, ck, model) for p, ck in zip(paths, ckpts)]
    y = np.asarray(test_set.labels, np.int64)
    members, probs = [], []
    for p, (model, meta) in zip(paths, loaded):
        pr = _probabilities(model, meta, test_set)
        probs.append(pr)
        members.append({"path": p, "model": meta["config"]["model"],
                        "accuracy": float((pr.argmax(1) == y).mean()) if len(y) else 0.0,
                        "loss": _nll(pr, y)})
    mean, pred = ensemble_predict(probs)
    C = len(loaded[0][1]["classes"])
    conf = np.zeros((C, C), np.int64)
    np.add.at(conf, (y, pred), 1)
    acc, per = accuracy_from_confusion(conf)
    return {"members": members, "accuracy": acc, "loss": _nll(mean, y),
            "per_class_accuracy": per.tolist(), "confusion": conf.tolist(),
            "classes": loaded[0][1]["classes"], "n_test": int(len(y))}


def _nll(p, y):
    if not len(y):
        return 0.0
    return float(-np.log(np.maximum(p[np.arange(len(y)), y], 1e-300)).mean())


def format_ensemble_report(res: dict) -> str:
    """The table ``convcore evaluate RUN1 RUN2 ...`` prints."""
    rows = [(m["path"], m["model"], f"{m['accuracy'] * 100:.2f}%", f"{m['loss']:.4f}")
            for m in res["members"]]
    rows.append((f"ensemble of {len(res['members'])} (mean probability)", "",
                 f"{res['accuracy'] * 100:.2f}%", f"{res['loss']:.4f}"))
    head = ("run", "model", "accuracy", "loss")
    w = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    line = lambda r: "  ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i])  # noqa: E731
                               for i, c in enumerate(r)).rstrip()
    best = max(m["accuracy"] for m in res["members"])
    return "\n".join([line(head), "-" * len(line(head))] + [line(r) for r in rows] +
                     [f"\n{res['n_test']} test images; ensemble - best member: "
                      f"{(res['accuracy'] - best) * 100:+.2f} points"])
