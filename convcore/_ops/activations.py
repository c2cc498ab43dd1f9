"""Elementwise activations beyond ReLU (tanh, sigmoid, leaky ReLU) and channel
dropout, each with its backward pass.

These are vectorised NumPy (or CuPy) expressions: one or two passes over
memory each, which is what a C loop would cost too; the C core is kept for
the work that is not a single elementwise expression.
"""
from __future__ import annotations

import numpy as np

from convcore._ops.layers import _rng, _xp
from convcore._validate import as_float, float_dtype, shape_eq

__all__ = ["tanh", "tanh_backward", "sigmoid", "sigmoid_backward", "leaky_relu",
           "leaky_relu_backward", "dropout2d", "dropout2d_backward"]


def tanh(x):
    """Hyperbolic tangent, elementwise.

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> cc.tanh(np.array([0.0, 100.0]))
    array([0., 1.])
    """
    xp = _xp(x)
    float_dtype(x, "x")
    return xp.tanh(x)


def tanh_backward(grad_output, output):
    """Gradient of :func:`tanh` from its output ``y``: ``dy * (1 - y**2)``.

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> cc.tanh_backward(np.ones(2), np.array([0.0, 0.5]))
    array([1.  , 0.75])
    """
    _xp(grad_output, output)
    float_dtype(output, "output")
    float_dtype(grad_output, "grad_output")
    shape_eq(grad_output, output.shape, "grad_output")
    one = output.dtype.type(1)
    return grad_output * (one - output * output)


def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))``, without overflow for large ``|x|``.

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> cc.sigmoid(np.array([0.0, -1000.0, 1000.0]))
    array([0.5, 0. , 1. ])
    """
    xp = _xp(x)
    float_dtype(x, "x")
    # exp of a non-positive number only: 1/(1+e^-x) for x >= 0, e^x/(1+e^x) below
    e = xp.exp(-xp.abs(x))
    one = x.dtype.type(1)
    return xp.where(x >= 0, one / (one + e), e / (one + e))


def sigmoid_backward(grad_output, output):
    """Gradient of :func:`sigmoid` from its output ``y``: ``dy * y * (1 - y)``.

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> cc.sigmoid_backward(np.ones(1), np.array([0.5]))
    array([0.25])
    """
    _xp(grad_output, output)
    float_dtype(output, "output")
    float_dtype(grad_output, "grad_output")
    shape_eq(grad_output, output.shape, "grad_output")
    one = output.dtype.type(1)
    return grad_output * output * (one - output)


def _slope(negative_slope):
    return as_float(negative_slope, "negative_slope")


def leaky_relu(x, negative_slope=0.01):
    """``x`` where ``x > 0``, else ``negative_slope * x`` (as
    ``torch.nn.functional.leaky_relu``).

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> cc.leaky_relu(np.array([-2.0, 3.0]), 0.1)
    array([-0.2,  3. ])
    """
    xp = _xp(x)
    float_dtype(x, "x")
    a = x.dtype.type(_slope(negative_slope))
    return xp.where(x > 0, x, x * a)


def leaky_relu_backward(grad_output, x, negative_slope=0.01):
    """Gradient of :func:`leaky_relu`: ``dy`` where ``x > 0``, else
    ``negative_slope * dy`` (at 0 the slope side, as PyTorch).

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> cc.leaky_relu_backward(np.ones(3), np.array([-1.0, 0.0, 1.0]), 0.1)
    array([0.1, 0.1, 1. ])
    """
    xp = _xp(grad_output, x)
    float_dtype(x, "x")
    float_dtype(grad_output, "grad_output")
    shape_eq(grad_output, x.shape, "grad_output")
    a = grad_output.dtype.type(_slope(negative_slope))
    return xp.where(x > 0, grad_output, grad_output * a)


def _channel_mask_shape(x):
    if x.ndim not in (3, 4):
        raise ValueError(f"dropout2d: x must be 3-D (C, H, W) or 4-D (N, C, H, W), got "
                         f"shape {tuple(x.shape)}")
    return tuple(x.shape[:-2]) + (1, 1)


def dropout2d(x, p=0.5, training=True, rng=None, return_mask=False):
    """Channel dropout: zero whole feature maps ``x[n, c]`` with probability
    ``p``, scale the others by ``1 / (1 - p)`` (as
    ``torch.nn.functional.dropout2d``).  Identity when not ``training``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W) or (C, H, W)
    rng : None, int or numpy.random.Generator
    return_mask : bool
        Also return the keep-mask, shape (N, C, 1, 1) or (C, 1, 1) (``None``
        when nothing was dropped), for :func:`dropout2d_backward`.

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> y = cc.dropout2d(np.ones((1, 64, 2, 2)), p=0.5, rng=0)
    >>> bool(((y == 0) | (y == 2)).all()), bool((y[0] == y[0, :, :1, :1]).all())
    (True, True)
    """
    xp = _xp(x)
    float_dtype(x, "x")
    shape = _channel_mask_shape(x)
    p = as_float(p, "p", minimum=0.0, maximum=1.0)
    if not training or p == 0.0:
        return (x, None) if return_mask else x
    mask = _rng(rng).random(shape) >= p
    if xp is not np:
        mask = xp.asarray(mask)
    scale = x.dtype.type(0.0 if p == 1.0 else 1.0 / (1.0 - p))
    y = x * (mask * scale).astype(x.dtype)
    return (y, mask) if return_mask else y


def dropout2d_backward(grad_output, mask, p=0.5):
    """Gradient of :func:`dropout2d` given its channel keep-mask (``None``: identity).

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> g = cc.dropout2d_backward(np.ones((2, 1, 1)), np.array([[[True]], [[False]]]), 0.5)
    >>> g.ravel()
    array([2., 0.])
    """
    _xp(grad_output)
    float_dtype(grad_output, "grad_output")
    p = as_float(p, "p", minimum=0.0, maximum=1.0)
    if mask is None:
        return grad_output
    want = _channel_mask_shape(grad_output)
    shape_eq(mask, want, "mask")
    scale = grad_output.dtype.type(0.0 if p == 1.0 else 1.0 / (1.0 - p))
    return grad_output * (mask * scale).astype(grad_output.dtype)
