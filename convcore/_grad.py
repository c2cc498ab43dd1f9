"""Whether a module's forward pass keeps what its backward pass needs.

``with convcore.no_grad():`` (or ``@convcore.no_grad()`` on a function) runs
forward passes for their output only, as ``torch.no_grad()`` does: each
module keeps nothing for a backward pass (no saved input, ReLU mask or
max-pool indices), so inference allocates less and skips the passes that
build those.  The outputs are the same arrays, bit for bit.  A backward
call after such a forward pass raises until forward runs again with
gradients enabled.  The setting is per thread and nests.
"""
from __future__ import annotations

import functools
import threading

__all__ = ["no_grad", "is_grad_enabled"]

_local = threading.local()


def is_grad_enabled():
    """False inside :class:`no_grad` (in this thread), True otherwise."""
    return getattr(_local, "enabled", True)


class no_grad:
    """Context manager (and function decorator) that turns off what forward
    passes keep for the backward pass.

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> net = cc.nn.Sequential(cc.nn.Linear(3, 2, rng=0), cc.nn.ReLU())
    >>> with cc.no_grad():
    ...     y = net(np.ones((4, 3), np.float32))
    >>> y.shape, cc.is_grad_enabled()
    ((4, 2), True)
    >>> net.backward(np.ones_like(y))
    Traceback (most recent call last):
        ...
    RuntimeError: Sequential.backward: the last forward pass ran under convcore.no_grad(), which keeps nothing for a backward pass; run forward again outside it first
    """

    def __init__(self):
        self._prev = []

    def __enter__(self):
        self._prev.append(is_grad_enabled())
        _local.enabled = False
        return self

    def __exit__(self, exc_type, exc, tb):
        _local.enabled = self._prev.pop()
        return False

    def __call__(self, fn):
        if not callable(fn):
            raise TypeError(f"no_grad() decorates a function, got {type(fn).__name__}")

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)
        return wrapper
