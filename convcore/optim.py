"""Optimizers and learning-rate schedules, with PyTorch's update rules.

Optimizers take an iterable of parameters (objects with ``.data`` and
``.grad`` arrays, as ``convcore.nn.Parameter``) and update ``.data`` in place.
``state_dict()`` is a flat dict of NumPy arrays and numbers, so it fits in an
``.npz`` checkpoint without pickle.
"""
from __future__ import annotations

import math

import numpy as np

from convcore.nn.module import Parameter

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "StepLR", "CosineAnnealingLR"]


def __dir__():   # dir() shows the public names only
    return sorted(__all__)


def _check_nonneg(v, name):
    v = float(v)
    if not (v >= 0.0) or math.isinf(v):
        raise ValueError(f"{name} must be a finite number >= 0, got {v}")
    return v


def _like(v, p):
    """A copy of host array `v` with the dtype and array module (NumPy or CuPy) of `p`."""
    if isinstance(p, np.ndarray):
        return np.array(v, dtype=p.dtype, copy=True)
    import cupy
    return cupy.asarray(v, dtype=p.dtype)


class Optimizer:
    """Base class: holds the parameters, the learning rate and per-parameter state."""

    _buffers: tuple = ()

    def __init__(self, params, lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        for p in self.params:
            if not hasattr(p, "data") or not hasattr(p, "grad"):
                raise TypeError(f"parameters must have .data and .grad, got "
                                f"{type(p).__name__}")
        self.lr = _check_nonneg(lr, "lr")
        self.initial_lr = self.lr
        self.state = [dict() for _ in self.params]
        self.step_count = 0

    def zero_grad(self, set_to_none=True):
        """Reset the gradients, as :meth:`convcore.nn.Module.zero_grad`: a
        :class:`~convcore.nn.Parameter`'s is dropped with ``set_to_none`` (the
        default; the next backward writes it afresh, and reading it gives
        zeros); other objects' ``.grad`` arrays, and all of them with
        ``set_to_none=False``, are zeroed in place."""
        for p in self.params:
            if set_to_none and isinstance(p, Parameter):
                p._grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    def step(self):
        self.step_count += 1
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            self._update(p.data, p.grad, self.state[i])
            if isinstance(p, Parameter):
                p._version += 1   # (eval-mode folds of it are made again)

    def state_dict(self) -> dict:
        """Flat dict: 'lr', 'initial_lr', 'step_count' and 'state.<i>.<name>' arrays."""
        d = {"lr": np.float64(self.lr), "initial_lr": np.float64(self.initial_lr),
             "step_count": np.int64(self.step_count)}
        for i, st in enumerate(self.state):
            for k, v in st.items():
                d[f"state.{i}.{k}"] = np.int64(v) if isinstance(v, int) else v
        return d

    def load_state_dict(self, d: dict) -> None:
        for k in ("lr", "initial_lr", "step_count"):
            if k not in d:
                raise ValueError(f"optimizer state is missing {k!r}")
        state = [dict() for _ in self.params]
        for k, v in d.items():
            if not k.startswith("state."):
                continue
            _, i, name = k.split(".", 2)
            i = int(i)
            if i >= len(self.params) or name not in self._buffers:
                raise ValueError(f"optimizer state has unexpected key {k!r}")
            v = np.asarray(v)
            if name != "step":
                if v.shape != self.params[i].data.shape:
                    raise ValueError(f"optimizer state {k!r} has shape {v.shape}, expected "
                                     f"{self.params[i].data.shape}")
                if v.dtype.kind not in "fiu":
                    raise ValueError(f"optimizer state {k!r} has dtype {v.dtype}")
                v = _like(v, self.params[i].data)
            else:
                v = _scalar(v, k, int)
            state[i][name] = v
        for i, st in enumerate(state):     # a parameter's buffers come all together
            if st and set(st) != set(self._buffers):
                raise ValueError(f"optimizer state of parameter {i} has {sorted(st)}, "
                                 f"expected all of {sorted(self._buffers)}")
        lr = _scalar(d["lr"], "lr", float)
        initial_lr = _scalar(d["initial_lr"], "initial_lr", float)
        step_count = _scalar(d["step_count"], "step_count", int)
        self.lr, self.initial_lr, self.step_count = lr, initial_lr, step_count
        self.state = state


def _scalar(v, name, kind):
    """A saved scalar: finite and non-negative, else ValueError."""
    v = np.asarray(v)
    if v.shape != () or v.dtype.kind not in ("iu" if kind is int else "fiu"):
        raise ValueError(f"{name} must be a scalar {kind.__name__}, got {v.dtype} "
                         f"array of shape {v.shape}")
    v = kind(v)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {v}")
    return v


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov momentum and L2
    weight decay.

    The update is exactly that of ``torch.optim.SGD``::

        g = grad + weight_decay * p
        buf = g                                    (first step)
        buf = momentum * buf + (1 - dampening) * g (later steps)
        g = g + momentum * buf if nesterov else buf
        p -= lr * g

    Examples
    --------
    >>> import numpy as np
    >>> class P: data = np.array([1.0]); grad = np.array([0.5])
    >>> opt = SGD([P], lr=0.1)
    >>> opt.step(); P.data.tolist()
    [0.95]
    """

    _buffers = ("momentum_buffer",)

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, lr)
        self.momentum = _check_nonneg(momentum, "momentum")
        self.dampening = float(dampening)
        self.weight_decay = _check_nonneg(weight_decay, "weight_decay")
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov momentum needs momentum > 0 and dampening = 0")

    def _update(self, p, grad, st):
        g = grad
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            buf = st.get("momentum_buffer")
            if buf is None:
                buf = st["momentum_buffer"] = g.astype(p.dtype, copy=True)
            else:
                buf *= self.momentum
                if self.dampening:
                    buf += (1.0 - self.dampening) * g
                else:
                    buf += g
            g = g + self.momentum * buf if self.nesterov else buf
        if g is grad or g is st.get("momentum_buffer"):
            p -= self.lr * g
        else:                      # g is a temporary: scale it in place
            g *= self.lr
            p -= g


class Adam(Optimizer):
    """Adam (Kingma and Ba) with PyTorch's formulation.

    `weight_decay` is L2 added to the gradient (coupled)::

        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g²
        p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    _buffers = ("exp_avg", "exp_avg_sq", "step")
    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        b1, b2 = (float(b) for b in betas)
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        self.betas = (b1, b2)
        self.eps = _check_nonneg(eps, "eps")
        self.weight_decay = _check_nonneg(weight_decay, "weight_decay")

    def _update(self, p, grad, st):
        b1, b2 = self.betas
        if self.weight_decay:
            if self._decoupled:
                p *= 1.0 - self.lr * self.weight_decay
            else:
                grad = grad + self.weight_decay * p
        if "exp_avg" not in st:
            st["exp_avg"] = np.zeros_like(p)
            st["exp_avg_sq"] = np.zeros_like(p)
            st["step"] = 0
        st["step"] += 1
        t = st["step"]
        m, v = st["exp_avg"], st["exp_avg_sq"]
        m += (grad - m) * (1.0 - b1)                 # lerp, as torch
        v *= b2
        v += (1.0 - b2) * grad * grad
        bc1 = 1.0 - b1 ** t
        bc2 = 1.0 - b2 ** t
        denom = np.sqrt(v) / math.sqrt(bc2)
        denom += self.eps
        p -= (self.lr / bc1) * m / denom


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter), as
    ``torch.optim.AdamW``: ``p *= 1 - lr * weight_decay`` before the Adam step."""

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


class _Schedule:
    def __init__(self, optimizer: Optimizer):
        self.optimizer = optimizer
        self.base_lr = optimizer.initial_lr
        self.last_epoch = 0

    def step(self):
        """Advance one epoch and set the optimizer's learning rate."""
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def state_dict(self) -> dict:
        return {"last_epoch": np.int64(self.last_epoch)}

    def load_state_dict(self, d: dict) -> None:
        if "last_epoch" not in d:
            raise ValueError("schedule state is missing 'last_epoch'")
        self.last_epoch = _scalar(d["last_epoch"], "last_epoch", int)
        self.optimizer.lr = self.lr_at(self.last_epoch)


class StepLR(_Schedule):
    """``lr = base_lr * gamma ** (epoch // step_size)``.

    Examples
    --------
    >>> import numpy as np
    >>> class P: data = np.zeros(1); grad = np.zeros(1)
    >>> s = StepLR(SGD([P], lr=1.0), step_size=2, gamma=0.1)
    >>> [round(s.lr_at(e), 6) for e in range(5)]
    [1.0, 1.0, 0.1, 0.1, 0.01]
    """

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        super().__init__(optimizer)
        if int(step_size) != step_size or step_size < 1:
            raise ValueError(f"step_size must be a positive int, got {step_size}")
        self.step_size = int(step_size)
        self.gamma = float(gamma)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(_Schedule):
    """``lr = eta_min + (base_lr - eta_min) (1 + cos(pi epoch / T_max)) / 2``
    (the closed form of ``torch.optim.lr_scheduler.CosineAnnealingLR``)."""

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0):
        super().__init__(optimizer)
        if int(T_max) != T_max or T_max < 1:
            raise ValueError(f"T_max must be a positive int, got {T_max}")
        self.T_max = int(T_max)
        self.eta_min = float(eta_min)

    def lr_at(self, epoch: int) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * \
            (1 + math.cos(math.pi * epoch / self.T_max)) / 2
