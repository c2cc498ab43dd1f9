"""The one conversion of an ``rng`` argument into a random generator, shared
by the functional layer (dropout masks) and the modules (initial weights)."""
from __future__ import annotations

import numbers

import numpy as np


def as_rng(rng):
    """A ``numpy.random.Generator`` from None (fresh entropy), an int seed, a
    ``SeedSequence`` or a Generator (returned as is); TypeError otherwise."""
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (numbers.Integral, np.random.SeedSequence)) and not isinstance(rng, bool):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, got "
                    f"{type(rng).__name__}")
