"""CPU backend: the C core through its Cython bindings.

Every function takes arrays that the functional layer has validated, made
C-contiguous and allocated.  GEMMs run inside the core's own OpenMP teams, so
SciPy's BLAS is held at one thread for the duration of a call and restored
afterwards (by the binding itself, see ``_bind_blas_threads``).
"""
from __future__ import annotations

import threading

import numpy as np

from convcore import _config, _plan
from convcore._core import _conv, _linear, _norm, _pool

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


def _bind_blas_threads():
    """Hand SciPy's BLAS set/get-num-threads functions to the binding, which
    holds the BLAS at one thread during each call (the core's GEMM tiles run
    inside its own OpenMP teams).  Returns a fallback context manager when the
    functions cannot be found (a BLAS that threadpoolctl does not know)."""
    import ctypes
    try:
        import scipy.linalg  # noqa: F401  (loads SciPy's BLAS)
        from threadpoolctl import ThreadpoolController
        ctls = [lc for lc in ThreadpoolController().lib_controllers
                if lc.user_api == "blas" and "scipy" in lc.filepath and "numpy" not in lc.filepath]
    except Exception:
        ctls = []
    for lc in ctls:
        lib = lc.dynlib
        for pre in ("scipy_openblas", "openblas", "scipy_openblas64_", ""):
            for suf in ("", "64_"):
                try:
                    setf = getattr(lib, f"{pre}_set_num_threads{suf}".lstrip("_"))
                    getf = getattr(lib, f"{pre}_get_num_threads{suf}".lstrip("_"))
                except AttributeError:
                    continue
                _conv.set_blas_thread_functions(ctypes.cast(setf, ctypes.c_void_p).value,
                                                ctypes.cast(getf, ctypes.c_void_p).value)
                return None
    if ctls:
        from threadpoolctl import threadpool_limits
        return lambda: threadpool_limits(1, user_api="blas")
    return None


_blas_fallback = []


def _blas_context():
    """A context manager factory that holds the BLAS at one thread, or None
    when the binding holds it itself (the usual case: no context needed)."""
    if not _blas_fallback:
        _blas_fallback.append(_bind_blas_threads())
    return _blas_fallback[0]


def _strategy(geom=None, itemsize=0, backward=False) -> int:
    """The C core picks its strategy from the shape and dtype;
    CONVCORE_CONV_STRATEGY ('tiles', 'batched', 'winograd', 'direct' or 'depthwise')
    forces one, for benchmarks and for users who want the direct sum's
    rounding in float32.  Otherwise a measured plan (convcore.tune) names one
    where it has an entry for the call."""
    s = _conv.env_strategy()
    if s == _conv.AUTO and _plan.active:
        s = _plan.active.get((geom, itemsize, backward, _config.get_num_threads()), s)
    return s


_reuse = threading.local()


def _buffer(nelems, dtype, budget):
    """nelems elements of workspace, reused by the calls of this thread.

    A fresh buffer of tens of megabytes is mapped and faulted in page by page
    on every call (about a tenth of a large layer's time); one kept per
    thread is not.  It is at most the budget (or one image's need, if that
    is larger), and a lower budget gives it up on the next call.
    """
    nbytes = nelems * np.dtype(dtype).itemsize
    buf = getattr(_reuse, "buf", None)
    if buf is None or buf.nbytes < nbytes or buf.nbytes > max(budget, nbytes):
        # (the old one is freed before the new one is made: no reference,
        # this local one included, may keep both alive at once)
        _reuse.buf = _reuse.last = buf = None
        buf = _reuse.buf = np.empty(nbytes, dtype=np.uint8)
    return buf[:nbytes].view(dtype)


_sizes: dict = {}


def _workspace(geom, dtype, strategy):
    """Workspace for as many images as the budget allows (at least one).

    The size depends on the geometry, dtype, strategy and budget alone; it is
    remembered for the last few hundred of those (a network's layers), which
    saves the size computations on every call; a call that repeats this
    thread's last one (the same geometry object, as the functional layer's
    memo hands out) gets the last buffer straight back."""
    limit = _config.get_workspace_limit()
    last = getattr(_reuse, "last", None)
    if (last is not None and last[0] is geom and last[1] is dtype and last[2] == strategy
            and last[3] == limit):
        return last[4]
    last = None                         # (lets _buffer free the old buffer first)
    work = _workspace_for(geom, dtype, strategy, limit)
    _reuse.last = (geom, dtype, strategy, limit, work)
    return work


def _workspace_for(geom, dtype, strategy, limit):
    itemsize = np.dtype(dtype).itemsize
    key = (geom, itemsize, strategy, limit)
    total = _sizes.get(key)
    if total is None:
        total = _workspace_elems(geom, itemsize, strategy, limit)
        if len(_sizes) >= 512:
            _sizes.clear()
        _sizes[key] = total
    if total == 0:
        return np.empty(0, dtype=dtype)
    return _buffer(total, dtype, limit // itemsize * itemsize)


def _workspace_elems(geom, itemsize, strategy, limit):
    # the C planner decides strategy, kernel crop, chunk and workspace
    return _conv.plan_workspace(geom, itemsize, strategy, limit // itemsize)


def conv2d_forward(x, w, b, y, geom):
    strategy = _strategy(geom, x.itemsize, False)
    work = _workspace(geom, x.dtype, strategy)
    bias = b if b is not None else np.empty(0, dtype=x.dtype)
    n = _config.get_num_threads()
    fb = _blas_context()
    if fb is None:
        _conv.conv2d_forward(x, w, bias, b is not None, strategy, work, y, geom, n)
        return
    with fb():
        _conv.conv2d_forward(x, w, bias, b is not None, strategy, work, y, geom, n)


def conv2d_backward(dy, x, w, dx, dw, db, geom):
    strategy = _strategy(geom, x.itemsize, True)
    work = _workspace(geom, x.dtype, strategy)
    n = _config.get_num_threads()
    fb = _blas_context()
    if fb is None:
        _conv.conv2d_backward(dy, x, w, strategy, work, dx, dw, db, geom, n)
        return
    with fb():
        _conv.conv2d_backward(dy, x, w, strategy, work, dx, dw, db, geom, n)


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


# ------------------------------------------------------- batch norm and relu
# Batch-norm tensors come as C-contiguous (N, C, L) views; absent per-channel
# arrays as None.  mean and var (float64, C) receive the statistics used.
def _or_empty(a, dtype):
    return np.empty(0, dtype=dtype) if a is None else a


def _bn_work(x):
    """Workspace for the per-chunk moments (a few percent of x's size)."""
    if x.shape[1] == 0:   # no channels: nothing to compute
        return np.empty(0, dtype=np.float64)
    return np.empty(_norm.workspace_elems(*x.shape), dtype=np.float64)


def batch_norm_forward(x, w, b, rmean, rvar, training, eps, y, mean, var):
    dt = x.dtype
    _norm.batch_norm_forward(x, _or_empty(w, dt), _or_empty(b, dt), _or_empty(rmean, dt),
                             _or_empty(rvar, dt), w is not None, b is not None, training,
                             eps, _bn_work(x), y, mean, var, _config.get_num_threads())


def batch_norm_backward(dy, x, w, rmean, rvar, training, eps, dx, dw, db):
    dt = x.dtype
    _norm.batch_norm_backward(dy, x, _or_empty(w, dt), _or_empty(rmean, dt),
                              _or_empty(rvar, dt), w is not None, training, eps, _bn_work(x),
                              dx, dw, db, _config.get_num_threads())


def cross_entropy(logits, target, scale, scale0, loss, grad):
    """Per-row losses and/or the gradient; False when a target is out of range."""
    return _norm.cross_entropy(logits, target, scale, scale0, loss, grad,
                               _config.get_num_threads())


def relu_forward(x, y):
    _norm.relu_forward(x, y, _config.get_num_threads())


def relu_backward(dy, x, dx):
    _norm.relu_backward(dy, x, dx, _config.get_num_threads())


# ------------------------------------------------------------------- linear
# 2-D C-contiguous operands: x (M, K), w (N, K), y (M, N).  The products run in
# the core's OpenMP team with SciPy's BLAS held sequential inside it, so a
# linear layer never wakes NumPy's BLAS thread pool.
def _with_sequential_blas(fn, *args):
    fb = _blas_context()
    if fb is None:
        fn(*args)
        return
    with fb():
        fn(*args)


def linear_forward(x, w, b, y):
    _with_sequential_blas(_linear.linear_forward, x, w, b, y, _config.get_num_threads())


def linear_backward(dy, x, w, dx, dw, db, accumulate):
    """dx, dw, db may be None; with accumulate, dw and db are added to."""
    _with_sequential_blas(_linear.linear_backward, dy, x, w, dx, dw, db, accumulate,
                          _config.get_num_threads())
