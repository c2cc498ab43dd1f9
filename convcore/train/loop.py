"""The training loop: ``fit(config)`` is what ``convcore train`` runs.

A run is fully determined by its configuration, its seed and its thread
count: batch order, augmentation and initialisation come from seeded
generators, and a checkpoint holds every piece of state (weights, optimizer
buffers, schedule, epoch, RNG state), so stopping after epoch k and resuming
ends with the same weights as an uninterrupted run.

:func:`fit` settles the configuration (resuming merges the checkpoint's with
the overrides) and the process environment (threads, SIGTERM); :class:`_Run`
builds everything the loop works on; :func:`_fit` is the loop itself, an
epoch being :func:`_train_epoch` then :func:`_evaluate_epoch`.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from typing import Optional

import numpy as np

from convcore import losses as _losses
from convcore.train.build import (Data, _check_stored_model, _registry_model, _to_device,
                                  _xp_of, build_loss, build_model, build_optimizer,
                                  check_input_size, skip_first_input_grad)
from convcore.train.checkpoint import (CHECKPOINT, FORMAT_VERSION, _checkpoint_path, _host,
                                       read_checkpoint, restore_model,
                                       restore_training_state, save_checkpoint)
from convcore.train.config import TrainConfig, check_config, field_kinds
from convcore.train.evaluate import _forward_batches, accuracy_from_confusion
from convcore.train.report import (_plots_safe, _Progress, _write_metrics, conf_from,
                                   epoch_line, interrupted_lines, start_line)

# Options that describe where and how a run executes rather than what it
# computes: when resuming through the Python API (no explicit overrides) they
# come from the caller's configuration, as ``cfg.epochs`` and ``cfg.out`` do.
_ENVIRONMENT = ("blas_threads", "distributed", "sync_bn", "dist_timeout")


class Terminated(KeyboardInterrupt):
    """SIGTERM during training: handled like Ctrl-C (the state is saved)."""


def _sigterm_handler(signum, frame):
    raise Terminated()


def _silent(msg):
    pass


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


class _Resumed:
    """A checkpoint to continue from: its path, metadata and arrays, and the
    configuration it continues with (the checkpoint's, with `overrides`)."""

    def __init__(self, resume, cfg, overrides, dist):
        if dist is None:
            self.path = _checkpoint_path(resume)
            self.meta, self.arrays = read_checkpoint(self.path)
        else:
            # Rank 0 reads the file (the other hosts need not see it) and
            # sends its content to every rank.
            main = dist.is_main_process()
            path = _checkpoint_path(resume) if main else None
            meta, arrays = read_checkpoint(path) if main else (None, None)
            self.path = dist.broadcast_object(path)
            self.meta = dist.broadcast_object(meta)
            self.arrays = dist.broadcast_arrays(arrays)
        overrides = dict(_resume_overrides(cfg) if overrides is None else overrides)
        unknown = [k for k in overrides if k not in field_kinds()]
        if unknown:
            raise ValueError(f"unknown configuration overrides {unknown}")
        saved = dict(self.meta["config"])
        merged = dict(saved, **overrides)
        if "out" not in overrides:        # continue the run in its own directory
            merged["out"] = os.path.dirname(os.path.abspath(self.path))
        self.cfg = TrainConfig(**merged)
        self.allow_import = "model" in overrides
        self.epoch = int(self.meta["epoch"])
        self.history = list(self.meta.get("history", []))
        changed = [f"{k}={overrides[k]!r} (was {saved.get(k)!r})" for k in sorted(overrides)
                   if k not in _ENVIRONMENT and k != "out" and overrides[k] != saved.get(k)]
        self.message = (f"resuming {self.path} after epoch {self.epoch} of "
                        f"{self.cfg.epochs}, in {self.cfg.out}; " +
                        (f"overridden: {', '.join(changed)}" if changed else
                         "no setting overridden"))


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
    resumed = _Resumed(resume, cfg, overrides, dist) if resume else None
    if resumed is not None:
        cfg = resumed.cfg
        if not resumed.allow_import:
            _check_stored_model(cfg.model, resumed.path)
    check_config(cfg)
    if ":" not in cfg.model:
        _registry_model(cfg.model)        # a typo is reported before the data is read
    if os.path.exists(cfg.out) and not os.path.isdir(cfg.out):
        raise ValueError(f"--out {cfg.out} is an existing file, not a directory")
    threads = _set_threads(cfg, dist)
    if resumed is not None:
        log(resumed.message)
    limiter = _blas_limiter(cfg)
    old_term = None
    if threading.current_thread() is threading.main_thread():
        try:
            old_term = signal.signal(signal.SIGTERM, _sigterm_handler)
        except (ValueError, OSError, AttributeError):   # not available here
            old_term = None
    try:
        run = _Run(cfg, resumed, dist, threads, log, progress)
        return _fit(run, resumed.epoch if resumed else 0, stop_after, plots)
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if limiter is not None:
            limiter.restore_original_limits()


def _set_threads(cfg, dist) -> int:
    from convcore import _config
    if cfg.threads:
        _config.set_num_threads(cfg.threads)
    elif dist is not None and not os.environ.get("CONVCORE_NUM_THREADS"):
        _config.set_num_threads(dist.threads_per_rank())   # share the host's cores
    return _config.get_num_threads()


def _blas_limiter(cfg):
    """convcore's own layers never call NumPy's BLAS (every product runs in the
    core's thread team); ``blas_threads`` only bounds it for code of the
    user's that runs inside the loop."""
    if cfg.blas_threads is None:
        return None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=cfg.blas_threads, user_api="blas")


def _loss_normaliser(loss_fn, y):
    """What the loss's 'mean' divides by for these targets: the number of
    samples, or the sum of their class weights for a weighted cross-entropy."""
    w = getattr(loss_fn, "weight", None)
    if isinstance(loss_fn, _losses.CrossEntropyLoss) and w is not None:
        return float(w[y].sum())
    return len(y)


class _Run:
    """Everything the loop works on, built in a fixed order (the data, the
    model from the seed, the checkpoint's weights, the optimizer, the
    checkpoint's optimizer and random states): the same order on every run,
    so a resumed run draws what an uninterrupted one would."""

    def __init__(self, cfg, resumed, dist, threads, log, progress):
        self.cfg, self.dist, self.threads, self.log = cfg, dist, threads, log
        self.main = dist is None or dist.is_main_process()
        self.shard = None if dist is None else (dist.rank(), dist.world_size())
        self.history = resumed.history if resumed else []
        self.data = data = Data(cfg, dist)
        images = data.train_set.images
        model = build_model(cfg.model, images.shape[1], data.num_classes, images.shape[2],
                            cfg.seed, allow_import=resumed.allow_import if resumed else True,
                            activation=cfg.activation)
        check_input_size(model, cfg.model, images.shape[1:], cfg.dataset)
        skip_first_input_grad(model)
        if resumed is not None:
            restore_model(model, resumed.arrays, resumed.path)
        if dist is not None:
            dist.broadcast_parameters(model)       # every rank starts from rank 0's weights
            if cfg.sync_bn:
                n_bn = dist.convert_sync_batchnorm(model)
                log(f"--sync-bn: {n_bn} BatchNorm layer(s) synchronised over the ranks")
        self.model = _to_device(model, cfg.device)
        self.xp = _xp_of(self.model)
        self.loss_fn = build_loss(cfg, data.counts)
        self.eval_loss = _losses.CrossEntropyLoss()
        self.opt, self.sched = build_optimizer(cfg, self.model)
        if resumed is not None:
            restore_training_state(resumed.arrays, resumed.meta.get("module_rngs", []),
                                   resumed.path, self.model, self.opt, self.sched)
        if self.main:
            os.makedirs(cfg.out, exist_ok=True)
            from convcore.nn._io import remove_stale_temp_files
            remove_stale_temp_files(cfg.out)
        self.ckpt_path = os.path.join(cfg.out, CHECKPOINT)
        self.progress = sys.stderr.isatty() if progress is None else progress

    def device(self, a):
        """A host array as the model's array type."""
        return self.xp.asarray(a) if self.xp is not np else a

    def meta(self, epoch, extra=None):
        """The metadata of the run after `epoch` epochs (checkpoints, metrics)."""
        d = self.data
        m = {"format": FORMAT_VERSION, "config": asdict(self.cfg), "epoch": epoch,
             "history": self.history, "classes": list(d.train_set.classes),
             "mean": d.mean.tolist(), "std": d.std.tolist(), "threads": self.threads,
             "train_counts": d.counts.tolist()}
        if extra:
            m.update(extra)
        return m

    def save(self, path, epoch, extra):
        save_checkpoint(path, self.model, self.opt, self.sched, self.meta(epoch, extra))

    def plots(self, conf):
        _plots_safe(self.cfg.out, self.model, self.history, conf, self.data.train_set,
                    self.data.test_it, self.log)


def _fit(run, start_epoch, stop_after, plots):
    cfg = run.cfg
    run.log(start_line(cfg, run.data, run.threads,
                       None if run.dist is None else run.dist.world_size()))
    last = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, last):
            t0 = time.perf_counter()
            tot_loss, correct, seen = _train_epoch(run, epoch)
            train_time = time.perf_counter() - t0
            if run.dist is not None:
                tot = run.dist.reduce_metrics({"loss": tot_loss, "correct": correct,
                                               "seen": seen})
                tot_loss, correct, seen = tot["loss"], int(tot["correct"]), int(tot["seen"])
                run.dist.average_buffers(run.model)   # per-rank BatchNorm statistics -> one
            if run.sched is not None:
                run.sched.step()
            conf, test_loss = _evaluate_epoch(run)
            test_acc, per_class = accuracy_from_confusion(conf)
            rec = {"epoch": epoch + 1, "train_loss": tot_loss / seen,
                   "train_acc": correct / seen, "test_loss": test_loss, "test_acc": test_acc,
                   "mean_class_acc": float(per_class.mean()),
                   "per_class_acc": per_class.tolist(), "lr": run.opt.lr,
                   "images_per_s": seen / train_time, "train_seconds": train_time,
                   "seconds": time.perf_counter() - t0}
            run.history.append(rec)
            if run.main:   # rank 0 alone writes files
                run.save(run.ckpt_path, epoch + 1, {"confusion": conf.tolist()})
                _write_metrics(cfg.out, run.meta(epoch + 1, {"confusion": conf.tolist()}))
            run.log(epoch_line(rec, cfg.epochs))
    except KeyboardInterrupt as e:
        if run.main:
            _save_interrupted(run, epoch, e, plots)
        raise
    result = run.meta(len(run.history))
    if run.history:
        result["confusion"] = conf_from(run.history, cfg.out)
    if plots and run.history and run.main:
        run.plots(result.get("confusion"))
    result["model_obj"] = run.model
    return result


def _train_epoch(run, epoch):
    """One pass over this rank's share of the training data, a step per
    batch; returns the summed loss, the number right and the number seen."""
    run.model.train()
    bar = _Progress(len(run.data.train_set), f"epoch {epoch + 1}/{run.cfg.epochs}",
                    run.progress)
    tot_loss, correct, seen = 0.0, 0, 0
    try:
        for x, y in run.data.train_it.epoch(epoch, run.shard):
            run.opt.zero_grad()
            loss = 0.0
            if len(y):
                logits = _host(run.model(run.device(x)))
                loss = run.loss_fn(logits, y)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss} in epoch {epoch + 1}; "
                                             f"lower --lr")
                run.model.backward(run.device(run.loss_fn.backward()))
                tot_loss += loss * len(y)
                correct += int((logits.argmax(1) == y).sum())
            if run.dist is not None:   # mean gradient of the global batch
                run.dist.allreduce_gradients(run.model,
                                             local_batch=_loss_normaliser(run.loss_fn, y))
            run.opt.step()
            seen += len(y)
            bar.update(len(y) * (1 if run.shard is None else run.shard[1]), loss)
    finally:
        bar.close()
    return tot_loss, correct, seen


def _evaluate_epoch(run):
    """Confusion matrix and mean loss on the test set (over all ranks)."""
    conf, test_loss = _forward_batches(run.model, run.data.test_it, run.xp,
                                       run.data.num_classes, run.eval_loss)
    if run.dist is not None:
        n_eval = int(conf.sum())
        ev = run.dist.reduce_metrics({"loss": test_loss * n_eval, "n": n_eval})
        conf = run.dist.allreduce_array(conf)
        test_loss = ev["loss"] / max(ev["n"], 1)
    return conf, test_loss


def _save_interrupted(run, epoch, e, plots):
    """Ctrl-C or SIGTERM in `epoch`: save the state to ``interrupted.npz``,
    say what is where, and draw the plots of the epochs done."""
    what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
    path = os.path.join(run.cfg.out, "interrupted.npz")
    run.save(path, epoch, {"interrupted": True})
    run.log(interrupted_lines(what, epoch, run.history, run.ckpt_path, run.cfg.out, path))
    if run.history and plots:
        run.plots(conf_from(run.history, run.cfg.out))
