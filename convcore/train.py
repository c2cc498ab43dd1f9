"""Training and evaluation loops, checkpoints, metrics and plots.

``fit(config)`` is what ``convcore train`` runs; ``evaluate_checkpoint(path)``
is ``convcore evaluate``. A run is fully determined by its configuration, its
seed and its thread count: batch order, augmentation and initialisation come
from seeded generators, and a checkpoint holds every piece of state (weights,
optimizer buffers, schedule, epoch, RNG state), so stopping after epoch k and
resuming ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from typing import Optional

import numpy as np

from convcore import data as _data
from convcore import losses as _losses
from convcore import optim as _optim
# The pieces below live in their own modules (configuration, model lookup,
# checkpoint files) and are re-exported here, where users import them from.
from convcore._checkpoint import (CHECKPOINT, FORMAT_VERSION, _checkpoint_path,  # noqa: F401
                                  _host, _set_rng_state, module_rng_states, read_checkpoint,
                                  save_checkpoint, set_module_rng_states)
from convcore._modelspec import (_check_stored_model, _registry_model, _shown,  # noqa: F401
                                 build_model, check_input_size, custom_model_message,
                                 model_names)
from convcore._trainconfig import (ACTIVATIONS, LOSSES, OPTIMIZERS, SCHEDULES,  # noqa: F401
                                   TrainConfig, check_config, field_kinds)

__all__ = ["TrainConfig", "fit", "evaluate_checkpoint", "format_report", "Terminated",
           "read_checkpoint", "build_model", "model_names"]

# ------------------------------------------------------------------ building

def build_loss(cfg: TrainConfig, counts: np.ndarray):
    if cfg.loss in ("cb-ce", "cb-focal"):
        w = _losses.class_balanced_weights(counts, cfg.beta)
    else:
        w = None
    if cfg.loss in ("ce", "cb-ce"):
        return _losses.CrossEntropyLoss(weight=w, label_smoothing=cfg.label_smoothing)
    return _losses.FocalLoss(gamma=cfg.gamma, alpha=w)


def build_optimizer(cfg: TrainConfig, model):
    params = list(model.parameters())
    lr = cfg.resolved_lr()
    if cfg.optimizer == "sgd":
        opt = _optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                         weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":
        opt = _optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    else:
        opt = _optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    if cfg.schedule == "step":
        sched = _optim.StepLR(opt, cfg.step_size, 0.1)
    elif cfg.schedule == "cosine":
        sched = _optim.CosineAnnealingLR(opt, cfg.epochs)
    else:
        sched = None
    return opt, sched


def load_data(cfg: TrainConfig):
    train, test = _data.load_dataset(cfg.dataset, cfg.data_dir)
    if cfg.limit_train:
        train = train.subset(np.arange(min(cfg.limit_train, len(train))))
    if cfg.limit_test:
        test = test.subset(np.arange(min(cfg.limit_test, len(test))))
    if cfg.imbalance_ratio > 1:
        train = train.subset(_data.long_tailed_indices(train.labels, cfg.imbalance_ratio,
                                                       train.num_classes, cfg.seed))
    return train, test


# ------------------------------------------------------------------ device

def skip_first_input_grad(model) -> None:
    """In training the data needs no gradient: tell the first layer met in a
    chain of ``Sequential`` containers, when it is a ``Conv2d``, not to compute
    one (LeNet's first layer then skips its dX, about a tenth of its
    convolution time)."""
    from convcore.nn import Conv2d, Sequential
    m = model
    while isinstance(m, Sequential) and len(m._modules):
        m = next(iter(m._modules.values()))
    if isinstance(m, Conv2d):
        m.needs_input_grad = False


def _to_device(model, device: str):
    if device == "cpu":
        return model
    try:
        import cupy  # noqa: F401
    except ImportError:
        raise RuntimeError(f"--device {device} needs CuPy and an NVIDIA GPU: "
                           f"pip install \"convcore[cuda]\"") from None
    if not hasattr(model, "to"):
        raise RuntimeError(f"this model has no .to(); it cannot move to {device}")
    return model.to(device) or model


def _xp_of(model):
    for p in model.parameters():
        mod = type(p.data).__module__
        if mod.startswith("cupy"):
            import cupy
            return cupy
        break
    return np



def _split(arrays, prefix):
    n = len(prefix)
    return {k[n:]: v for k, v in arrays.items() if k.startswith(prefix)}


# ------------------------------------------------------------------ evaluation

def _forward_batches(model, iterator, xp, num_classes, loss_fn=None):
    model.eval()
    conf = np.zeros((num_classes, num_classes), np.int64)
    total_loss, n = 0.0, 0
    for x, y in iterator.epoch(0):
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


# ------------------------------------------------------------------ progress

class _Progress:
    """tqdm on a terminal, nothing per batch otherwise."""

    def __init__(self, total, desc, enabled):
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=desc, unit="img", leave=False,
                                dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def update(self, n, loss):
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------ the loop

# Options that describe where and how a run executes rather than what it
# computes: when resuming through the Python API (no explicit overrides) they
# come from the caller's configuration, as ``cfg.epochs`` and ``cfg.out`` do.
_ENVIRONMENT = ("blas_threads", "distributed", "sync_bn", "dist_timeout")


class Terminated(KeyboardInterrupt):
    """SIGTERM during training: handled like Ctrl-C (the state is saved)."""


def _sigterm_handler(signum, frame):
    raise Terminated()


def _resume_overrides(cfg: TrainConfig) -> dict:
    """What ``fit(cfg, resume=...)`` takes from `cfg` when no overrides are given."""
    o = {"epochs": cfg.epochs, "out": cfg.out}
    for k in _ENVIRONMENT:
        o[k] = getattr(cfg, k)
    for k in ("threads", "data_dir"):
        if getattr(cfg, k) is not None:
            o[k] = getattr(cfg, k)
    if ":" in cfg.model:                  # the caller names its own model code
        o["model"] = cfg.model
    return o


def fit(cfg: TrainConfig, resume: Optional[str] = None, stop_after: Optional[int] = None,
        log=None, progress: Optional[bool] = None, plots: bool = True,
        overrides: Optional[dict] = None) -> dict:
    """Train as ``convcore train`` does; return the metrics dict.

    Parameters
    ----------
    cfg : TrainConfig
    resume : str, optional
        Checkpoint file (or run directory) to continue from.  The run's own
        configuration comes from the checkpoint; `overrides` (a dict of
        :class:`TrainConfig` fields, e.g. ``{"epochs": 20}``) replaces parts
        of it, and the outputs go to the checkpoint's directory unless
        ``overrides`` names another ``out``.  Without `overrides`,
        ``cfg.epochs``, ``cfg.out``, the thread and distributed settings, and
        a ``module:function`` ``cfg.model`` are taken from `cfg`.  A model
        name stored in the checkpoint is looked up in ``convcore.models``
        only; a checkpoint never makes convcore import code.
    stop_after : int, optional
        Stop after this epoch (as if interrupted there), for testing resume.

    Ctrl-C (KeyboardInterrupt) or SIGTERM (when called from the main thread)
    saves the interrupted state to ``interrupted.npz`` in the output
    directory, then raises KeyboardInterrupt or :class:`Terminated` (a
    subclass of it) to the caller.
    """
    dist = None
    if cfg.distributed:
        from convcore import distributed as dist
        dist.init(cfg.dist_timeout, require_launcher=True)
        if not dist.is_main_process():
            progress = False
            log = _silent
    if log is None:
        def log(msg):
            print(msg, flush=True)
    start_epoch = 0
    history = []
    arrays = None
    allow_import = True
    resumed = None
    if resume:
        if dist is None:
            ckpt = _checkpoint_path(resume)
            meta, arrays = read_checkpoint(ckpt)
        else:
            # Rank 0 reads the file (the other hosts need not see it) and
            # sends its content to every rank.
            ckpt = _checkpoint_path(resume) if dist.is_main_process() else None
            meta, arrays = read_checkpoint(ckpt) if dist.is_main_process() else (None, None)
            ckpt = dist.broadcast_object(ckpt)
            meta = dist.broadcast_object(meta)
            arrays = dist.broadcast_arrays(arrays)
        if overrides is None:
            overrides = _resume_overrides(cfg)
        overrides = dict(overrides)
        unknown = [k for k in overrides if k not in field_kinds()]
        if unknown:
            raise ValueError(f"unknown configuration overrides {unknown}")
        saved = dict(meta["config"])
        merged = dict(saved, **overrides)
        if "out" not in overrides:        # continue the run in its own directory
            merged["out"] = os.path.dirname(os.path.abspath(ckpt))
        cfg = TrainConfig(**merged)
        allow_import = "model" in overrides
        start_epoch = int(meta["epoch"])
        history = list(meta.get("history", []))
        changed = [f"{k}={overrides[k]!r} (was {saved.get(k)!r})" for k in sorted(overrides)
                   if k not in _ENVIRONMENT and k != "out" and overrides[k] != saved.get(k)]
        resumed = (f"resuming {ckpt} after epoch {start_epoch} of {cfg.epochs}, in "
                   f"{cfg.out}; " + (f"overridden: {', '.join(changed)}" if changed else
                                     "no setting overridden"))
    if resume and not allow_import:
        _check_stored_model(cfg.model, ckpt)
    check_config(cfg)
    if ":" not in cfg.model:
        _registry_model(cfg.model)        # a typo is reported before the data is read
    if os.path.exists(cfg.out) and not os.path.isdir(cfg.out):
        raise ValueError(f"--out {cfg.out} is an existing file, not a directory")
    from convcore import _config
    if cfg.threads:
        _config.set_num_threads(cfg.threads)
    elif dist is not None and not os.environ.get("CONVCORE_NUM_THREADS"):
        _config.set_num_threads(dist.threads_per_rank())   # share the host's cores
    threads = _config.get_num_threads()
    if resumed:
        log(resumed)
    limiter = None
    if cfg.blas_threads is not None:
        # convcore's own layers never call NumPy's BLAS (every product runs in
        # the core's thread team); this only bounds it for code of the user's
        # that runs inside the loop
        try:
            from threadpoolctl import threadpool_limits
            limiter = threadpool_limits(limits=cfg.blas_threads, user_api="blas")
        except ImportError:
            limiter = None
    old_term = None
    if threading.current_thread() is threading.main_thread():
        try:
            old_term = signal.signal(signal.SIGTERM, _sigterm_handler)
        except (ValueError, OSError, AttributeError):   # not available here
            old_term = None
    try:
        return _fit(cfg, start_epoch, history, arrays, stop_after, log, progress, plots,
                    threads, dict(meta, _path=ckpt) if resume else {}, dist, allow_import)
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if limiter is not None:
            limiter.restore_original_limits()


def _silent(msg):
    pass


def _loss_normaliser(loss_fn, y):
    """What the loss's 'mean' divides by for these targets: the number of
    samples, or the sum of their class weights for a weighted cross-entropy."""
    w = getattr(loss_fn, "weight", None)
    if isinstance(loss_fn, _losses.CrossEntropyLoss) and w is not None:
        return float(w[y].sum())
    return len(y)


def _fit(cfg, start_epoch, history, arrays, stop_after, log, progress, plots, threads,
         resume_meta, dist=None, allow_import=True):
    main = dist is None or dist.is_main_process()
    shard = None if dist is None else (dist.rank(), dist.world_size())
    train_set, test_set = load_data(cfg)
    C = train_set.num_classes
    mean, std = _data.channel_stats(train_set.images)
    augment = cfg.augment if cfg.augment is not None else cfg.dataset == "cifar10"
    augment, lighting = _data.training_augmentation(augment, train_set.images, cfg.dataset)
    train_it = _data.BatchIterator(train_set.images, train_set.labels, cfg.batch_size,
                                   shuffle=True, seed=cfg.seed, mean=mean, std=std,
                                   augment=augment, lighting=lighting)
    eval_set = test_set
    if dist is not None:   # evaluation is sharded: each rank a contiguous block
        a, b = dist.shard_bounds(len(test_set))
        eval_set = test_set.subset(np.arange(a, b))
    test_it = _data.BatchIterator(eval_set.images, eval_set.labels, 500, shuffle=False,
                                  mean=mean, std=std)
    counts = np.bincount(train_set.labels, minlength=C)
    model = build_model(cfg.model, train_set.images.shape[1], C,
                        train_set.images.shape[2], cfg.seed, allow_import=allow_import,
                        activation=cfg.activation)
    check_input_size(model, cfg.model, train_set.images.shape[1:], cfg.dataset)
    skip_first_input_grad(model)
    if arrays is not None:
        try:
            model.load_state_dict(_split(arrays, "model/"))
        except ValueError as e:
            raise ValueError(f"{resume_meta.get('_path', 'checkpoint')}: {e}") from None
    if dist is not None:
        dist.broadcast_parameters(model)       # every rank starts from rank 0's weights
        if cfg.sync_bn:
            n_bn = dist.convert_sync_batchnorm(model)
            log(f"--sync-bn: {n_bn} BatchNorm layer(s) synchronised over the ranks")
    model = _to_device(model, cfg.device)
    xp = _xp_of(model)
    loss_fn = build_loss(cfg, counts)
    eval_loss = _losses.CrossEntropyLoss()
    opt, sched = build_optimizer(cfg, model)
    if arrays is not None:
        try:
            opt.load_state_dict(_split(arrays, "optim/"))
            if sched is not None:
                sched.load_state_dict(_split(arrays, "sched/"))
            _set_rng_state(arrays)
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as e:
            raise ValueError(f"{resume_meta.get('_path', 'checkpoint')}: its optimizer, "
                             f"schedule or random state cannot be restored: {e}") from None
        try:
            set_module_rng_states(model, resume_meta.get("module_rngs", []))
        except ValueError as e:
            raise ValueError(f"{resume_meta.get('_path', 'checkpoint')}: {e}") from None
    if main:
        os.makedirs(cfg.out, exist_ok=True)
        from convcore.nn._io import remove_stale_temp_files
        remove_stale_temp_files(cfg.out)
    ckpt_path = os.path.join(cfg.out, CHECKPOINT)
    if progress is None:
        progress = sys.stderr.isatty()

    def meta(epoch, extra=None):
        m = {"format": FORMAT_VERSION, "config": asdict(cfg), "epoch": epoch,
             "history": history, "classes": list(train_set.classes),
             "mean": mean.tolist(), "std": std.tolist(), "threads": threads,
             "train_counts": counts.tolist()}
        if extra:
            m.update(extra)
        return m

    ranks = "" if dist is None else f"ranks={dist.world_size()}, "
    per = "" if dist is None else " per rank"
    log(f"convcore train: {cfg.model} on {cfg.dataset} ({len(train_set)} train / "
        f"{len(test_set)} test images), {cfg.optimizer} lr={cfg.resolved_lr()}, "
        f"loss={cfg.loss}, batch={cfg.batch_size}, {ranks}threads{per}={threads}, "
        f"seed={cfg.seed}, device={cfg.device}")
    last = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, last):
            t0 = time.perf_counter()
            model.train()
            bar = _Progress(len(train_set), f"epoch {epoch + 1}/{cfg.epochs}", progress)
            tot_loss, correct, seen = 0.0, 0, 0
            try:
                for x, y in train_it.epoch(epoch, shard):
                    opt.zero_grad()
                    if len(y):
                        xb = xp.asarray(x) if xp is not np else x
                        logits_dev = model(xb)
                        logits = _host(logits_dev)
                        loss = loss_fn(logits, y)
                        if not math.isfinite(loss):
                            raise FloatingPointError(f"loss became {loss} in epoch "
                                                     f"{epoch + 1}; lower --lr")
                        g = loss_fn.backward()
                        model.backward(xp.asarray(g) if xp is not np else g)
                        tot_loss += loss * len(y)
                        correct += int((logits.argmax(1) == y).sum())
                    else:
                        loss = 0.0
                    if dist is not None:   # mean gradient of the global batch
                        dist.allreduce_gradients(model,
                                                 local_batch=_loss_normaliser(loss_fn, y))
                    opt.step()
                    seen += len(y)
                    bar.update(len(y) * (1 if shard is None else shard[1]), loss)
            finally:
                bar.close()
            train_time = time.perf_counter() - t0
            if dist is not None:
                tot = dist.reduce_metrics({"loss": tot_loss, "correct": correct, "seen": seen})
                tot_loss, correct, seen = tot["loss"], int(tot["correct"]), int(tot["seen"])
                dist.average_buffers(model)   # per-rank BatchNorm statistics -> one model
            if sched is not None:
                sched.step()
            conf, test_loss = _forward_batches(model, test_it, xp, C, eval_loss)
            if dist is not None:
                n_eval = int(conf.sum())
                ev = dist.reduce_metrics({"loss": test_loss * n_eval, "n": n_eval})
                conf = dist.allreduce_array(conf)
                test_loss = ev["loss"] / max(ev["n"], 1)
            test_acc, per_class = accuracy_from_confusion(conf)
            rec = {"epoch": epoch + 1, "train_loss": tot_loss / seen,
                   "train_acc": correct / seen, "test_loss": test_loss, "test_acc": test_acc,
                   "mean_class_acc": float(per_class.mean()),
                   "per_class_acc": per_class.tolist(), "lr": opt.lr,
                   "images_per_s": seen / train_time, "train_seconds": train_time,
                   "seconds": time.perf_counter() - t0}
            history.append(rec)
            if main:   # rank 0 alone writes files
                save_checkpoint(ckpt_path, model, opt, sched,
                                meta(epoch + 1, {"confusion": conf.tolist()}))
                _write_metrics(cfg.out, meta(epoch + 1, {"confusion": conf.tolist()}))
            log(f"epoch {epoch + 1:3d}/{cfg.epochs}  loss {rec['train_loss']:.4f}  "
                f"train acc {rec['train_acc'] * 100:6.2f}%  test acc {test_acc * 100:6.2f}%  "
                f"{rec['images_per_s']:7.0f} img/s  {rec['seconds']:6.1f} s")
    except KeyboardInterrupt as e:
        if not main:
            raise
        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        path = os.path.join(cfg.out, "interrupted.npz")
        save_checkpoint(path, model, opt, sched,
                        meta(epoch, {"interrupted": True}))
        if history and os.path.isfile(ckpt_path):
            log(f"\n{what} in epoch {epoch + 1}: the last complete epoch "
                f"({history[-1]['epoch']}) is in {ckpt_path}; continue with "
                f"convcore train --resume {cfg.out} (the interrupted weights are in {path})")
        else:
            log(f"\n{what} in epoch {epoch + 1}, before any epoch was complete: there is "
                f"nothing to resume, start the run again (the interrupted weights are in "
                f"{path})")
        if history and plots:
            _plots_safe(cfg.out, model, history, conf_from(history, cfg.out), train_set,
                        test_it, log)
        raise
    result = meta(len(history))
    if history:
        result["confusion"] = conf_from(history, cfg.out)
    if plots and history and main:
        _plots_safe(cfg.out, model, history, result.get("confusion"), train_set, test_it, log)
    result["model_obj"] = model
    return result


def conf_from(history, out):
    try:
        with open(os.path.join(out, "metrics.json")) as f:
            return json.load(f).get("confusion")
    except (OSError, ValueError):
        return None


def _write_metrics(out, m):
    from convcore.nn._io import write_text_atomic
    write_text_atomic(os.path.join(out, "metrics.json"), json.dumps(m, indent=1))


def _plots_safe(out, model, history, conf, train_set, test_it, log):
    try:
        from convcore import _plots
    except ImportError:
        log("matplotlib is not installed: no plots (pip install \"convcore[train]\")")
        return
    x0, _ = next(test_it.epoch(0))
    _plots.write_all(out, model, history, conf, list(train_set.classes), x0[0])


# ------------------------------------------------------------------ evaluate

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
