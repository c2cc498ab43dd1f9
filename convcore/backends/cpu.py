"""CPU backend: the C core through its Cython bindings.

Every function takes arrays that the functional layer has validated, made
C-contiguous and allocated.  GEMMs run inside the core's own OpenMP teams, so
SciPy's BLAS is held at one thread for the duration of a call and restored
afterwards.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager

import numpy as np

from convcore import _config
from convcore._core import _conv

name = "cpu"
xp = np


def empty(shape, dtype):
    return np.empty(shape, dtype=dtype)


def zeros(shape, dtype):
    return np.zeros(shape, dtype=dtype)


def ascontiguous(a):
    return np.ascontiguousarray(a)


def to_numpy(a):
    return a


class _BlasThreads:
    """Sets SciPy's BLAS thread count for the duration of convcore calls.

    ``with blas_threads(1):`` holds the BLAS at one thread while the core runs
    its GEMM tiles inside its own OpenMP teams, and restores the previous count
    when the last concurrent caller leaves.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = None
        self._controller = None
        self._looked = False

    def _find(self):
        self._looked = True
        try:
            import scipy.linalg  # noqa: F401  (loads SciPy's BLAS)
            from threadpoolctl import ThreadpoolController
            for lc in ThreadpoolController().lib_controllers:
                if lc.user_api == "blas" and "scipy" in lc.filepath and "numpy" not in lc.filepath:
                    self._controller = lc
                    return
        except Exception:  # threadpoolctl missing or broken: nothing to hold
            self._controller = None

    @contextmanager
    def __call__(self, n):
        with self._lock:
            if not self._looked:
                self._find()
            ctl = self._controller
            if ctl is not None:
                if self._depth == 0:
                    self._saved = ctl.get_num_threads()
                if ctl.get_num_threads() != n:
                    ctl.set_num_threads(n)
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and ctl is not None and self._saved is not None:
                    if ctl.get_num_threads() != self._saved:
                        ctl.set_num_threads(self._saved)
                    self._saved = None


blas_threads = _BlasThreads()

_STRATEGIES = {"tiles": _conv.TILES, "batched": _conv.BATCHED}


def _strategy() -> int:
    """The C core picks its strategy from the shape; CONVCORE_CONV_STRATEGY
    ('tiles' or 'batched') forces one, for benchmarks."""
    return _STRATEGIES.get(os.environ.get("CONVCORE_CONV_STRATEGY", ""), _conv.AUTO)


def _workspace(geom, dtype, strategy):
    """Workspace for as many images as the budget allows (at least one)."""
    per = _conv.workspace_elems(geom, 1, strategy)
    if per == 0:
        return np.empty(0, dtype=dtype)
    if per < 0:
        raise ValueError(f"convolution too large for one image: geometry {geom}")
    itemsize = np.dtype(dtype).itemsize
    budget = _config.get_workspace_limit() // itemsize
    chunk = max(1, min(geom[0], budget // per))
    while chunk > 1 and _conv.workspace_elems(geom, chunk, strategy) < 0:
        chunk //= 2
    return np.empty(per * chunk, dtype=dtype)


def conv2d_forward(x, w, b, y, geom):
    strategy = _strategy()
    work = _workspace(geom, x.dtype, strategy)
    bias = b if b is not None else np.empty(0, dtype=x.dtype)
    n = _config.get_num_threads()
    with blas_threads(1):
        _conv.conv2d_forward(x, w, bias, b is not None, strategy, work, y, geom, n)


def conv2d_backward(dy, x, w, dx, dw, db, geom):
    strategy = _strategy()
    work = _workspace(geom, x.dtype, strategy)
    n = _config.get_num_threads()
    with blas_threads(1):
        _conv.conv2d_backward(dy, x, w, strategy, work, dx, dw, db, geom, n)


def im2col(x, cols, geom):
    _conv.im2col(x, cols, geom, _config.get_num_threads())


def col2im(cols, x, geom):
    _conv.col2im(cols, x, geom, _config.get_num_threads())
