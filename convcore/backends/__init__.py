"""Backends: the same function names for NumPy (``cpu``) and CuPy (``cuda``).

The functional layer validates and allocates; a backend only computes.  An
array's type picks its backend: NumPy in, NumPy out; CuPy in, CuPy out.
"""
from __future__ import annotations

import numpy as np


def is_cupy_array(a) -> bool:
    return type(a).__module__.split(".")[0] == "cupy"


def get_backend(*arrays):
    """The backend module for these arrays (``None`` entries are skipped).

    Raises TypeError when NumPy and CuPy arrays are mixed, or an argument is
    not an array at all.
    """
    # the common case first, in as few steps as possible: only NumPy arrays
    found = False
    for a in arrays:
        if type(a) is _ndarray:
            found = True
        elif a is not None:
            return _mixed_backend(arrays)
    if not found:
        raise TypeError("expected a numpy.ndarray or cupy.ndarray, got None")
    return _CPU[0] if _CPU else _cpu()


_ndarray = np.ndarray


def _mixed_backend(arrays):
    kinds = set()
    for a in arrays:
        if a is None:
            continue
        if isinstance(a, np.ndarray):
            kinds.add("cpu")
        elif is_cupy_array(a):
            kinds.add("cuda")
        else:
            raise TypeError(
                f"expected a numpy.ndarray or cupy.ndarray, got {type(a).__name__}")
    if kinds == {"cuda"}:
        from convcore.backends import cuda
        return cuda
    if len(kinds) > 1:
        raise TypeError("arrays live on different devices: got both NumPy (CPU) and "
                        "CuPy (GPU) arrays; move them to one device first")
    return _cpu()


_CPU = []


def _cpu():
    if not _CPU:
        from convcore.backends import cpu
        _CPU.append(cpu)
    return _CPU[0]
