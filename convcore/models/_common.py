"""The arguments every model constructor shares, checked in one place."""
from __future__ import annotations

from convcore._rng import as_rng
from convcore._validate import as_int


def _common(num_classes, in_channels, rng):
    return (as_int(num_classes, "num_classes", minimum=1),
            as_int(in_channels, "in_channels", minimum=1), as_rng(rng))
