"""Building a run from its configuration: the model (which model a name
means -- the registry of ``convcore.models`` for names read from files,
``module:function`` imports only for names the caller gives -- and a check
that the data's images are large enough for it), the data and its batch
iterators, the loss, the optimizer and its schedule, and the device."""
from __future__ import annotations

import difflib
import inspect
import re
from typing import Optional

import numpy as np

from convcore import data as _data
from convcore import losses as _losses
from convcore import optim as _optim
from convcore._grad import no_grad
from convcore.train.config import TrainConfig

_SPEC = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z][A-Za-z0-9_]*$")


def model_names() -> list:
    """The names ``--model`` accepts from ``convcore.models``'s registry."""
    from convcore import models
    return sorted(models.MODELS) + [f"vgg-{c}" for c in models.VGG_CONFIGS]


def _registry_model(name):
    from convcore.models.registry import constructor
    fn = constructor(name)
    if fn is not None:
        return fn
    from convcore import models
    names = model_names()
    close = difflib.get_close_matches(name.lower(), names, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise ValueError(f"unknown model {_shown(name)}{hint} (available: "
                     f"{', '.join(sorted(models.MODELS))}, vgg-<A|A-LRN|B|C|D|E>, or "
                     f"module:function for a model of your own)")


def _shown(v, n=80) -> str:
    """A value from a file or the command line, quoted and shortened for a message."""
    r = repr(v)
    return r if len(r) <= n else r[:n] + "..."


def custom_model_message(name) -> str:
    if isinstance(name, str) and _SPEC.match(name) and len(name) <= 200:
        return (f"this run used a custom model; pass --model {name} to rebuild it (its "
                f"code is imported only when you name it yourself)")
    return (f"this run used a custom model ({_shown(name)}); pass --model module:function "
            f"to rebuild it")


def build_model(name: str, in_channels: int, num_classes: int, image_size: int, seed: int,
                allow_import: bool = True, activation: Optional[str] = None):
    """An instance of the model `name` for this data, with the keyword arguments
    its constructor accepts (in_channels, num_classes, seed...).

    `name` is a model of ``convcore.models`` (``lenet5``, ``vgg16``,
    ``vgg-A-LRN``, ...) or, when `allow_import` is true, ``module:function``:
    the function is imported and called.  Names read from a file are passed
    with ``allow_import=False``: a checkpoint never makes convcore import
    anything.
    """
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ValueError(f"model must be a model name, got {_shown(name)}")
    if ":" in name:
        if not allow_import:
            raise ValueError(custom_model_message(name))
        if not _SPEC.match(name):
            raise ValueError(f"a custom model is given as module:function (e.g. "
                             f"mypackage.nets:small_cnn), got {_shown(name)}")
        import importlib
        mod_name, _, fn_name = name.partition(":")
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e:
            raise ValueError(f"cannot import the model module {mod_name!r}: {e}") from None
        fn = getattr(mod, fn_name, None)
        if fn is None or not callable(fn):
            raise ValueError(f"module {mod_name!r} has no function {fn_name!r}")
    else:
        fn = _registry_model(name)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    kw = {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        # vgg16(**kw) and the like: the constructor contract of convcore.models
        params = dict(params, num_classes=None, in_channels=None, rng=None)
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
    model = fn(**kw)
    missing = [a for a in ("forward", "backward", "parameters", "state_dict",
                           "load_state_dict", "train", "eval") if not hasattr(model, a)]
    if missing:
        raise ValueError(f"model {_shown(name)} returned a {type(model).__name__}, not a "
                         f"model (missing {', '.join(missing)})")
    return model


def _check_stored_model(name, path) -> None:
    """A model name read from checkpoint `path`: a model of the registry, or a
    ValueError naming the file (never an import)."""
    if isinstance(name, str) and ":" in name:
        raise ValueError(f"{path}: " + custom_model_message(name))
    try:
        if not isinstance(name, str) or not name or len(name) > 200:
            raise ValueError(f"model must be a model name, got {_shown(name)}")
        _registry_model(name)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def check_input_size(model, name, shape, dataset) -> None:
    """Run one blank image through the model (eval mode) so that a network
    made for larger images fails here, with a message about the input size,
    rather than inside a pooling layer in the middle of training."""
    C, H, W = shape
    dtype = np.float32
    try:
        dtype = next(iter(model.parameters())).data.dtype
    except (StopIteration, AttributeError, TypeError):
        pass
    was_training = getattr(model, "training", True)
    model.eval()
    try:
        with no_grad():
            model(np.zeros((1, C, H, W), dtype))
    except ValueError as e:
        msg = str(e)
        if re.search(r"larger than the padded input|output size|too small|must be >= 1", msg):
            raise ValueError(f"--model {name}: the input is too small for the network "
                             f"({H}x{W} images of {dataset}; {msg})") from None
        raise ValueError(f"--model {name} cannot run on {C}x{H}x{W} images of {dataset}: "
                         f"{msg}") from None
    finally:
        if was_training:
            model.train()


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


class Data:
    """The data of a run: both sets, the training set's channel statistics and
    class counts, and the batch iterators (training: shuffled from the seed,
    augmented; evaluation: this rank's block of the test set, in order)."""

    def __init__(self, cfg: TrainConfig, dist=None):
        self.train_set, self.test_set = load_data(cfg)
        self.num_classes = self.train_set.num_classes
        images = self.train_set.images
        self.mean, self.std = _data.channel_stats(images)
        augment = cfg.augment if cfg.augment is not None else cfg.dataset == "cifar10"
        augment, lighting = _data.training_augmentation(augment, images, cfg.dataset)
        self.train_it = _data.BatchIterator(images, self.train_set.labels, cfg.batch_size,
                                            shuffle=True, seed=cfg.seed, mean=self.mean,
                                            std=self.std, augment=augment, lighting=lighting)
        eval_set = self.test_set
        if dist is not None:   # evaluation is sharded: each rank a contiguous block
            a, b = dist.shard_bounds(len(self.test_set))
            eval_set = self.test_set.subset(np.arange(a, b))
        self.test_it = _data.BatchIterator(eval_set.images, eval_set.labels, 500,
                                           shuffle=False, mean=self.mean, std=self.std)
        self.counts = np.bincount(self.train_set.labels, minlength=self.num_classes)


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
