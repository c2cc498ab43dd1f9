"""Layer math beyond convolution and pooling: linear, relu, batch_norm,
local_response_norm, dropout, softmax, log_softmax, cross_entropy, each with its
backward pass.

Linear, relu, batch_norm and cross_entropy are computed by the arrays'
backend (on NumPy arrays the C core: threaded, the same bits for every thread
count); the rest are NumPy (or CuPy) expressions written here.  Names and
parameters mirror ``torch.nn.functional``.
"""
from __future__ import annotations

import numbers

import numpy as np

from convcore._rng import as_rng as _rng
from convcore._validate import (as_float, as_int, axis, float_dtype, require, same_dtype,
                                shape_eq)
from convcore.backends import get_backend


def _xp(*arrays):
    return get_backend(*arrays).xp


# ----------------------------------------------------------------------- linear
def _linear_check(x, weight, bias):
    require(x=x, weight=weight)
    be = get_backend(x, weight, bias)
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
        shape_eq(bias, (weight.shape[0],), "bias")
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
    be = get_backend(grad_output, x, weight)
    float_dtype(x, "x")
    same_dtype(x, "x", weight, "weight")
    same_dtype(x, "x", grad_output, "grad_output")
    if weight.ndim != 2 or x.ndim < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x {tuple(x.shape)} and weight {tuple(weight.shape)} do not match")
    shape_eq(grad_output, tuple(x.shape[:-1]) + (weight.shape[0],), "grad_output")
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
    shape_eq(grad_weight, (n_out, n_in), "grad_weight")
    same_dtype(x, "x", grad_weight, "grad_weight")
    if grad_bias is not None:
        shape_eq(grad_bias, (n_out,), "grad_bias")
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
def relu(x):
    """Rectified linear unit ``max(x, 0)`` (NaN propagates).

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> cc.relu(np.array([-1., 0., 2.]))
    array([0., 0., 2.])
    """
    be = get_backend(x)
    float_dtype(x, "x")
    return be.relu(x)


def relu_backward(grad_output, x):
    """Gradient of :func:`relu`: ``dy * (x > 0)``.

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> cc.relu_backward(np.ones(3), np.array([-1., 0., 2.]))
    array([0., 0., 1.])
    """
    require(grad_output=grad_output, x=x)
    be = get_backend(grad_output, x)
    float_dtype(x, "x")
    same_dtype(x, "x", grad_output, "grad_output")
    shape_eq(grad_output, x.shape, "grad_output")
    return be.relu_backward(grad_output, x)


# ------------------------------------------------------------------- batch norm
def _bn_check(x, running_mean, running_var, weight, bias, eps):
    be = get_backend(x, running_mean, running_var, weight, bias)
    float_dtype(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must be at least 2-D (N, C, ...), got shape {tuple(x.shape)}")
    C = x.shape[1]
    for a, n in ((running_mean, "running_mean"), (running_var, "running_var"),
                 (weight, "weight"), (bias, "bias")):
        if a is not None:
            same_dtype(x, "x", a, n)
            shape_eq(a, (C,), n)
    return be, as_float(eps, "eps", minimum=0.0)


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


def _bn_update_running(running_mean, running_var, mean, var, m, momentum):
    """``running = (1 - momentum) * running + momentum * batch``, in place,
    with the unbiased batch variance."""
    if running_mean is not None:
        running_mean *= (1 - momentum)
        running_mean += momentum * mean
    if running_var is not None:
        running_var *= (1 - momentum)
        running_var += momentum * var * (m / (m - 1))


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
    return _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)[0]


def _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps,
                keep=False):
    """:func:`batch_norm` as ``(y, saved)``: with `keep` (training), saved
    is the backend's batch statistics for :func:`_batch_norm_backward`'s
    `saved` (None where the backend keeps none); otherwise None."""
    be, eps = _bn_check(x, running_mean, running_var, weight, bias, eps)
    momentum = as_float(momentum, "momentum", minimum=0.0, maximum=1.0)
    training = bool(training)
    m = _bn_values(x, running_mean, running_var, training)
    keep = keep and training
    out = be.batch_norm(x, weight, bias, running_mean, running_var, training, eps, saved=keep)
    y, mean, var = out[:3]
    if training:
        _bn_update_running(running_mean, running_var, mean, var, m, momentum)
    return y, out[3] if keep else None


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
    return _batch_norm_backward(grad_output, x, running_mean, running_var, weight, training,
                                eps)


def _batch_norm_backward(grad_output, x, running_mean, running_var, weight, training, eps,
                         saved=None):
    """:func:`batch_norm_backward`; `saved` (training): :func:`_batch_norm`'s
    statistics of the same x, which spare the backend computing them again."""
    require(grad_output=grad_output, x=x)
    _, eps = _bn_check(x, running_mean, running_var, weight, None, eps)
    same_dtype(x, "x", grad_output, "grad_output")
    shape_eq(grad_output, x.shape, "grad_output")
    be = get_backend(grad_output, x)
    training = bool(training)
    _bn_values(x, running_mean, running_var, training)
    return be.batch_norm_backward(grad_output, x, weight, running_mean, running_var,
                                  training, eps, saved=saved if training else None)


# ------------------------------------------------------ local response norm
def _lrn_check(x, size, alpha, beta, k):
    xp = _xp(x)
    float_dtype(x, "x")
    if x.ndim < 3:
        raise ValueError(f"x must be at least 3-D (N, C, ...), got shape {tuple(x.shape)}")
    size = as_int(size, "size", minimum=1)
    return xp, size, as_float(alpha, "alpha"), as_float(beta, "beta"), as_float(k, "k")


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
    _, size, alpha, beta, k = _lrn_check(x, size, alpha, beta, k)
    return get_backend(x).local_response_norm(x, size, alpha, beta, k)


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
    _, size, alpha, beta, k = _lrn_check(x, size, alpha, beta, k)
    same_dtype(x, "x", grad_output, "grad_output")
    shape_eq(grad_output, x.shape, "grad_output")
    return get_backend(grad_output, x).local_response_norm_backward(grad_output, x, size, alpha,
                                                                   beta, k)


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
    p = as_float(p, "p", minimum=0.0, maximum=1.0)
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
    p = as_float(p, "p", minimum=0.0, maximum=1.0)
    if mask is None:
        return grad_output
    shape_eq(mask, grad_output.shape, "mask")
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
    d = axis(dim, x.ndim)
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
    shape_eq(grad_output, output.shape, "grad_output")
    d = axis(dim, output.ndim)
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
    d = axis(dim, x.ndim)
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
    shape_eq(grad_output, output.shape, "grad_output")
    d = axis(dim, output.ndim)
    return grad_output - xp.exp(output) * grad_output.sum(axis=d, keepdims=True)


_REDUCTIONS = ("mean", "sum", "none")


def _ce_check(logits, target, reduction):
    require(logits=logits, target=target)
    be = get_backend(logits, target)
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
    return be


def _ce_target_error(logits, target):
    return ValueError(f"target values must lie in [0, {logits.shape[1] - 1}], got "
                      f"[{int(target.min())}, {int(target.max())}]")


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
    be = _ce_check(logits, target, reduction)
    loss = be.cross_entropy(logits, target, reduction)
    if loss is None:
        raise _ce_target_error(logits, target)
    return loss


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
    be = _ce_check(logits, target, reduction)
    if reduction == "none":
        go = be.xp.asarray(grad_output)
        if go.ndim:
            shape_eq(go, (logits.shape[0],), "grad_output")
    g = be.cross_entropy_backward(logits, target, reduction, grad_output)
    if g is None:
        raise _ce_target_error(logits, target)
    return g
