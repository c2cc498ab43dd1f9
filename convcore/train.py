"""Training and evaluation loops, checkpoints, metrics and plots.

``fit(config)`` is what ``convcore train`` runs; ``evaluate_checkpoint(path)``
is ``convcore evaluate``. A run is fully determined by its configuration, its
seed and its thread count: batch order, augmentation and initialisation come
from seeded generators, and a checkpoint holds every piece of state (weights,
optimizer buffers, schedule, epoch, RNG state), so stopping after epoch k and
resuming ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from convcore import data as _data
from convcore import losses as _losses
from convcore import optim as _optim
from convcore.models._act import ACTIVATIONS

__all__ = ["TrainConfig", "fit", "evaluate_checkpoint", "format_report"]

CHECKPOINT = "checkpoint.npz"
FORMAT_VERSION = 1


@dataclass
class TrainConfig:
    """Everything that determines a training run (the ``convcore train`` flags)."""
    model: str = "lenet5"
    activation: Optional[str] = None    # None: the model's own (relu, tanh, sigmoid, leaky_relu)
    dataset: str = "fashion-mnist"
    data_dir: Optional[str] = None
    epochs: int = 10
    batch_size: int = 64
    lr: Optional[float] = None          # None: 0.01 for sgd, 1e-3 for adam/adamw
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "cosine"            # none, step, cosine
    step_size: int = 5
    loss: str = "ce"                    # ce, focal, cb-ce, cb-focal
    gamma: float = 2.0
    beta: float = 0.9999
    label_smoothing: float = 0.0
    imbalance_ratio: float = 1.0
    augment: Optional[bool] = None      # None: on for cifar10
    threads: Optional[int] = None
    blas_threads: int = 1               # NumPy's BLAS (linear layers), see fit()
    device: str = "cpu"
    seed: int = 0
    out: str = "runs/latest"
    limit_train: Optional[int] = None   # use only the first n training images (tests)
    limit_test: Optional[int] = None
    distributed: bool = False           # data-parallel over MPI ranks (mpiexec)
    sync_bn: bool = False               # BatchNorm statistics over the global batch
    dist_timeout: Optional[float] = None  # seconds a collective may wait (None: 300)

    def resolved_lr(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return 0.01 if self.optimizer == "sgd" else 1e-3


LOSSES = ("ce", "focal", "cb-ce", "cb-focal")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine")


def check_config(cfg: TrainConfig) -> None:
    def positive_int(name):
        v = getattr(cfg, name)
        if v is not None and (isinstance(v, bool) or int(v) != v or v < 1):
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    for n in ("epochs", "batch_size", "step_size", "threads", "blas_threads", "limit_train",
              "limit_test"):
        positive_int(n)
    if cfg.loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {cfg.loss!r}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got "
                         f"{cfg.optimizer!r}")
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got "
                         f"{cfg.schedule!r}")
    if not cfg.imbalance_ratio >= 1:
        raise ValueError(f"imbalance_ratio must be >= 1, got {cfg.imbalance_ratio}")
    if cfg.activation is not None and cfg.activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got "
                         f"{cfg.activation!r}")
    if cfg.device not in ("cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {cfg.device!r}")
    if cfg.resolved_lr() <= 0:
        raise ValueError(f"lr must be > 0, got {cfg.lr}")


# ------------------------------------------------------------------ building

def build_model(name: str, in_channels: int, num_classes: int, image_size: int, seed: int,
                activation: Optional[str] = None):
    """An instance of ``convcore.models.<name>`` for this data, with the keyword
    arguments its constructor accepts (in_channels, num_classes, seed...), and
    ``activation`` when given (ValueError if the model has no such choice)."""
    if ":" in name:                       # "package.module:function", a user's model
        import importlib
        mod_name, _, fn_name = name.partition(":")
        try:
            models = importlib.import_module(mod_name)
        except ImportError as e:
            raise ValueError(f"cannot import the model module {mod_name!r}: {e}") from None
        name = fn_name
    else:
        try:
            import convcore.models as models
        except ImportError as e:
            raise ValueError(f"unknown model {name!r}: convcore.models cannot be imported "
                             f"({e})") from None
    fn = getattr(models, name, None)
    if fn is None or name.startswith("_") or not callable(fn):
        avail = sorted(n for n in getattr(models, "__all__", dir(models))
                       if not n.startswith("_") and callable(getattr(models, n, None)))
        raise ValueError(f"unknown model {name!r}; available: {', '.join(avail)}")
    params = inspect.signature(fn).parameters
    kw = {}
    for key, val in (("num_classes", num_classes), ("in_channels", in_channels),
                     ("image_size", image_size), ("input_size", image_size),
                     ("seed", seed)):
        if key in params:
            kw[key] = val
    if activation is not None:
        if "activation" not in params:
            raise ValueError(f"model {name!r} has no activation choice; --activation works "
                             f"with lenet5, cnn_bn and cnn_bn_wide")
        kw["activation"] = activation
    if "rng" in params and "seed" not in params:
        kw["rng"] = np.random.default_rng(seed)
    np.random.seed(seed)          # for models that draw from the global generator
    return fn(**kw)


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


def _host(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


# ------------------------------------------------------------------ checkpoints

def _state_arrays(model, opt, sched):
    arrays = {}
    for k, v in model.state_dict().items():
        arrays["model/" + k] = _host(v)
    for k, v in opt.state_dict().items():
        arrays["optim/" + k] = _host(v)
    if sched is not None:
        for k, v in sched.state_dict().items():
            arrays["sched/" + k] = np.asarray(v)
    return arrays


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"rng/legacy_keys": keys, "rng/legacy_pos": np.int64(pos),
            "rng/legacy_has_gauss": np.int64(has_gauss),
            "rng/legacy_cached": np.float64(cached)}


def _set_rng_state(arrs) -> None:
    np.random.set_state(("MT19937", np.asarray(arrs["rng/legacy_keys"], np.uint32),
                         int(arrs["rng/legacy_pos"]), int(arrs["rng/legacy_has_gauss"]),
                         float(arrs["rng/legacy_cached"])))


def _module_generators(model):
    """(name, Generator) of every module holding its own random generator
    (Dropout masks), in module order; a shared generator is listed once."""
    out, seen = [], set()
    named = model.named_modules() if hasattr(model, "named_modules") else [("", model)]
    for name, mod in named:
        g = getattr(mod, "rng", None)
        if isinstance(g, np.random.Generator) and id(g) not in seen:
            seen.add(id(g))
            out.append((name, g))
    return out


def module_rng_states(model) -> list:
    return [{"module": n, "state": g.bit_generator.state} for n, g in _module_generators(model)]


def set_module_rng_states(model, states) -> None:
    gens = _module_generators(model)
    if [n for n, _ in gens] != [s["module"] for s in states]:
        raise ValueError(f"checkpoint has random generators for modules "
                         f"{[s['module'] for s in states]}, the model has {[n for n, _ in gens]}")
    for (_, g), st in zip(gens, states):
        g.bit_generator.state = st["state"]


def save_checkpoint(path: str, model, opt, sched, meta: dict) -> None:
    """Write a checkpoint atomically: a temporary file in the same directory,
    flushed and fsynced, then renamed over `path`. Plain ``.npz``, no pickle."""
    arrays = _state_arrays(model, opt, sched)
    arrays.update(_rng_state())
    meta = dict(meta, module_rngs=module_rng_states(model))
    arrays["meta"] = np.array(json.dumps(meta))
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_checkpoint(path: str):
    """(meta dict, arrays dict) of a checkpoint; ValueError naming the file when
    it is not one (object arrays are refused, never unpickled)."""
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        raise ValueError(f"{path}: not a convcore checkpoint ({e})") from None
    except Exception as e:  # zipfile.BadZipFile, EOFError, OSError
        raise ValueError(f"{path}: unreadable or truncated checkpoint ({e})") from None
    if "meta" not in arrays:
        raise ValueError(f"{path}: not a convcore checkpoint (no 'meta' entry)")
    meta = json.loads(str(arrays.pop("meta")))
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {meta.get('format')!r}, expected "
                         f"{FORMAT_VERSION}")
    return meta, arrays


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

def fit(cfg: TrainConfig, resume: Optional[str] = None, stop_after: Optional[int] = None,
        log=None, progress: Optional[bool] = None, plots: bool = True) -> dict:
    """Train as ``convcore train`` does; return the metrics dict.

    Parameters
    ----------
    cfg : TrainConfig
    resume : str, optional
        Checkpoint file (or run directory) to continue from; the model,
        dataset and optimizer settings come from it, `cfg.epochs` and
        `cfg.out` from the caller.
    stop_after : int, optional
        Stop after this epoch (as if interrupted there), for testing resume.
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
    if resume:
        if dist is None:
            meta, arrays = read_checkpoint(resume)
        else:
            # Rank 0 reads the file (the other hosts need not see it) and
            # sends its content to every rank.
            meta, arrays = read_checkpoint(resume) if dist.is_main_process() else (None, None)
            meta = dist.broadcast_object(meta)
            arrays = dist.broadcast_arrays(arrays)
        saved = TrainConfig(**meta["config"])
        saved.epochs, saved.out = cfg.epochs, cfg.out
        if cfg.threads is not None:
            saved.threads = cfg.threads
        saved.blas_threads = cfg.blas_threads
        if cfg.data_dir is not None:
            saved.data_dir = cfg.data_dir
        saved.distributed, saved.sync_bn = cfg.distributed, cfg.sync_bn
        saved.dist_timeout = cfg.dist_timeout
        cfg = saved
        start_epoch = int(meta["epoch"])
        history = meta.get("history", [])
    check_config(cfg)
    from convcore import _config
    if cfg.threads:
        _config.set_num_threads(cfg.threads)
    elif dist is not None and not os.environ.get("CONVCORE_NUM_THREADS"):
        _config.set_num_threads(dist.threads_per_rank())   # share the host's cores
    threads = _config.get_num_threads()
    try:
        from threadpoolctl import threadpool_limits
        # convcore's kernels thread by themselves; the BLAS calls left to NumPy
        # (linear layers) are small matmuls where a BLAS thread pool costs more
        # than it gains and competes with the OpenMP team (on a busy 2-core
        # machine a 64x400x120 sgemm took 10 ms with 2 threads, 0.27 ms with 1).
        limiter = threadpool_limits(limits=cfg.blas_threads, user_api="blas")
    except ImportError:
        limiter = None
    try:
        return _fit(cfg, start_epoch, history, arrays, stop_after, log, progress, plots,
                    threads, meta if resume else {}, dist)
    finally:
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
         resume_meta, dist=None):
    main = dist is None or dist.is_main_process()
    shard = None if dist is None else (dist.rank(), dist.world_size())
    train_set, test_set = load_data(cfg)
    C = train_set.num_classes
    mean, std = _data.channel_stats(train_set.images)
    augment = cfg.augment if cfg.augment is not None else cfg.dataset == "cifar10"
    train_it = _data.BatchIterator(train_set.images, train_set.labels, cfg.batch_size,
                                   shuffle=True, seed=cfg.seed, mean=mean, std=std,
                                   augment=augment)
    eval_set = test_set
    if dist is not None:   # evaluation is sharded: each rank a contiguous block
        a, b = dist.shard_bounds(len(test_set))
        eval_set = test_set.subset(np.arange(a, b))
    test_it = _data.BatchIterator(eval_set.images, eval_set.labels, 500, shuffle=False,
                                  mean=mean, std=std)
    counts = np.bincount(train_set.labels, minlength=C)
    model = build_model(cfg.model, train_set.images.shape[1], C,
                        train_set.images.shape[2], cfg.seed, cfg.activation)
    skip_first_input_grad(model)
    if arrays is not None:
        model.load_state_dict(_split(arrays, "model/"))
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
        opt.load_state_dict(_split(arrays, "optim/"))
        if sched is not None:
            sched.load_state_dict(_split(arrays, "sched/"))
        _set_rng_state(arrays)
        set_module_rng_states(model, resume_meta.get("module_rngs", []))
    if main:
        os.makedirs(cfg.out, exist_ok=True)
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
    except KeyboardInterrupt:
        if not main:
            raise
        path = os.path.join(cfg.out, "interrupted.npz")
        save_checkpoint(path, model, opt, sched,
                        meta(epoch, {"interrupted": True}))
        log(f"\ninterrupted in epoch {epoch + 1}: weights saved to {path}; the last "
            f"complete epoch is in {ckpt_path} (continue with --resume {ckpt_path})")
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
    path = os.path.join(out, "metrics.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(m, f, indent=1)
    os.replace(tmp, path)


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
                        device: Optional[str] = None, limit_test: Optional[int] = None):
    """Accuracy, per-class accuracy and confusion matrix of a checkpoint on its
    dataset's test set. Returns a dict."""
    meta, arrays = read_checkpoint(path)
    cfg = TrainConfig(**meta["config"])
    if data_dir is not None:
        cfg.data_dir = data_dir
    if device is not None:
        cfg.device = device
    if limit_test is not None:
        cfg.limit_test = limit_test
    from convcore import _config
    if threads:
        _config.set_num_threads(threads)
    _, test_set = _data.load_dataset(cfg.dataset, cfg.data_dir)
    if cfg.limit_test:
        test_set = test_set.subset(np.arange(min(cfg.limit_test, len(test_set))))
    C = len(meta["classes"])
    model = build_model(cfg.model, test_set.images.shape[1], C, test_set.images.shape[2],
                        cfg.seed, cfg.activation)
    model.load_state_dict(_split(arrays, "model/"))
    model = _to_device(model, cfg.device)
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
