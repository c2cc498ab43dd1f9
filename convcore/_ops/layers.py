"""Layer math beyond convolution and pooling: linear, relu, batch_norm,
local_response_norm, dropout, softmax, log_softmax, cross_entropy, each with its
backward pass.

For NumPy arrays, relu and batch_norm (forward and backward) run in the C core
(threaded, the same bits for every thread count); the rest, and every op on
CuPy arrays, are NumPy (or CuPy) expressions.  Names and parameters mirror
``torch.nn.functional``.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from convcore._rng import as_rng as _rng
from convcore._validate import as_int, backend_for, float_dtype, require, same_dtype


def _xp(*arrays):
    return backend_for(*arrays).xp


def _c_core(be, *arrays):
    """Whether the C core takes these arrays: the CPU backend, and none 0-d."""
    return be.name == "cpu" and all(a.ndim for a in arrays)


def _shape_eq(a, shape, name):
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(a.shape)}")


def _float(v, name, minimum=None, maximum=None, incl_max=True):
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


def _dim(dim, ndim, name="dim"):
    d = as_int(dim, name, minimum=-ndim, maximum=max(ndim - 1, 0))
    return d % ndim if ndim else 0


# ----------------------------------------------------------------------- linear
def _linear_check(x, weight, bias):
    require(x=x, weight=weight)
    be = backend_for(x, weight, bias)
    float_dtype(x, "x")
    same_dtype(x, "x", weight, "weight")
    same_dtype(x, "x", bias, "bias")
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got shape "
                         f"{tuple(weight.shape)}")
    if x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x must have last dimension in_features={weight.shape[1]}, got "
                         f"shape {tuple(x.shape)}")
    if bias is not None:
        _shape_eq(bias, (weight.shape[0],), "bias")
    return be


def _rows(be, a, width):
    """a as a C-contiguous (rows, width) matrix (a view when it already is one)."""
    return be.ascontiguous(a.reshape(-1, width))


def linear(x, weight, bias=None):
    """Affine map ``y = x W^T + b`` over the last axis.

    On NumPy arrays the products run in convcore's own thread team (the
    BLAS sequential inside it), never in NumPy's BLAS thread pool.

    Parameters
    ----------
    x : ndarray, shape (..., in_features)
    weight : ndarray, shape (out_features, in_features)
    bias : ndarray, shape (out_features,), optional

    Returns
    -------
    y : ndarray, shape (..., out_features)

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> cc.linear(np.ones((1, 3)), np.arange(6.).reshape(2, 3), np.array([0., 1.]))
    array([[ 3., 13.]])
    """
    be = _linear_check(x, weight, bias)
    n_out, n_in = weight.shape
    y = be.empty(tuple(x.shape[:-1]) + (n_out,), x.dtype)
    be.linear_forward(_rows(be, x, n_in), be.ascontiguous(weight),
                      None if bias is None else be.ascontiguous(bias), y.reshape(-1, n_out))
    return y


def _linear_backward_check(grad_output, x, weight):
    require(grad_output=grad_output, x=x, weight=weight)
    be = backend_for(grad_output, x, weight)
    float_dtype(x, "x")
    same_dtype(x, "x", weight, "weight")
    same_dtype(x, "x", grad_output, "grad_output")
    if weight.ndim != 2 or x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x {tuple(x.shape)} and weight {tuple(weight.shape)} do not match")
    _shape_eq(grad_output, tuple(x.shape[:-1]) + (weight.shape[0],), "grad_output")
    return be


def linear_backward(grad_output, x, weight):
    """Gradients of :func:`linear`: ``(grad_input, grad_weight, grad_bias)``.

    ``dx = dy W``, ``dW = dy^T x`` and ``db = sum dy`` (summed over every
    leading axis).

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> gx, gw, gb = cc.linear_backward(np.ones((1, 2)), np.ones((1, 3)), np.ones((2, 3)))
    >>> gx, gb
    (array([[2., 2., 2.]]), array([1., 1.]))
    """
    be = _linear_backward_check(grad_output, x, weight)
    n_out, n_in = weight.shape
    gx = be.empty(x.shape, x.dtype)
    gw = be.empty((n_out, n_in), x.dtype)
    gb = be.empty((n_out,), x.dtype)
    be.linear_backward(_rows(be, grad_output, n_out), _rows(be, x, n_in),
                       be.ascontiguous(weight), gx.reshape(-1, n_in), gw, gb, False)
    return gx, gw, gb


def linear_backward_accumulate(grad_output, x, weight, grad_weight, grad_bias=None,
                               need_input=True):
    """:func:`linear_backward` that adds dW and db into ``grad_weight`` and
    ``grad_bias`` (C-contiguous, the parameters' dtype) in place, with no
    parameter-sized temporary, and returns dx (None unless ``need_input``)."""
    be = _linear_backward_check(grad_output, x, weight)
    n_out, n_in = weight.shape
    _shape_eq(grad_weight, (n_out, n_in), "grad_weight")
    same_dtype(x, "x", grad_weight, "grad_weight")
    if grad_bias is not None:
        _shape_eq(grad_bias, (n_out,), "grad_bias")
        same_dtype(x, "x", grad_bias, "grad_bias")
    if not all(g is None or g.flags.c_contiguous for g in (grad_weight, grad_bias)):
        # a gradient array the user set to a strided view: add temporaries
        gx, gw, gb = linear_backward(grad_output, x, weight)
        grad_weight += gw
        if grad_bias is not None:
            grad_bias += gb
        return gx if need_input else None
    gx = be.empty(x.shape, x.dtype) if need_input else None
    be.linear_backward(_rows(be, grad_output, n_out), _rows(be, x, n_in),
                       be.ascontiguous(weight), None if gx is None else gx.reshape(-1, n_in),
                       grad_weight, grad_bias, True)
    return gx


# ------------------------------------------------------------------------- relu
# Up to this many elements one NumPy expression costs less than entering the
# C core (buffer acquisition and a team of one); the results are the same.
_RELU_SMALL = 2048


def relu(x):
    """Rectified linear unit ``max(x, 0)`` (NaN propagates).

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> cc.relu(np.array([-1., 0., 2.]))
    array([0., 0., 2.])
    """
    be = backend_for(x)
    float_dtype(x, "x")
    if _c_core(be, x) and x.flags.c_contiguous and x.size > _RELU_SMALL:
        y = np.empty(x.shape, dtype=x.dtype)
        be.relu_forward(x.reshape(-1), y.reshape(-1))
        return y
    return _relu_xp(be.xp, x)


def _relu_xp(xp, x):
    # maximum propagates NaN and is one pass (a masked select is ~10x slower)
    return xp.maximum(x, xp.zeros((), x.dtype))


def relu_backward(grad_output, x):
    """Gradient of :func:`relu`: ``dy * (x > 0)``.

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> cc.relu_backward(np.ones(3), np.array([-1., 0., 2.]))
    array([0., 0., 1.])
    """
    require(grad_output=grad_output, x=x)
    be = backend_for(grad_output, x)
    float_dtype(x, "x")
    same_dtype(x, "x", grad_output, "grad_output")
    _shape_eq(grad_output, x.shape, "grad_output")
    if (_c_core(be, x) and x.flags.c_contiguous and grad_output.flags.c_contiguous
            and x.size > _RELU_SMALL):
        gx = np.empty(x.shape, dtype=x.dtype)
        be.relu_backward(grad_output.reshape(-1), x.reshape(-1), gx.reshape(-1))
        return gx
    return _relu_backward_xp(be.xp, grad_output, x)


def _relu_backward_xp(xp, grad_output, x):
    gx = grad_output * (x > 0)
    if not bool(xp.isfinite(grad_output).all()):
        # a NaN or Inf gradient where x <= 0 must still give exactly 0
        gx = xp.where(x > 0, grad_output, xp.zeros((), grad_output.dtype))
    return gx.astype(grad_output.dtype, copy=False)


# ------------------------------------------------------------------- batch norm
def _bn_check(x, running_mean, running_var, weight, bias, eps):
    _xp(x, running_mean, running_var, weight, bias)
    float_dtype(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must be at least 2-D (N, C, ...), got shape {tuple(x.shape)}")
    C = x.shape[1]
    for a, n in ((running_mean, "running_mean"), (running_var, "running_var"),
                 (weight, "weight"), (bias, "bias")):
        if a is not None:
            same_dtype(x, "x", a, n)
            _shape_eq(a, (C,), n)
    _float(eps, "eps", minimum=0.0)
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, C) + (1,) * (x.ndim - 2)
    return axes, bshape


def _bn_values(x, running_mean, running_var, training):
    """Values per channel in training (refused unless more than 1); None in
    eval (refused without running statistics)."""
    if training:
        m = x.size // max(x.shape[1], 1)
        if m <= 1:
            raise ValueError(f"batch_norm in training mode needs more than 1 value per "
                             f"channel, got input shape {tuple(x.shape)}")
        return m
    if running_mean is None or running_var is None:
        raise ValueError("batch_norm in eval mode needs running_mean and running_var")
    return None


def _bn_stats(x, axes, running_mean, running_var, training):
    m = _bn_values(x, running_mean, running_var, training)
    if training:
        return x.mean(axis=axes), x.var(axis=axes), m
    return running_mean, running_var, None


def _bn_update_running(running_mean, running_var, mean, var, m, momentum):
    """``running = (1 - momentum) * running + momentum * batch``, in place,
    with the unbiased batch variance."""
    if running_mean is not None:
        running_mean *= (1 - momentum)
        running_mean += momentum * mean
    if running_var is not None:
        running_var *= (1 - momentum)
        running_var += momentum * var * (m / (m - 1))


def _ncl(a):
    """a as a C-contiguous (N, C, L) array (a copy only when a is not C-contiguous)."""
    a = np.ascontiguousarray(a)
    return a.reshape(a.shape[0], a.shape[1], math.prod(a.shape[2:]))


def _vec(a):
    return None if a is None else np.ascontiguousarray(a)


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
               training=False, momentum=0.1, eps=1e-5):
    """Batch normalisation over every axis but the channel axis 1.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``.  With ``training``
    the batch statistics (biased variance) are used and the running
    statistics, when given, are updated in place:
    ``running = (1 - momentum) * running + momentum * batch`` with the
    unbiased batch variance (as PyTorch).  Otherwise the running statistics
    are used.

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> x = np.array([[1.], [3.]])
    >>> cc.batch_norm(x, training=True, eps=0.0).ravel()
    array([-1.,  1.])
    """
    axes, bshape = _bn_check(x, running_mean, running_var, weight, bias, eps)
    momentum = _float(momentum, "momentum", minimum=0.0, maximum=1.0)
    be = backend_for(x)
    if not _c_core(be, x):
        return _batch_norm_xp(x, axes, bshape, running_mean, running_var, weight, bias,
                              training, momentum, eps)
    m = _bn_values(x, running_mean, running_var, training)
    x3 = _ncl(x)
    y = np.empty(x.shape, dtype=x.dtype)
    mean = np.empty(x.shape[1], dtype=np.float64)
    var = np.empty(x.shape[1], dtype=np.float64)
    be.batch_norm_forward(x3, _vec(weight), _vec(bias),
                          None if training else _vec(running_mean),
                          None if training else _vec(running_var), bool(training),
                          float(eps), y.reshape(x3.shape), mean, var)
    if training:
        # the same expressions, in x's dtype, as the NumPy path
        _bn_update_running(running_mean, running_var, mean.astype(x.dtype),
                           var.astype(x.dtype), m, momentum)
    return y


def _batch_norm_xp(x, axes, bshape, running_mean, running_var, weight, bias, training,
                   momentum, eps):
    """batch_norm as NumPy/CuPy expressions (the path of CuPy arrays)."""
    mean, var, m = _bn_stats(x, axes, running_mean, running_var, training)
    if training:
        _bn_update_running(running_mean, running_var, mean, var, m, momentum)
    invstd = 1.0 / (var + eps) ** 0.5
    scale = invstd if weight is None else invstd * weight
    y = (x - mean.reshape(bshape)) * scale.reshape(bshape).astype(x.dtype, copy=False)
    if bias is not None:
        y += bias.reshape(bshape)
    return y.astype(x.dtype, copy=False)


def batch_norm_backward(grad_output, x, running_mean=None, running_var=None, weight=None,
                        training=False, eps=1e-5):
    """Gradients of :func:`batch_norm`: ``(grad_input, grad_weight, grad_bias)``.

    In training mode (batch statistics, ``M`` values per channel,
    ``xhat = (x - mean) * invstd``, ``g = dy * weight``):
    ``dx = invstd / M * (M g - sum g - xhat sum(g xhat))``.  In eval mode the
    statistics are constants: ``dx = dy * weight * invstd``.
    ``grad_weight = sum dy xhat`` and ``grad_bias = sum dy`` (both returned
    even without affine parameters).

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> gx, gw, gb = cc.batch_norm_backward(np.ones((2, 1)), np.array([[1.], [3.]]),
    ...                                     training=True)
    >>> bool(np.abs(gx).max() < 1e-12), gb
    (True, array([2.]))
    """
    require(grad_output=grad_output, x=x)
    axes, bshape = _bn_check(x, running_mean, running_var, weight, None, eps)
    same_dtype(x, "x", grad_output, "grad_output")
    _shape_eq(grad_output, x.shape, "grad_output")
    be = backend_for(grad_output, x)
    if not _c_core(be, x):
        return _batch_norm_backward_xp(grad_output, x, axes, bshape, running_mean,
                                       running_var, weight, training, eps)
    _bn_values(x, running_mean, running_var, training)
    x3, dy3 = _ncl(x), _ncl(grad_output)
    C = x.shape[1]
    gx = np.empty(x.shape, dtype=x.dtype)
    gw, gb = np.empty(C, dtype=x.dtype), np.empty(C, dtype=x.dtype)
    be.batch_norm_backward(dy3, x3, _vec(weight), None if training else _vec(running_mean),
                           None if training else _vec(running_var), bool(training),
                           float(eps), gx.reshape(x3.shape), gw, gb)
    return gx, gw, gb


def _batch_norm_backward_xp(grad_output, x, axes, bshape, running_mean, running_var, weight,
                            training, eps):
    """batch_norm_backward as NumPy/CuPy expressions (the path of CuPy arrays)."""
    mean, var, m = _bn_stats(x, axes, running_mean, running_var, training)
    invstd = (1.0 / (var + eps) ** 0.5).astype(x.dtype, copy=False)
    xhat = (x - mean.reshape(bshape)) * invstd.reshape(bshape)
    grad_bias = grad_output.sum(axis=axes)
    grad_weight = (grad_output * xhat).sum(axis=axes)
    # with g = dy * weight: sum g = weight * grad_bias, sum g xhat = weight * grad_weight
    scale = invstd if weight is None else invstd * weight.astype(x.dtype, copy=False)
    if training:
        gb = grad_bias.reshape(bshape).astype(x.dtype, copy=False)
        gw = grad_weight.reshape(bshape).astype(x.dtype, copy=False)
        gx = xhat * gw
        gx += gb
        gx *= -1.0 / m
        gx += grad_output
        gx *= scale.reshape(bshape)
    else:
        gx = grad_output * scale.reshape(bshape)
    return gx.astype(x.dtype, copy=False), grad_weight, grad_bias


# ------------------------------------------------------ local response norm
def _channel_window_sum(xp, a, before, after):
    """s[:, c] = sum of a[:, c-before .. c+after] (zeros outside)."""
    pad = [(0, 0)] * a.ndim
    pad[1] = (before + 1, after)
    cs = xp.cumsum(xp.pad(a, pad), axis=1)
    C = a.shape[1]
    hi = [slice(None)] * a.ndim
    lo = [slice(None)] * a.ndim
    hi[1] = slice(before + after + 1, before + after + 1 + C)
    lo[1] = slice(0, C)
    return cs[tuple(hi)] - cs[tuple(lo)]


def _lrn_check(x, size, alpha, beta, k):
    xp = _xp(x)
    float_dtype(x, "x")
    if x.ndim < 3:
        raise ValueError(f"x must be at least 3-D (N, C, ...), got shape {tuple(x.shape)}")
    size = as_int(size, "size", minimum=1)
    return xp, size, _float(alpha, "alpha"), _float(beta, "beta"), _float(k, "k")


def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """Local response normalisation across channels (AlexNet's NORM layer).

    ``y_c = x_c / (k + alpha / size * sum_{c'} x_{c'}^2) ** beta`` where
    ``c'`` runs over ``c - size // 2 .. c + (size - 1) // 2`` (channels
    outside ``0 .. C-1`` count as zero) -- PyTorch's formula.

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> x = np.ones((1, 3, 1, 1))
    >>> cc.local_response_norm(x, size=3, alpha=3.0, beta=1.0, k=0.0).ravel()
    array([0.5       , 0.33333333, 0.5       ])
    """
    xp, size, alpha, beta, k = _lrn_check(x, size, alpha, beta, k)
    d = k + (alpha / size) * _channel_window_sum(xp, x * x, size // 2, (size - 1) // 2)
    return (x * d ** (-beta)).astype(x.dtype, copy=False)


def local_response_norm_backward(grad_output, x, size, alpha=1e-4, beta=0.75, k=1.0):
    """Gradient of :func:`local_response_norm` with respect to its input.

    With ``d_c`` the denominator base:
    ``dx_i = dy_i d_i^-beta - 2 beta alpha / size * x_i *
    sum_{c : i in window(c)} dy_c x_c d_c^(-beta-1)``.

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> cc.local_response_norm_backward(np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)),
    ...                                 size=1, alpha=1.0, beta=1.0, k=1.0).item()
    0.0
    """
    require(grad_output=grad_output, x=x)
    xp, size, alpha, beta, k = _lrn_check(x, size, alpha, beta, k)
    same_dtype(x, "x", grad_output, "grad_output")
    _shape_eq(grad_output, x.shape, "grad_output")
    before, after = size // 2, (size - 1) // 2
    d = k + (alpha / size) * _channel_window_sum(xp, x * x, before, after)
    t = grad_output * x * d ** (-beta - 1)
    s = _channel_window_sum(xp, t, after, before)
    gx = grad_output * d ** (-beta) - (2 * beta * alpha / size) * x * s
    return gx.astype(x.dtype, copy=False)


# ---------------------------------------------------------------------- dropout
def dropout(x, p=0.5, training=True, rng=None, return_mask=False):
    """Inverted dropout: zero each element with probability ``p``, scale the
    rest by ``1 / (1 - p)``.  Identity when not ``training``.

    Parameters
    ----------
    rng : None, int or numpy.random.Generator
        Source of the mask (a seed makes it reproducible).
    return_mask : bool
        Also return the boolean keep-mask (``None`` when nothing was dropped),
        which :func:`dropout_backward` needs.

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> y = cc.dropout(np.ones(1000), p=0.5, rng=0)
    >>> sorted(set(y.tolist()))
    [0.0, 2.0]
    """
    xp = _xp(x)
    float_dtype(x, "x")
    p = _float(p, "p", minimum=0.0, maximum=1.0)
    if not training or p == 0.0:
        return (x, None) if return_mask else x
    gen = _rng(rng)
    mask = gen.random(x.shape) >= p
    if xp is not np:
        mask = xp.asarray(mask)
    scale = x.dtype.type(0.0 if p == 1.0 else 1.0 / (1.0 - p))
    y = xp.where(mask, x * scale, xp.zeros((), x.dtype))
    return (y, mask) if return_mask else y


def dropout_backward(grad_output, mask, p=0.5):
    """Gradient of :func:`dropout` given its keep-mask (``None``: identity).

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> cc.dropout_backward(np.ones(2), np.array([True, False]), p=0.5)
    array([2., 0.])
    """
    xp = _xp(grad_output)
    float_dtype(grad_output, "grad_output")
    p = _float(p, "p", minimum=0.0, maximum=1.0)
    if mask is None:
        return grad_output
    _shape_eq(mask, grad_output.shape, "mask")
    scale = grad_output.dtype.type(0.0 if p == 1.0 else 1.0 / (1.0 - p))
    return xp.where(mask, grad_output * scale, xp.zeros((), grad_output.dtype))


# ----------------------------------------------------------- softmax and loss
def softmax(x, dim=-1):
    """Softmax along ``dim`` (max-subtracted, so large logits do not overflow).

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> cc.softmax(np.array([0., np.log(3.)]))
    array([0.25, 0.75])
    """
    xp = _xp(x)
    float_dtype(x, "x")
    d = _dim(dim, x.ndim)
    e = xp.exp(x - x.max(axis=d, keepdims=True))
    return e / e.sum(axis=d, keepdims=True)


def softmax_backward(grad_output, output, dim=-1):
    """Gradient of :func:`softmax` from its output ``y``: ``y (dy - sum(dy y))``.

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> cc.softmax_backward(np.ones(2), np.array([0.25, 0.75]))
    array([0., 0.])
    """
    require(grad_output=grad_output, output=output)
    _xp(grad_output, output)
    float_dtype(output, "output")
    same_dtype(output, "output", grad_output, "grad_output")
    _shape_eq(grad_output, output.shape, "grad_output")
    d = _dim(dim, output.ndim)
    return output * (grad_output - (grad_output * output).sum(axis=d, keepdims=True))


def log_softmax(x, dim=-1):
    """``log(softmax(x))`` computed stably as ``x - max - log(sum(exp(x - max)))``.

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> np.exp(cc.log_softmax(np.array([0., np.log(3.)])))
    array([0.25, 0.75])
    """
    xp = _xp(x)
    float_dtype(x, "x")
    d = _dim(dim, x.ndim)
    z = x - x.max(axis=d, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=d, keepdims=True))


def log_softmax_backward(grad_output, output, dim=-1):
    """Gradient of :func:`log_softmax` from its output: ``dy - exp(y) sum(dy)``.

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> cc.log_softmax_backward(np.array([1., 0.]), np.log(np.array([0.25, 0.75])))
    array([ 0.75, -0.75])
    """
    require(grad_output=grad_output, output=output)
    xp = _xp(grad_output, output)
    float_dtype(output, "output")
    same_dtype(output, "output", grad_output, "grad_output")
    _shape_eq(grad_output, output.shape, "grad_output")
    d = _dim(dim, output.ndim)
    return grad_output - xp.exp(output) * grad_output.sum(axis=d, keepdims=True)


_REDUCTIONS = ("mean", "sum", "none")


def _ce_check(logits, target, reduction):
    require(logits=logits, target=target)
    xp = _xp(logits, target)
    float_dtype(logits, "logits")
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D (N, num_classes), got shape "
                         f"{tuple(logits.shape)}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
    if tuple(target.shape) != (logits.shape[0],):
        raise ValueError(f"target must have shape ({logits.shape[0]},), got "
                         f"{tuple(target.shape)}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return xp


def _ce_target_error(logits, target):
    return ValueError(f"target values must lie in [0, {logits.shape[1] - 1}], got "
                      f"[{int(target.min())}, {int(target.max())}]")


def _ce_check_targets(logits, target):
    if target.size and (int(target.min()) < 0 or int(target.max()) >= logits.shape[1]):
        raise _ce_target_error(logits, target)


def _ce_c_core(logits, target, scale, scale0, loss, grad):
    """The fused C kernel (CPU arrays): per-row losses and/or the gradient."""
    be = backend_for(logits)
    t = np.ascontiguousarray(target, dtype=np.int64)   # uint64 past int64 turns negative
    if not be.cross_entropy(be.ascontiguous(logits), t, scale, scale0, loss, grad):
        raise _ce_target_error(logits, target)


def cross_entropy(logits, target, reduction="mean"):
    """Cross-entropy of class scores against integer labels:
    ``-log_softmax(logits)[n, target[n]]``, averaged (``'mean'``), summed
    (``'sum'``) or per sample (``'none'``).

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> float(cc.cross_entropy(np.zeros((2, 4)), np.array([0, 3])))  # log(4)
    1.3862943611198906
    """
    xp = _ce_check(logits, target, reduction)
    if _c_core(backend_for(logits), logits):
        per64 = np.empty(logits.shape[0], np.float64)    # rows summed in double
        _ce_c_core(logits, target, None, 0.0, per64, None)
        if reduction == "none":
            return per64.astype(logits.dtype)
        total = np.add.reduce(per64)     # (ndarray.mean costs more than the kernel)
        if reduction == "sum":
            return logits.dtype.type(total)
        return logits.dtype.type(total / per64.size if per64.size else np.nan)
    _ce_check_targets(logits, target)
    lp = log_softmax(logits, dim=1)
    per = -lp[xp.arange(logits.shape[0]), target]
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.mean() if per.size else per.sum() * np.nan


def cross_entropy_backward(logits, target, reduction="mean", grad_output=1.0):
    """Gradient of :func:`cross_entropy` with respect to the logits:
    ``(softmax(logits) - onehot(target)) * grad_output`` (divided by N for
    ``'mean'``; ``grad_output`` per sample for ``'none'``).

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> cc.cross_entropy_backward(np.zeros((1, 2)), np.array([1]))
    array([[ 0.5, -0.5]])
    """
    xp = _ce_check(logits, target, reduction)
    N = logits.shape[0]
    if _c_core(backend_for(logits), logits):
        g = np.empty(logits.shape, logits.dtype)
        scale = None
        if reduction == "none":
            go = np.asarray(grad_output, dtype=np.float64)
            if go.ndim:
                _shape_eq(go, (N,), "grad_output")
                scale = np.ascontiguousarray(go)
            scale0 = float(go) if not go.ndim else 0.0
        else:
            scale0 = float(grad_output) / (N if reduction == "mean" and N else 1)
        _ce_c_core(logits, target, scale, scale0, None, g)
        return g
    _ce_check_targets(logits, target)
    g = softmax(logits, dim=1)
    g[xp.arange(N), target] -= 1
    if reduction == "none":
        go = xp.asarray(grad_output, dtype=logits.dtype)
        if go.ndim:
            _shape_eq(go, (N,), "grad_output")
            go = go[:, None]
        return g * go
    scale = float(grad_output) / (N if reduction == "mean" and N else 1)
    return g * logits.dtype.type(scale)
