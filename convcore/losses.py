"""Classification losses with their gradients: cross-entropy (class weights,
label smoothing), focal loss (gamma, per-class alpha), and class-balanced
weights from the effective number of samples.

Each loss is a pair of functions (``loss(logits, target) -> float`` and
``*_backward(logits, target) -> dlogits``) and a small class that caches the
forward pass: ``loss = crit(logits, y); dlogits = crit.backward()``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["log_softmax", "softmax", "cross_entropy", "cross_entropy_backward",
           "focal_loss", "focal_loss_backward", "class_balanced_weights",
           "CrossEntropyLoss", "FocalLoss"]


def __dir__():   # dir() shows the public names only
    return sorted(__all__)

_REDUCTIONS = ("mean", "sum", "none")


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, stable for large logits."""
    m = z.max(axis=1, keepdims=True)
    s = z - m
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    return np.exp(log_softmax(z))


def _check(logits, target, weight, name="weight"):
    if not isinstance(logits, np.ndarray) or logits.ndim != 2:
        raise ValueError(f"logits must be a 2-D array (N, C), got "
                         f"{getattr(logits, 'shape', type(logits).__name__)}")
    if logits.dtype not in (np.float32, np.float64):
        raise TypeError(f"logits must be float32 or float64, got {logits.dtype}")
    target = np.asarray(target)
    if target.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got {target.dtype}")
    N, C = logits.shape
    if target.shape != (N,):
        raise ValueError(f"target must have shape ({N},), got {target.shape}")
    if N and (target.min() < 0 or target.max() >= C):
        raise ValueError(f"target values must be in [0, {C}), got min {target.min()}, "
                         f"max {target.max()}")
    if weight is not None:
        weight = np.asarray(weight, dtype=np.float64)
        if weight.ndim == 0:
            weight = np.full(C, float(weight))
        if weight.shape != (C,):
            raise ValueError(f"{name} must have shape ({C},), got {weight.shape}")
    return target.astype(np.intp), weight


def _reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _ce_coeffs(C, target, weight, label_smoothing):
    """Per-sample target distribution a (N, C) scaled by class weights, and the
    normaliser of the 'mean' reduction (as PyTorch: the sum of w[target])."""
    N = target.shape[0]
    w = np.ones(C) if weight is None else weight
    a = np.zeros((N, C))
    a[np.arange(N), target] = (1.0 - label_smoothing) * w[target]
    if label_smoothing:
        a += (label_smoothing / C) * w[None, :]
    denom = w[target].sum()
    return a, denom


def cross_entropy(logits, target, weight=None, label_smoothing: float = 0.0,
                  reduction: str = "mean"):
    """Softmax cross-entropy, as ``torch.nn.functional.cross_entropy``.

    ``loss_i = -sum_c a_ic log softmax(z_i)_c`` with
    ``a_ic = w_c ((1 - eps) [c = y_i] + eps / C)``; 'mean' divides the sum by
    ``sum_i w[y_i]``.

    Examples
    --------
    >>> import numpy as np
    >>> round(float(cross_entropy(np.zeros((2, 4)), np.array([0, 3]))), 6)  # log 4
    1.386294
    """
    _reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    target, weight = _check(logits, target, weight)
    lp = log_softmax(logits.astype(np.float64))
    a, denom = _ce_coeffs(logits.shape[1], target, weight, label_smoothing)
    per = -(a * lp).sum(axis=1)
    if reduction == "none":
        return per
    if reduction == "sum":
        return float(per.sum())
    return float(per.sum() / denom)


def cross_entropy_backward(logits, target, weight=None, label_smoothing: float = 0.0,
                           reduction: str = "mean", grad_output=1.0):
    """Gradient of :func:`cross_entropy` with respect to the logits:
    ``dz_i = p_i * sum_c a_ic - a_i`` (scaled by the reduction)."""
    _reduction(reduction)
    target, weight = _check(logits, target, weight)
    p = softmax(logits.astype(np.float64))
    a, denom = _ce_coeffs(logits.shape[1], target, weight, label_smoothing)
    g = p * a.sum(axis=1, keepdims=True) - a
    if reduction == "none":
        g *= np.asarray(grad_output, dtype=np.float64).reshape(-1, 1)
    else:
        g *= float(grad_output) / (denom if reduction == "mean" else 1.0)
    return g.astype(logits.dtype)


def _focal_parts(logits, target, gamma):
    lp = log_softmax(logits.astype(np.float64))
    N = logits.shape[0]
    logpt = lp[np.arange(N), target]
    pt = np.exp(logpt)
    one_m = -np.expm1(logpt)                       # 1 - pt without cancellation
    return lp, logpt, pt, one_m


def focal_loss(logits, target, gamma: float = 2.0, alpha=None, reduction: str = "mean"):
    """Softmax focal loss ``-alpha[y] (1 - p_y)**gamma log p_y`` (Lin et al.).

    gamma = 0 and no alpha is cross-entropy. `alpha` is a per-class weight
    vector (e.g. :func:`class_balanced_weights`) or a scalar. 'mean' averages
    over samples.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[2.0, 0.0]]); y = np.array([0])
    >>> p = np.exp(2) / (np.exp(2) + 1)
    >>> bool(np.isclose(focal_loss(z, y, gamma=2), -(1 - p)**2 * np.log(p)))
    True
    """
    _reduction(reduction)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    target, alpha = _check(logits, target, alpha, "alpha")
    _, logpt, _, one_m = _focal_parts(logits, target, gamma)
    per = -(one_m ** gamma) * logpt
    if alpha is not None:
        per = per * alpha[target]
    if reduction == "none":
        return per
    return float(per.sum() if reduction == "sum" else per.mean() if per.size else 0.0)


def focal_loss_backward(logits, target, gamma: float = 2.0, alpha=None,
                        reduction: str = "mean", grad_output=1.0):
    """Gradient of :func:`focal_loss` with respect to the logits.

    With ``L = -(1 - p)**g log p`` (p = p_y): ``dL/dz = k (onehot - softmax)``,
    ``k = g (1 - p)**(g - 1) p log p - (1 - p)**g``, times alpha[y].
    """
    _reduction(reduction)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    target, alpha = _check(logits, target, alpha, "alpha")
    lp, logpt, pt, one_m = _focal_parts(logits, target, gamma)
    N, C = logits.shape
    pow_g = one_m ** gamma
    # g (1-p)^(g-1) p log p = g (1-p)^g * (p log p / (1-p)); the ratio -> -1 as p -> 1
    safe = one_m > 0
    ratio = np.where(safe, pt * logpt / np.where(safe, one_m, 1.0), -1.0)
    k = gamma * pow_g * ratio - pow_g if gamma else -np.ones(N)
    if alpha is not None:
        k = k * alpha[target]
    onehot = np.zeros((N, C))
    onehot[np.arange(N), target] = 1.0
    g = k[:, None] * (onehot - np.exp(lp))
    if reduction == "none":
        g *= np.asarray(grad_output, dtype=np.float64).reshape(-1, 1)
    elif reduction == "mean":
        g *= float(grad_output) / max(N, 1)
    else:
        g *= float(grad_output)
    return g.astype(logits.dtype)


def class_balanced_weights(counts, beta: float = 0.9999) -> np.ndarray:
    """Class weights from the effective number of samples (Cui et al., 2019).

    ``E_c = (1 - beta**n_c) / (1 - beta)``, ``w_c ∝ 1 / E_c``, scaled so the
    weights sum to the number of classes. A class with no samples gets 0.
    beta = 0 gives equal weights; beta -> 1 approaches inverse frequency.

    Examples
    --------
    >>> class_balanced_weights([100, 10, 1], beta=0.0).tolist()
    [1.0, 1.0, 1.0]
    >>> w = class_balanced_weights([1000, 10], beta=0.999)
    >>> bool(w[1] > w[0])
    True
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"counts must be a non-empty 1-D array, got shape {counts.shape}")
    if (counts < 0).any():
        raise ValueError(f"counts must be >= 0, got {counts.tolist()}")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    eff = -np.expm1(counts * np.log(beta)) / (1.0 - beta) if beta > 0 else \
        (counts > 0).astype(np.float64)
    w = np.where(counts > 0, 1.0 / np.where(counts > 0, eff, 1.0), 0.0)
    total = w.sum()
    if total == 0:
        raise ValueError("counts are all zero")
    return w * (counts.size / total)


class _Loss:
    def __call__(self, logits, target):
        return self.forward(logits, target)

    def forward(self, logits, target):
        self._cache = (logits, target)
        return self._fwd(logits, target)

    def backward(self, grad_output=1.0):
        if getattr(self, "_cache", None) is None:
            raise RuntimeError("backward called before forward")
        return self._bwd(*self._cache, grad_output=grad_output)


class CrossEntropyLoss(_Loss):
    """Cross-entropy with optional class `weight` and `label_smoothing`
    (as ``torch.nn.CrossEntropyLoss``); see :func:`cross_entropy`."""

    def __init__(self, weight=None, label_smoothing: float = 0.0, reduction: str = "mean"):
        _reduction(reduction)
        self.weight = None if weight is None else np.asarray(weight, np.float64)
        self.label_smoothing = float(label_smoothing)
        self.reduction = reduction

    def _fwd(self, z, y):
        return cross_entropy(z, y, self.weight, self.label_smoothing, self.reduction)

    def _bwd(self, z, y, grad_output):
        return cross_entropy_backward(z, y, self.weight, self.label_smoothing,
                                      self.reduction, grad_output)


class FocalLoss(_Loss):
    """Softmax focal loss with focusing parameter `gamma` and per-class
    `alpha`; see :func:`focal_loss`."""

    def __init__(self, gamma: float = 2.0, alpha=None, reduction: str = "mean"):
        _reduction(reduction)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else np.asarray(alpha, np.float64)
        self.reduction = reduction

    def _fwd(self, z, y):
        return focal_loss(z, y, self.gamma, self.alpha, self.reduction)

    def _bwd(self, z, y, grad_output):
        return focal_loss_backward(z, y, self.gamma, self.alpha, self.reduction, grad_output)
