"""Argument checks shared by every functional op.

TypeError for a wrong type or dtype, ValueError for a wrong shape or value;
each message says what was expected and what was given.
"""
from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# Hyper-parameters above this are refused before any arithmetic: no real
# image has a side of 2**31, and it keeps every size product far from int64.
MAX_HYPER = 2**31 - 1
# Largest element count of any buffer we allocate.
MAX_ELEMS = 2**62 // 16


_F32, _F64 = FLOAT_DTYPES


def require(**arrays) -> None:
    """TypeError naming the first required array argument that is None."""
    for name, a in arrays.items():
        if a is None:
            raise TypeError(f"{name} must be an array, got None")


def float_dtype(a, name: str) -> np.dtype:
    dt = getattr(a, "dtype", None)
    if dt is None:
        raise TypeError(f"{name} must be a float32 or float64 array, got "
                        f"{'None' if a is None else type(a).__name__}")
    if dt == _F32 or dt == _F64:
        return dt
    dt = np.dtype(dt)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


def same_dtype(ref, ref_name: str, other, other_name: str) -> None:
    if other is not None and other.dtype != ref.dtype:
        hint = ""
        if ref.dtype.kind == "f" and other.dtype.kind == "f":
            if other_name in ("weight", "bias"):
                # a float64 batch (NumPy's default) into a float32 layer or model
                hint = (f"; convert the input with {ref_name}.astype(np.{other.dtype}) "
                        f"(or the model with .astype(np.{ref.dtype}))")
            else:
                hint = f"; convert it with {other_name}.astype(np.{ref.dtype})"
        raise TypeError(f"{other_name} must have the dtype of {ref_name} ({ref.dtype}), "
                        f"got {other.dtype}{hint}")


def as_int(v, name: str, minimum: int | None = None, maximum: int = MAX_HYPER) -> int:
    if type(v) is int and (minimum is None or v >= minimum) and v <= maximum:
        return v
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}")
    v = int(v)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {v}")
    return v


def as_float(v, name: str, minimum=None, maximum=None, incl_max: bool = True) -> float:
    """A finite real number within [minimum, maximum] (or [minimum, maximum))."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__} {v!r}")
    v = float(v)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if maximum is not None and (v > maximum or (not incl_max and v == maximum)):
        raise ValueError(f"{name} must be {'<=' if incl_max else '<'} {maximum}, got {v}")
    return v


def flag(v, name: str) -> bool:
    """A bool (Python's or NumPy's), or the integers 0 and 1."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, numbers.Integral) and int(v) in (0, 1):
        return bool(v)
    raise TypeError(f"{name} must be a bool, got {type(v).__name__} {v!r}")


def axis(dim, ndim: int, name: str = "dim") -> int:
    """An axis of an ndim-D array, negative ones counted from the end."""
    d = as_int(dim, name, minimum=-ndim, maximum=max(ndim - 1, 0))
    return d % ndim if ndim else 0


def shape_eq(a, shape, name: str) -> None:
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(a.shape)}")


def pair(v, name: str, minimum: int | None = 1) -> tuple[int, int]:
    """An int or a pair of ints as (h, w)."""
    if type(v) is int and (minimum is None or v >= minimum) and v <= MAX_HYPER:
        return (v, v)
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
        return (as_int(v[0], name, minimum), as_int(v[1], name, minimum))
    if isinstance(v, np.ndarray) and v.shape == (2,):
        return pair(tuple(v.tolist()), name, minimum)
    v = as_int(v, name, minimum)
    return (v, v)


def batched(x, name: str = "x"):
    """(x as 4-D, was_unbatched) for a (C, H, W) or (N, C, H, W) array."""
    if x.ndim == 4:
        return x, False
    if x.ndim == 3:
        return x[None], True
    raise ValueError(f"{name} must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape "
                     f"{tuple(x.shape)}")


def out_size(size: int, k: int, s: int, p: int, d: int, name: str,
             ceil_mode: bool = False, what: str = "input") -> int:
    """Sliding-window output length: floor((size + 2p - d(k-1) - 1) / s) + 1.

    With ceil_mode the division rounds up, but no window may start in the
    right/bottom padding (PyTorch's rule)."""
    eff = d * (k - 1) + 1
    span = size + 2 * p
    if span < eff:
        raise ValueError(
            f"{name}: effective kernel size {eff} (kernel {k}, dilation {d}) is larger "
            f"than the padded {what} size {span} ({what} {size} + 2*padding {p})")
    num = span - eff
    o = (num + s - 1) // s + 1 if ceil_mode else num // s + 1
    if ceil_mode and (o - 1) * s >= size + p:
        o -= 1
    return o


def check_elems(shape, name: str) -> None:
    total = 1
    for s in shape:
        total *= s
    if total > MAX_ELEMS:
        raise ValueError(f"{name} would have {total} elements (shape {tuple(shape)}), "
                         f"more than the supported {MAX_ELEMS}")


# The C core hands these counts to a BLAS with 32-bit int sizes and leading
# dimensions (cc_conv_geom_check refuses them too, but only after the outputs
# exist); checking here refuses them before anything is allocated.
INT32_MAX = 2**31 - 1


def check_index32(name: str, **counts: int) -> None:
    """ValueError if any per-image count exceeds 2**31 - 1 (BLAS sizes are 32-bit)."""
    for what, v in counts.items():
        if int(v) > INT32_MAX:
            raise ValueError(f"{name}: {what} = {int(v)} exceeds the supported "
                             f"{INT32_MAX} (BLAS sizes are 32-bit); split the input")

