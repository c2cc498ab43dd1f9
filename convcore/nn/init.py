"""Initialisers of the layers' parameters.

Every layer with weights draws them from a ``numpy.random.Generator``
(:func:`convcore._rng.as_rng` turns a seed or None into one) through the
functions here, so one seed gives the same network whatever the order in
which its parameters are first touched.
"""
from __future__ import annotations

import math

import numpy as np

from convcore.nn.module import Parameter

__all__ = ["kaiming_uniform"]


def kaiming_uniform(rng, shape, fan_in, dtype):
    """A :class:`Parameter` with torch.nn's default init: U(-b, b) with
    b = 1 / sqrt(fan_in) (Kaiming-uniform with a = sqrt(5)), drawn lazily from
    a seed taken from ``rng`` now."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    seed = int(rng.integers(0, 2**63 - 1))
    dt = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)

    def make():
        a = np.random.default_rng(seed).random(shape, dtype=dt.type)
        a *= 2 * bound
        a -= bound
        return a
    p = Parameter(None)
    p._lazy = (shape, dt, make)
    return p
