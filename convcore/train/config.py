"""The configuration of a training run (the ``convcore train`` options) and
its checks; shared by the training loop, the checkpoint reader and the CLI."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Optional


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
    augment: Optional[bool] = None      # None: on for cifar10; "pca": + AlexNet lighting
    threads: Optional[int] = None
    blas_threads: Optional[int] = None  # NumPy's BLAS during training; None: as it is
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
ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu")   # as convcore.models._act


def check_config(cfg: TrainConfig) -> None:
    def positive_int(name):
        v = getattr(cfg, name)
        if v is not None and (isinstance(v, bool) or int(v) != v or v < 1):
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    for n in ("epochs", "batch_size", "step_size", "threads", "blas_threads", "limit_train",
              "limit_test"):
        positive_int(n)
    from convcore._config import MAX_THREADS
    for n in ("threads", "blas_threads"):
        v = getattr(cfg, n)
        if v is not None and v > MAX_THREADS:
            raise ValueError(f"{n} must be <= {MAX_THREADS}, got {v}")
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
    if not cfg.resolved_lr() > 0:
        raise ValueError(f"lr must be > 0, got {cfg.lr}")
    for n in ("lr", "momentum", "weight_decay", "gamma", "beta", "label_smoothing",
              "imbalance_ratio", "dist_timeout"):
        v = getattr(cfg, n)
        if v is not None and not math.isfinite(v):
            raise ValueError(f"{n} must be a finite number, got {v}")


def field_kinds() -> dict:
    """{field: (type, optional)} of :class:`TrainConfig`, for checking values
    read from a file."""
    out = {}
    for f in fields(TrainConfig):
        t = str(f.type)
        base = t[len("Optional["):-1] if t.startswith("Optional[") else t
        out[f.name] = ({"str": str, "int": int, "float": float, "bool": bool}[base],
                       t.startswith("Optional["))
    return out
