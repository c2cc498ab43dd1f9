"""CPU backend: the C core through its Cython bindings.

Every function takes arrays that the functional layer has validated, made
C-contiguous and allocated.  GEMMs run inside the core's own OpenMP teams, so
SciPy's BLAS is held at one thread for the duration of a call and restored
afterwards (by the binding itself, see ``_bind_blas_threads``).
"""
from __future__ import annotations

import math
import threading
from typing import NamedTuple

import numpy as np

from convcore import _config, _plan
from convcore._core import MALLOC_MMAP_THRESHOLD, _conv, _linear, _mem, _norm, _pool
from convcore.backends import _expr

name = "cpu"
xp = np


#: Outputs of at least this many bytes are faulted in with one call before a
#: kernel writes them: glibc maps them fresh (convcore's mmap threshold), and
#: two threads faulting in the same fresh array page by page sometimes took
#: 10-20x as long as one call (ReLU of a 12.8 MiB array at 2 threads: a median
#: of 0.71 ms, 5.8 ms at the 90th percentile and up to 17 ms, against 0.59,
#: 0.63 and 0.77 ms populated first).  Whole networks, 3 alternating rounds
#: each way: GoogLeNet training at batch 4 7 % and inference at batch 1 15 %
#: faster (median ratio to PyTorch), ResNet-50 training at batch 4 7 %,
#: ResNet-18 training at batch 16 7 %; ResNet-18 inference at batch 16 5 %
#: slower (two threads' faults were quicker there while they did not contend).
POPULATE_MIN_BYTES = MALLOC_MMAP_THRESHOLD


def empty(shape, dtype):
    """An uninitialised output array; large ones with their pages faulted in."""
    a = np.empty(shape, dtype=dtype)
    if a.nbytes >= POPULATE_MIN_BYTES:
        _mem.populate(a.__array_interface__["data"][0], a.nbytes)
    return a


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
                if lc.user_api == "blas" and _scipy_owned(lc.filepath)]
    except Exception:
        ctls = []
    libs = [lc.dynlib for lc in ctls] or _scipy_blas_from_maps()
    for lib in libs:
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


def _scipy_owned(path):
    """A library SciPy ships (not NumPy's own copy of OpenBLAS)."""
    return "scipy" in path and "numpy" not in path


def _scipy_blas_from_maps():
    """SciPy's OpenBLAS as loaded in this process, found in /proc/self/maps
    when threadpoolctl (a declared dependency) is missing: without a way to
    hold it at one thread, its own pool runs inside the core's OpenMP teams
    and a network's step was measured about 10x slower."""
    import ctypes
    try:
        import scipy.linalg  # noqa: F401
        with open("/proc/self/maps") as fh:
            fields = [line.split(None, 5) for line in fh]
    except (OSError, ImportError):
        return []
    paths = {f[5].strip() for f in fields if len(f) == 6}
    out = []
    for path in sorted(paths):
        base = path.rsplit("/", 1)[-1]
        if _scipy_owned(path) and "openblas" in base and ".so" in base:
            try:
                out.append(ctypes.CDLL(path))
            except OSError:
                pass
    return out


_blas_fallback = []


def _blas_context():
    """A context manager factory that holds the BLAS at one thread, or None
    when the binding holds it itself (the usual case: no context needed)."""
    if not _blas_fallback:
        _blas_fallback.append(_bind_blas_threads())
    return _blas_fallback[0]


def _with_sequential_blas(fn, *args):
    fb = _blas_context()
    if fb is None:
        fn(*args)
        return
    with fb():
        fn(*args)


def _request(geom, itemsize, backward) -> int:
    """The strategy asked of the C planner: AUTO (it picks from the shape and
    dtype) unless CONVCORE_CONV_STRATEGY ('tiles', 'batched', 'winograd',
    'direct' or 'depthwise') forces one -- for benchmarks, and for users who
    want the direct sum's rounding in float32 -- or a measured plan
    (convcore.tune) names one for the call."""
    s = _conv.env_strategy()
    if s == _conv.AUTO and _plan.active:
        s = _plan.active.get((geom, itemsize, backward, _config.get_num_threads()), s)
    return s


class ConvPlan(NamedTuple):
    """What the C planner decided for one call (see ``_conv.make_plan``)."""
    request: int      # the strategy asked for (AUTO unless forced or tuned)
    strategy: int     # the strategy that runs
    cropped: bool     # kernel taps that meet only padding are cropped away
    chunk: int        # images per chunk
    work_elems: int   # workspace elements for one chunk (either pass)


# The plans of recent calls, keyed by value: the geometry, the element size,
# the pass, the request and the workspace limit.  A network asks for the same
# few dozen again and again.
_plans: dict = {}


def plan(geom, dtype, backward=False) -> ConvPlan:
    """The plan of a convolution call on `geom` in `dtype` (cached)."""
    return _cached_plan(geom, np.dtype(dtype).itemsize, backward, _config.get_workspace_limit())


def _cached_plan(geom, itemsize, backward, limit, request=None):
    if request is None:
        request = _request(geom, itemsize, backward)
    key = (geom, itemsize, backward, request, limit)
    p = _plans.get(key)
    if p is None:
        p = ConvPlan(request, *_conv.make_plan(geom, itemsize, request, backward,
                                               limit // itemsize))
        if len(_plans) >= 512:
            _plans.clear()
        _plans[key] = p
    return p


class _Reuse(threading.local):
    buf = None      # this thread's workspace buffer (bytes)


_reuse = _Reuse()


def _workspace(nelems, dtype, limit):
    """nelems elements of workspace, reused by the calls of this thread.

    A fresh buffer of tens of megabytes is mapped and faulted in page by page
    on every call (about a tenth of a large layer's time); one kept per
    thread is not.  It is at most the workspace limit (or one chunk's need,
    if that is larger), and a lower limit gives it up on the next call.
    """
    if nelems == 0:
        return _NOTHING[dtype.char]
    nbytes = nelems * dtype.itemsize
    buf = _reuse.buf
    if buf is None or buf.nbytes < nbytes or buf.nbytes > (limit if limit > nbytes else nbytes):
        # (the old one is freed before the new one is made: no reference,
        # this local one included, may keep both alive at once)
        _reuse.buf = buf = None
        buf = _reuse.buf = np.empty(nbytes, dtype=np.uint8)
    return buf[:nbytes].view(dtype)


# empty arrays standing for "no workspace" and "no bias" (never written)
_NOTHING = {"f": np.empty(0, np.float32), "d": np.empty(0, np.float64)}


def _prepare(dtype, geom, backward):
    """(strategy request, workspace, threads) of a convolution call."""
    limit = _config.get_workspace_limit()
    p = _cached_plan(geom, dtype.itemsize, backward, limit)
    return p.request, _workspace(p.work_elems, dtype, limit), _config.get_num_threads()


def conv2d_forward(x, w, b, y, geom):
    request, work, n = _prepare(x.dtype, geom, False)
    has_bias = b is not None
    if not has_bias:
        b = _NOTHING[x.dtype.char]
    _with_sequential_blas(_conv.conv2d_forward, x, w, b, has_bias, request, work, y, geom, n)


def conv2d_packable(geom, dtype):
    """``(elements, kind)`` of the packed weights geom's forward pass runs
    faster from (made once: WINOGRAD's transformed weights, or the weights
    in a GEMM kernel's layout, kind ``_conv.PACK_GEMM``), ``(0, 0)``
    where none -- or where CONVCORE_CONV_STRATEGY or a measured plan decides
    the call's strategy.  The packed form depends on the weights and on
    `kind` alone."""
    if _request(geom, dtype.itemsize, False) != _conv.AUTO:
        return 0, 0
    return _conv.pack_elems(geom, dtype.itemsize)


def conv2d_pack(w, geom, nelems):
    """The packed form of the weights `w` for geom's forward pass."""
    packed = np.empty(nelems, dtype=w.dtype)
    _conv.pack(w, geom, packed, _config.get_num_threads())
    return packed


def conv2d_forward_packed(x, w, packed, b, y, geom, kind):
    """conv2d_forward from `packed` (conv2d_pack's, for these weights, of
    conv2d_packable's `kind`)."""
    limit = _config.get_workspace_limit()
    # (the GEMM form's columns of an image fit BATCHED's workspace)
    strategy = "batched" if kind == _conv.PACK_GEMM else "winograd"
    p = _cached_plan(geom, x.dtype.itemsize, False, limit, _conv.STRATEGIES[strategy])
    work = _workspace(p.work_elems, x.dtype, limit)
    has_bias = b is not None
    if not has_bias:
        b = _NOTHING[x.dtype.char]
    _with_sequential_blas(_conv.conv2d_forward_packed, x, w, packed, b, has_bias, work, y, geom,
                          _config.get_num_threads())


def conv2d_relu_maxpool2(x, w, b, geom):
    """max_pool2d(relu(conv2d(x, w, b)), 2, 2) in one pass, where the C core
    has it for `geom` and the convolution would run DIRECT along its rows
    anyway (so the result is the three calls' bits); else None."""
    if not _conv.relu_pool2_ok(geom):
        return None
    p = _cached_plan(geom, x.dtype.itemsize, False, _config.get_workspace_limit())
    if p.strategy != _conv.DIRECT or p.cropped:
        return None
    y = np.empty((geom.N, geom.K, geom.OH // 2, geom.OW // 2), dtype=x.dtype)
    has_bias = b is not None
    _conv.conv2d_relu_pool2_forward(x, w, b if has_bias else _NOTHING[x.dtype.char], has_bias,
                                    y, geom, _config.get_num_threads())
    return y


def conv2d_backward(dy, x, w, dx, dw, db, geom):
    request, work, n = _prepare(x.dtype, geom, True)
    _with_sequential_blas(_conv.conv2d_backward, dy, x, w, request, work, dx, dw, db, geom, n)


def conv2d_backward_input(dy, w, dx, geom):
    """The input gradient alone (a transposed convolution's forward pass).
    The planner's data check looks at the input's magnitudes: zeros of its
    shape (calloc'd, so untouched pages cost no memory) keep the strategy
    choice deterministic."""
    x = np.zeros((geom.N, geom.C, geom.H, geom.W), dtype=dy.dtype)
    conv2d_backward(dy, x, w, dx, None, None, geom)


def im2col(x, cols, geom):
    _conv.im2col(x, cols, geom, _config.get_num_threads())


def col2im(cols, x, geom):
    _conv.col2im(cols, x, geom, _config.get_num_threads())


# ------------------------------------------------------------------ pooling
# geom: a convcore._geometry.PoolGeom
_NO_INDICES = np.empty((0, 0, 0, 0), dtype=np.int64)


def max_pool2d_forward(x, y, idx, geom):
    _pool.max_pool2d_forward(x, y, _NO_INDICES if idx is None else idx, idx is not None,
                             geom, _config.get_num_threads())


# Largest plane (H * W elements) whose flat indices fit in int32.
INT32_PLANE = 2**31 - 1


def index_dtype(plane):
    """The dtype of the max-pooling indices a layer keeps for its backward
    pass: int32 (half of int64's memory) while every index of a plane of
    `plane` elements fits, else int64."""
    return np.dtype(np.int32) if plane <= INT32_PLANE else np.dtype(np.int64)


def max_pool2d_backward(dy, idx, dx):
    # int32 indices (the layers' compact copy) go to the C core as they are
    if idx.dtype != np.int32 and idx.dtype != np.int64:
        idx = idx.astype(np.int64)
    _pool.max_pool2d_backward(dy, np.ascontiguousarray(idx), dx, _config.get_num_threads())


def avg_pool2d_forward(x, y, geom):
    _pool.avg_pool2d_forward(x, y, geom, _config.get_num_threads())


def avg_pool2d_backward(dy, dx, geom):
    _pool.avg_pool2d_backward(dy, dx, geom, _config.get_num_threads())


def adaptive_avg_pool2d_forward(x, y):
    _pool.adaptive_avg_pool2d_forward(x, y, _config.get_num_threads())


def adaptive_avg_pool2d_backward(dy, dx):
    _pool.adaptive_avg_pool2d_backward(dy, dx, _config.get_num_threads())


# ------------------------------------------- batch norm, relu, cross-entropy
# Up to this many elements one NumPy expression costs less than entering the
# C core (buffer acquisition and a team of one); the results are the same.
RELU_SMALL = 2048


def relu(x):
    if x.ndim and x.flags.c_contiguous and x.size > RELU_SMALL:
        y = empty(x.shape, x.dtype)
        _norm.relu_forward(x.reshape(-1), y.reshape(-1), _config.get_num_threads())
        return y
    return _expr.relu(np, x)


def _rows(a):
    """`a` (2-D or more) as a (rows, len) view whose rows are contiguous and
    lie apart in order -- a channel slice of a C-contiguous batch, such as
    a branch's part of a concatenation -- or None."""
    if a.ndim < 2 or a.size == 0:
        return None
    expect = a.itemsize
    for d in range(a.ndim - 1, 0, -1):
        if a.shape[d] != 1 and a.strides[d] != expect:
            return None
        expect *= a.shape[d]
    if a.shape[0] > 1 and a.strides[0] < expect:
        return None
    return np.lib.stride_tricks.as_strided(a, (a.shape[0], expect // a.itemsize),
                                           (a.strides[0] if a.shape[0] > 1 else expect,
                                            a.itemsize))


def relu_backward(dy, x):
    if x.ndim and x.flags.c_contiguous and dy.flags.c_contiguous and x.size > RELU_SMALL:
        dx = empty(x.shape, x.dtype)
        _norm.relu_backward(dy.reshape(-1), x.reshape(-1), dx.reshape(-1),
                            _config.get_num_threads())
        return dx
    if x.size > RELU_SMALL and dy.shape == x.shape and dy.dtype == x.dtype:
        rd, rx = _rows(dy), _rows(x)
        if rd is not None and rx is not None:
            # (slices of a concatenation's gradient and output: one pass)
            dx = empty(x.shape, x.dtype)
            _norm.relu_backward_rows(rd, rx, dx.reshape(rd.shape), _config.get_num_threads())
            return dx
    return _expr.relu_backward(np, dy, x)


def relu_into(x, out):
    """out = relu(x), NaN propagating (`out` of x's shape and dtype, e.g. a
    branch's slice of a concatenation; not overlapping x); returns out."""
    if x.size > RELU_SMALL and out.shape == x.shape and out.dtype == x.dtype:
        rx, ro = _rows(x), _rows(out)
        if rx is not None and ro is not None and ro.flags.writeable \
                and not np.may_share_memory(x, out):
            _norm.relu_forward_rows(rx, ro, _config.get_num_threads())
            return out
    return np.maximum(x, np.zeros((), x.dtype), out=out)


def relu_inplace(x):
    """x = relu(x), in place (NaN propagates, -0 becomes +0); returns x."""
    if x.ndim and x.flags.c_contiguous and x.flags.writeable and x.size > RELU_SMALL:
        flat = x.reshape(-1)
        _norm.relu_forward(flat, flat, _config.get_num_threads())
        return x
    return _expr.relu_inplace(np, x)


def _add_inplace(a, b, relu):
    """a += b (then a = relu(a)), one parallel pass where the C core can take
    the pair: large, contiguous, same shape and dtype, a writable, apart."""
    if (a.ndim and a.size > RELU_SMALL and a.shape == b.shape and a.dtype == b.dtype
            and a.flags.c_contiguous and b.flags.c_contiguous and a.flags.writeable
            and not np.may_share_memory(a, b)):
        _norm.add(a.reshape(-1), b.reshape(-1), relu, _config.get_num_threads())
        return a
    a += b
    return relu_inplace(a) if relu else a


def add_relu_inplace(h, s):
    """h = relu(h + s) in place (a residual block's sum and ReLU); returns h."""
    return _add_inplace(h, s, True)


def add_inplace(a, b):
    """a += b; returns a."""
    return _add_inplace(a, b, False)


def relu_mask(x, inplace):
    """(relu(x), the bool mask y > 0) in one pass; with ``inplace`` y is x."""
    if x.ndim and x.flags.c_contiguous and x.size > RELU_SMALL:
        y = x if inplace else empty(x.shape, x.dtype)
        mask = empty(x.shape, np.bool_)
        _norm.relu_forward_mask(x.reshape(-1), y.reshape(-1), mask.reshape(-1).view(np.uint8),
                                _config.get_num_threads())
        return y, mask
    return _expr.relu_mask(np, x, inplace)


def relu_backward_mask(dy, mask):
    """dy where ``mask`` (a bool array of dy's shape), else exactly 0."""
    if (mask.ndim and mask.flags.c_contiguous and dy.flags.c_contiguous
            and mask.size > RELU_SMALL):
        dx = empty(dy.shape, dy.dtype)
        _norm.relu_backward_mask(dy.reshape(-1), mask.reshape(-1).view(np.uint8),
                                 dx.reshape(-1), _config.get_num_threads())
        return dx
    return _expr.relu_backward_mask(np, dy, mask)


def _ncl(a):
    """a as a C-contiguous (N, C, L) array (a copy only when a is not C-contiguous)."""
    a = np.ascontiguousarray(a)
    return a.reshape(a.shape[0], a.shape[1], math.prod(a.shape[2:]))


def _vec(a, dtype):
    return np.empty(0, dtype=dtype) if a is None else np.ascontiguousarray(a)


def _bn_work(x3):
    """Workspace for the per-chunk moments (a few percent of x's size)."""
    if x3.shape[1] == 0:   # no channels: nothing to compute
        return np.empty(0, dtype=np.float64)
    return np.empty(_norm.workspace_elems(*x3.shape), dtype=np.float64)


def batch_norm(x, weight, bias, mean, var, training, eps, saved=False):
    """(y, mean, var) for an (N, C, ...) array: with `training` the batch
    statistics (biased variance, in x's dtype) are computed and returned;
    otherwise `mean` and `var` (the running statistics) are used.  With
    `saved` (training), (y, mean, var, saved): the float64 statistics for
    :func:`batch_norm_backward`'s `saved`."""
    dt = x.dtype
    x3 = _ncl(x)
    y = empty(x.shape, dt)
    m64 = np.empty(x.shape[1], dtype=np.float64)
    v64 = np.empty(x.shape[1], dtype=np.float64)
    _norm.batch_norm_forward(x3, _vec(weight, dt), _vec(bias, dt),
                             _vec(None if training else mean, dt),
                             _vec(None if training else var, dt), weight is not None,
                             bias is not None, training, eps, _bn_work(x3), y.reshape(x3.shape),
                             m64, v64, _config.get_num_threads())
    if training:
        if saved:
            return y, m64.astype(dt), v64.astype(dt), (m64, v64)
        return y, m64.astype(dt), v64.astype(dt)
    return y, mean, var


def batch_norm_backward(dy, x, weight, mean, var, training, eps, saved=None):
    """(grad_input, grad_weight, grad_bias); see batch_norm's `training`.
    `saved` (training): batch_norm's float64 statistics of this x, which
    spare the kernel computing them again (one pass over x and dy instead of
    two)."""
    dt = x.dtype
    x3, dy3 = _ncl(x), _ncl(dy)
    C = x.shape[1]
    gx = empty(x.shape, dt)
    gw, gb = np.empty(C, dtype=dt), np.empty(C, dtype=dt)
    _norm.batch_norm_backward(dy3, x3, _vec(weight, dt), _vec(None if training else mean, dt),
                              _vec(None if training else var, dt), weight is not None,
                              training, eps, _bn_work(x3), gx.reshape(x3.shape), gw, gb,
                              _config.get_num_threads(), *(saved if training and saved else ()))
    return gx, gw, gb


def local_response_norm(x, size, alpha, beta, k):
    x3 = _ncl(x)
    y = empty(x.shape, x.dtype)
    _norm.lrn_forward(x3, y.reshape(x3.shape), size, alpha, beta, k,
                      _config.get_num_threads())
    return y


def local_response_norm_backward(dy, x, size, alpha, beta, k):
    x3, dy3 = _ncl(x), _ncl(dy)
    dx = empty(x.shape, x.dtype)
    _norm.lrn_backward(dy3, x3, dx.reshape(x3.shape), size, alpha, beta, k,
                       _config.get_num_threads())
    return dx


def _ce(logits, target, scale, scale0, loss, grad):
    """The fused C kernel: per-row losses and/or the gradient; False when a
    target is out of range."""
    t = np.ascontiguousarray(target, dtype=np.int64)   # uint64 past int64 turns negative
    return _norm.cross_entropy(np.ascontiguousarray(logits), t, scale, scale0, loss, grad,
                               _config.get_num_threads())


def cross_entropy(logits, target, reduction):
    """The loss of (N, num_classes) logits against integer targets, reduced by
    'mean', 'sum' or 'none'; None where a target lies outside the classes."""
    per64 = np.empty(logits.shape[0], np.float64)    # rows summed in double
    if not _ce(logits, target, None, 0.0, per64, None):
        return None
    if reduction == "none":
        return per64.astype(logits.dtype)
    total = np.add.reduce(per64)     # (ndarray.mean costs more than the kernel)
    if reduction == "sum":
        return logits.dtype.type(total)
    return logits.dtype.type(total / per64.size if per64.size else np.nan)


def cross_entropy_backward(logits, target, reduction, grad_output):
    """The loss's gradient; `grad_output` a number, or per row for 'none'.
    None where a target lies outside the classes."""
    N = logits.shape[0]
    g = np.empty(logits.shape, logits.dtype)
    scale = None
    if reduction == "none":
        go = np.asarray(grad_output, dtype=np.float64)
        if go.ndim:
            scale = np.ascontiguousarray(go)
        scale0 = float(go) if not go.ndim else 0.0
    else:
        scale0 = float(grad_output) / (N if reduction == "mean" and N else 1)
    return g if _ce(logits, target, scale, scale0, None, g) else None


# ------------------------------------------------------------------- linear
# 2-D C-contiguous operands: x (M, K), w (N, K), y (M, N).  The products run in
# the core's OpenMP team with SciPy's BLAS held sequential inside it, so a
# linear layer never wakes NumPy's BLAS thread pool.
def linear_forward(x, w, b, y):
    _with_sequential_blas(_linear.linear_forward, x, w, b, y, _config.get_num_threads())


def linear_backward(dy, x, w, dx, dw, db, accumulate):
    """dx, dw, db may be None; with accumulate, dw and db are added to."""
    _with_sequential_blas(_linear.linear_backward, dy, x, w, dx, dw, db, accumulate,
                          _config.get_num_threads())
