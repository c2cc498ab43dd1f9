"""CPU backend: the C core through its Cython bindings.

Every function takes arrays that the functional layer has validated, made
C-contiguous and allocated.  GEMMs run inside the core's own OpenMP teams, so
the BLAS behind them (SciPy's) is held at one thread for the duration of a
call and restored afterwards.
"""
from __future__ import annotations

import threading

import numpy as np

from convcore import _config
from convcore._core import _conv, _pool

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


class _SequentialBlas:
    """Holds SciPy's BLAS at one thread while any convcore call runs.

    Re-entrant across Python threads: the first caller in saves the BLAS
    thread count, the last one out restores it.
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

    def __enter__(self):
        with self._lock:
            if not self._looked:
                self._find()
            if self._depth == 0 and self._controller is not None:
                saved = self._controller.get_num_threads()
                if saved is not None and saved != 1:
                    self._controller.set_num_threads(1)
                    self._saved = saved
            self._depth += 1
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._saved is not None:
                self._controller.set_num_threads(self._saved)
                self._saved = None
        return False


sequential_blas = _SequentialBlas()


def _workspace(geom, dtype, n_images: int):
    """Column workspace for as many images as the budget allows (>= 1)."""
    per = _conv.workspace_elems(geom, 1)
    if per == 0:
        return np.empty(0, dtype=dtype)
    itemsize = np.dtype(dtype).itemsize
    budget = _config.get_workspace_limit() // itemsize
    chunk = max(1, min(n_images, budget // per))
    return np.empty(per * chunk, dtype=dtype)


def conv2d_forward(x, w, b, y, geom):
    work = _workspace(geom, x.dtype, geom[0])
    bias = b if b is not None else np.empty(0, dtype=x.dtype)
    with sequential_blas:
        _conv.conv2d_forward(x, w, bias, b is not None, work, y, geom,
                             _config.get_num_threads())


def conv2d_backward(dy, x, w, dx, dw, db, geom):
    work = _workspace(geom, x.dtype, geom[0])
    with sequential_blas:
        _conv.conv2d_backward(dy, x, w, work, dx, dw, db, geom,
                              _config.get_num_threads())


def im2col(x, cols, geom):
    _conv.im2col(x, cols, geom, _config.get_num_threads())


def col2im(cols, x, geom):
    _conv.col2im(cols, x, geom, _config.get_num_threads())


# ------------------------------------------------------------------ pooling
# geom = (N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW,
#         ceil_mode, count_include_pad, divisor_override or 0, generic)
_NO_INDICES = np.empty((0, 0, 0, 0), dtype=np.int64)


def max_pool2d_forward(x, y, idx, geom):
    _pool.max_pool2d_forward(x, y, _NO_INDICES if idx is None else idx, idx is not None,
                             geom, _config.get_num_threads())


def max_pool2d_backward(dy, idx, dx):
    _pool.max_pool2d_backward(dy, idx, dx, _config.get_num_threads())


def avg_pool2d_forward(x, y, geom):
    _pool.avg_pool2d_forward(x, y, geom, _config.get_num_threads())


def avg_pool2d_backward(dy, dx, geom):
    _pool.avg_pool2d_backward(dy, dx, geom, _config.get_num_threads())


def adaptive_avg_pool2d_forward(x, y):
    _pool.adaptive_avg_pool2d_forward(x, y, _config.get_num_threads())


def adaptive_avg_pool2d_backward(dy, dx):
    _pool.adaptive_avg_pool2d_backward(dy, dx, _config.get_num_threads())
