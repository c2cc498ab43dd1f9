"""CUDA backend: CuPy arrays, the kernels of ``kernels/*.cu`` and cuBLAS.

The same function names as :mod:`convcore.backends.cpu`; every function takes
arrays that the functional layer has validated, made C-contiguous and
allocated.  im2col/col2im and pooling run as CuPy ``RawModule`` kernels
compiled once per device and dtype (and cached); GEMMs go through
``cupy.matmul`` (cuBLAS), one batched call per chunk for every group.

CuPy is optional and imported on first use: without it, asking for the GPU
raises an ImportError that says how to install it.  CuPy keeps TF32 off for
float32 GEMMs unless ``CUPY_TF32=1`` is set, so results agree with the CPU
path to float32 rounding.
"""
from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np

from convcore.backends import _expr

name = "cuda"

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
KERNEL_FILES = ("common.cuh", "conv.cu", "pool.cu")
# Every kernel template in the .cu files; each is instantiated for both dtypes.
KERNELS = (
    "cc_im2col",
    "cc_col2im",
    "cc_max_pool2d_fwd",
    "cc_max_pool2d_bwd",
    "cc_max_pool2d_bwd_sorted",
    "cc_avg_pool2d_fwd",
    "cc_avg_pool2d_bwd",
    "cc_adaptive_avg_pool2d_fwd",
    "cc_adaptive_avg_pool2d_bwd",
)
CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
NVRTC_OPTIONS = ("-std=c++14",)
THREADS = 256
MAX_BLOCKS = 65536  # grid-stride loops cover any larger size

INSTALL_HINT = ('convcore\'s GPU path needs CuPy: pip install "convcore[cuda]" '
                '(or the cupy-cuda12x / cupy-cuda13x wheel that matches your CUDA driver)')

_cp = None
_lock = threading.Lock()
_modules = {}


def _cupy():
    """The cupy module, imported on first use."""
    global _cp
    if _cp is None:
        try:
            import cupy
        except ImportError as e:
            raise ImportError(INSTALL_HINT) from e
        _cp = cupy
    return _cp


def __getattr__(attr):
    # ``cuda.xp`` is the array module, resolved lazily so that importing this
    # backend never needs CuPy.
    if attr == "xp":
        return _cupy()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def is_available() -> bool:
    """Whether CuPy imports and sees at least one CUDA device."""
    try:
        cp = _cupy()
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _require_device():
    cp = _cupy()
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver, no device
        raise RuntimeError(f"CuPy is installed but no CUDA device is usable: {e}") from e
    if n == 0:
        raise RuntimeError("CuPy is installed but no CUDA device was found")
    return cp


# --------------------------------------------------------------------------
# kernel source and compilation
# --------------------------------------------------------------------------

def kernel_source() -> str:
    """All kernels as one translation unit (the shared header inlined).

    The header is inlined rather than included so that CuPy's on-disk cache,
    keyed by the source text, sees every change to it.
    """
    parts = []
    for fname in KERNEL_FILES:
        text = (KERNEL_DIR / fname).read_text()
        parts.append(re.sub(r'^#include "common\.cuh"\s*$', "", text, flags=re.M))
    return "\n".join(parts)


def name_expressions(dtype=None):
    """Template instantiations to compile: ``"cc_im2col<float>"`` and so on."""
    dts = [np.dtype(dtype)] if dtype is not None else list(CTYPES)
    return [f"{k}<{CTYPES[dt]}>" for dt in dts for k in KERNELS]


def _module(dtype):
    """The compiled RawModule for this dtype on the current device (cached)."""
    cp = _cupy()
    dt = np.dtype(dtype)
    key = (cp.cuda.runtime.getDevice(), dt)
    mod = _modules.get(key)
    if mod is None:
        with _lock:
            mod = _modules.get(key)
            if mod is None:
                mod = cp.RawModule(code=kernel_source(), options=NVRTC_OPTIONS,
                                   name_expressions=name_expressions(dt))
                mod.compile()
                _modules[key] = mod
    return mod


def _launch(kernel, dtype, total, args):
    """Runs kernel<dtype> over `total` elements in a grid-stride loop."""
    if total <= 0:
        return
    blocks = int(min(MAX_BLOCKS, (total + THREADS - 1) // THREADS))
    _run_kernel(kernel, np.dtype(dtype), blocks, THREADS, args)


def _run_kernel(kernel, dtype, blocks, threads, args):
    """Launches kernel<dtype> on a 1-D grid (the tests swap in a CPU runner)."""
    fn = _module(dtype).get_function(f"{kernel}<{CTYPES[dtype]}>")
    fn((blocks,), (threads,), args)


def _i64(*vals):
    return tuple(np.int64(v) for v in vals)


# --------------------------------------------------------------------------
# arrays
# --------------------------------------------------------------------------

def empty(shape, dtype):
    return _cupy().empty(shape, dtype=dtype)


def zeros(shape, dtype):
    return _cupy().zeros(shape, dtype=dtype)


def ascontiguous(a):
    return _cupy().ascontiguousarray(a)


def to_numpy(a):
    """The array in host memory as a NumPy array.

    Parameters
    ----------
    a : numpy.ndarray or cupy.ndarray

    Returns
    -------
    numpy.ndarray
        `a` itself when it is already a NumPy array, else a host copy.

    Examples
    --------
    >>> import numpy as np
    >>> from convcore.backends import cuda
    >>> x = np.ones(3)
    >>> cuda.to_numpy(x) is x
    True
    """
    if isinstance(a, np.ndarray):
        return a
    return _cupy().asnumpy(a)


def to_host(a):
    """Same as :func:`to_numpy`: the array in host memory.

    Examples
    --------
    >>> import numpy as np
    >>> from convcore.backends import cuda
    >>> cuda.to_host(np.arange(3))
    array([0, 1, 2])
    """
    return to_numpy(a)


def to_device(a, device=None):
    """A CuPy copy of `a` on a CUDA device.

    Parameters
    ----------
    a : array_like
        NumPy array (or anything ``cupy.asarray`` takes).
    device : int, optional
        Device ordinal; default the current device.

    Returns
    -------
    cupy.ndarray

    Raises
    ------
    ImportError
        CuPy is not installed (the message says ``pip install "convcore[cuda]"``).
    RuntimeError
        CuPy is installed but no CUDA device is usable.

    Examples
    --------
    >>> import numpy as np
    >>> from convcore.backends import cuda
    >>> xd = cuda.to_device(np.ones((2, 2)))   # doctest: +SKIP
    >>> type(xd).__module__.split(".")[0]      # doctest: +SKIP
    'cupy'
    """
    cp = _require_device()
    if device is None:
        return cp.asarray(a)
    with cp.cuda.Device(int(device)):
        return cp.asarray(a)


# --------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------

def _chunk(geom, itemsize, copies):
    """Images per chunk so that `copies` column buffers fit the budget."""
    from convcore import _config
    N = geom.N
    per = geom.C * geom.KH * geom.KW * geom.OH * geom.OW * itemsize * copies
    if per == 0:
        return max(N, 1)
    return max(1, min(max(N, 1), _config.get_workspace_limit() // per))


def _is_pointwise(geom):
    g = geom
    return g.KH == 1 and g.KW == 1 and g.SH == 1 and g.SW == 1 and g.PH == 0 and g.PW == 0


def _im2col_args(x, geom, nb, cols):
    N, C, H, W, K, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, G = geom
    return (x,) + _i64(nb, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW) + (cols,)


def im2col(x, cols, geom):
    g = geom
    _launch("cc_im2col", x.dtype, g.N * g.C * g.KH * g.KW * g.OH * g.OW,
            _im2col_args(x, geom, g.N, cols))


def col2im(cols, x, geom):
    g = geom
    _launch("cc_col2im", x.dtype, g.N * g.C * g.H * g.W, _im2col_args(cols, geom, g.N, x))


def conv2d_forward(x, w, b, y, geom):
    cp = _cupy()
    N, C, H, W, K, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, G = geom
    L, Cg, Kg = OH * OW, C // G, K // G
    CKKg = Cg * KH * KW
    wm = w.reshape(G, Kg, CKKg)
    pointwise = _is_pointwise(geom)
    B = _chunk(geom, x.dtype.itemsize, 1)
    work = None if pointwise else cp.empty((B, C * KH * KW, L), dtype=x.dtype)
    for n0 in range(0, N, B):
        nb = min(B, N - n0)
        xc = x[n0:n0 + nb]
        if pointwise:
            cols = xc.reshape(nb, G, CKKg, L)
        else:
            im2col(xc, work[:nb], geom.with_batch(nb))
            cols = work[:nb].reshape(nb, G, CKKg, L)
        # (G, Kg, CKKg) @ (nb, G, CKKg, L) -> (nb, G, Kg, L): one batched GEMM
        cp.matmul(wm, cols, out=y[n0:n0 + nb].reshape(nb, G, Kg, L))
    if b is not None:
        y += b.reshape(1, K, 1, 1)


def conv2d_backward_input(dy, w, dx, geom):
    """The input gradient alone (a transposed convolution's forward pass)."""
    conv2d_backward(dy, dx, w, dx, None, None, geom)   # (x is read for its dtype only)


def conv2d_relu_maxpool2(x, w, b, geom):
    """No one-pass convolution + ReLU + pooling kernel here: None (the
    caller runs the three ops)."""
    return None


def conv2d_backward(dy, x, w, dx, dw, db, geom):
    """dx, dw, db in place; any of them may be None (not wanted)."""
    cp = _cupy()
    N, C, H, W, K, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, G = geom
    L, Cg, Kg = OH * OW, C // G, K // G
    CKKg = Cg * KH * KW
    if db is not None:
        if N == 0:
            db.fill(0)
        else:
            cp.sum(dy, axis=(0, 2, 3), out=db)
    if dw is not None:
        dw.fill(0)
    if N == 0 or (dx is None and dw is None):
        return
    wT = w.reshape(G, Kg, CKKg).transpose(0, 2, 1)  # (G, CKKg, Kg)
    dy4 = dy.reshape(N, G, Kg, L)
    pointwise = _is_pointwise(geom)
    # the column buffer, and its (G, nb*L, CKKg) transpose for the dW GEMM
    B = _chunk(geom, x.dtype.itemsize, 2 if dw is not None else 1)
    work = None if pointwise else cp.empty((B, C * KH * KW, L), dtype=x.dtype)
    for n0 in range(0, N, B):
        nb = min(B, N - n0)
        sub = geom.with_batch(nb)
        dyc = dy4[n0:n0 + nb]
        if dw is not None:
            xc = x[n0:n0 + nb]
            if pointwise:
                cols = xc.reshape(nb, G, CKKg, L)
            else:
                im2col(xc, work[:nb], sub)
                cols = work[:nb].reshape(nb, G, CKKg, L)
            # dW += dy · colᵀ over the whole chunk: batch and positions form
            # one reduction axis of length nb*L, one GEMM per group.
            dyT = dyc.transpose(1, 2, 0, 3).reshape(G, Kg, nb * L)
            colT = cols.transpose(1, 0, 3, 2).reshape(G, nb * L, CKKg)
            dw.reshape(G, Kg, CKKg)[...] += cp.matmul(dyT, colT)
        if dx is not None:
            # dcol = Wᵀ · dy, then col2im (a gather) into dx
            if pointwise:
                cp.matmul(wT, dyc, out=dx[n0:n0 + nb].reshape(nb, G, CKKg, L))
            else:
                cp.matmul(wT, dyc, out=work[:nb].reshape(nb, G, CKKg, L))
                col2im(work[:nb], dx[n0:n0 + nb], sub)


# --------------------------------------------------------------------------
# pooling
#   geometry: a convcore._geometry.PoolGeom; its `generic` (a CPU fast-path
#   switch) is ignored here.
# --------------------------------------------------------------------------

def max_pool2d_forward(x, y, indices, geom):
    """y and (when `indices` is not None) the flat argmax of every window."""
    N, C, OH, OW = geom.N, geom.C, geom.OH, geom.OW
    if indices is None:
        indices = _cupy().empty(y.shape, dtype=np.int64)
    _launch("cc_max_pool2d_fwd", x.dtype, N * C * OH * OW,
            (x,) + _i64(*geom[:14]) + (y, indices))


def index_dtype(plane):
    """The dtype of the max-pooling indices a layer keeps: int64 always."""
    return np.dtype(np.int64)


def max_pool2d_backward(dy, indices, dx, geom=None):
    """dx[i] = sum of dy[o] over the outputs o whose argmax is i.

    With the pooling geometry the kernel enumerates the windows that cover
    each input pixel.  Without it (only the indices known), the outputs are
    sorted by (target pixel, position) and each pixel sums its run of equal
    targets; both are gathers, deterministic and free of atomics.
    Raises ValueError for an index outside [0, H*W).
    """
    cp = _cupy()
    if indices.dtype != np.int64:
        indices = indices.astype(np.int64)
    indices = cp.ascontiguousarray(indices)
    N, C, H, W = (int(s) for s in dx.shape)
    OH, OW = int(dy.shape[-2]), int(dy.shape[-1])
    n_in, n_out = N * C * H * W, N * C * OH * OW
    if n_out == 0:
        dx.fill(0)
        return
    lo, hi = (int(v) for v in cp.asnumpy(cp.stack([indices.min(), indices.max()])))
    if lo < 0 or hi >= H * W:
        raise ValueError(f"indices must lie in [0, H*W) = [0, {H * W}) for input planes "
                         f"of {H}x{W}; got an index outside that range")
    if geom is not None:
        _launch("cc_max_pool2d_bwd", dx.dtype, n_in,
                (dy, indices) + _i64(*geom[:14]) + (dx,))
        return
    plane = cp.arange(N * C, dtype=cp.int64).reshape(N, C, 1, 1) * (H * W)
    keys = (indices.reshape(N, C, OH, OW).astype(cp.int64) + plane).ravel()
    if n_in * n_out < 2**62:
        # unique keys (target, position): the order is fixed whatever the sort
        pos = cp.arange(n_out, dtype=cp.int64)
        order = cp.argsort(keys * n_out + pos).astype(cp.int64)
    else:
        order = cp.argsort(keys).astype(cp.int64)  # CuPy's sort is stable
    keys = keys[order]
    _launch("cc_max_pool2d_bwd_sorted", dx.dtype, n_in,
            (dy, keys, order) + _i64(n_out, n_in) + (dx,))


def _avg_args(geom):
    N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW = geom[:14]
    cip, div = geom.count_include_pad, geom.divisor
    return _i64(N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW,
                int(bool(cip)), 0 if div is None else int(div))


def avg_pool2d_forward(x, y, geom):
    N, C, OH, OW = geom.N, geom.C, geom.OH, geom.OW
    _launch("cc_avg_pool2d_fwd", x.dtype, N * C * OH * OW, (x,) + _avg_args(geom) + (y,))


def avg_pool2d_backward(dy, dx, geom):
    N, C, H, W = geom.N, geom.C, geom.H, geom.W
    _launch("cc_avg_pool2d_bwd", dx.dtype, N * C * H * W, (dy,) + _avg_args(geom) + (dx,))


def adaptive_avg_pool2d_forward(x, y):
    N, C, H, W = (int(s) for s in x.shape)
    OH, OW = int(y.shape[-2]), int(y.shape[-1])
    _launch("cc_adaptive_avg_pool2d_fwd", x.dtype, N * C * OH * OW,
            (x,) + _i64(N, C, H, W, OH, OW) + (y,))


def adaptive_avg_pool2d_backward(dy, dx):
    N, C, H, W = (int(s) for s in dx.shape)
    OH, OW = int(dy.shape[-2]), int(dy.shape[-1])
    _launch("cc_adaptive_avg_pool2d_bwd", dx.dtype, N * C * H * W,
            (dy,) + _i64(N, C, H, W, OH, OW) + (dx,))


# ------------------------------------------------------------------- linear
# 2-D C-contiguous operands as on the CPU backend; the products in cuBLAS.
def linear_forward(x, w, b, y):
    cp = _cupy()
    cp.matmul(x, w.T, out=y)
    if b is not None:
        y += b


def linear_backward(dy, x, w, dx, dw, db, accumulate):
    cp = _cupy()
    if dx is not None:
        cp.matmul(dy, w, out=dx)
    if dw is not None:
        if accumulate:
            dw += dy.T @ x
        else:
            cp.matmul(dy.T, x, out=dw)
    if db is not None:
        if accumulate:
            db += dy.sum(axis=0)
        else:
            dy.sum(axis=0, out=db)


# ---------------------------------------------- relu, batch norm, cross-entropy
# CuPy expressions (backends/_expr.py), the same ones the CPU backend's
# fallbacks use.
def relu(x):
    return _expr.relu(_cupy(), x)


def relu_backward(dy, x):
    return _expr.relu_backward(_cupy(), dy, x)


def relu_inplace(x):
    return _expr.relu_inplace(_cupy(), x)


def relu_into(x, out):
    cp = _cupy()
    return cp.maximum(x, cp.zeros((), x.dtype), out=out)


def add_relu_inplace(h, s):
    h += s
    return _expr.relu_inplace(_cupy(), h)


def add_inplace(a, b):
    a += b
    return a


def relu_mask(x, inplace):
    return _expr.relu_mask(_cupy(), x, inplace)


def relu_backward_mask(dy, mask):
    return _expr.relu_backward_mask(_cupy(), dy, mask)


def batch_norm(x, weight, bias, mean, var, training, eps, saved=False):
    out = _expr.batch_norm(_cupy(), x, weight, bias, mean, var, training, eps)
    return out + (None,) if saved and training else out


def batch_norm_backward(dy, x, weight, mean, var, training, eps, saved=None):
    # (`saved`: the CPU kernel's shortcut; the expressions recompute the statistics)
    return _expr.batch_norm_backward(_cupy(), dy, x, weight, mean, var, training, eps)


def local_response_norm(x, size, alpha, beta, k):
    return _expr.local_response_norm(_cupy(), x, size, alpha, beta, k)


def local_response_norm_backward(dy, x, size, alpha, beta, k):
    return _expr.local_response_norm_backward(_cupy(), dy, x, size, alpha, beta, k)


def cross_entropy(logits, target, reduction):
    return _expr.cross_entropy(_cupy(), logits, target, reduction)


def cross_entropy_backward(logits, target, reduction, grad_output):
    return _expr.cross_entropy_backward(_cupy(), logits, target, reduction, grad_output)
