"""Array expressions a backend may compute an op with: written once for any
module with NumPy's interface (``xp``: NumPy or CuPy).

The CUDA backend computes ReLU, batch normalisation, local response
normalisation and cross-entropy with them; the CPU backend takes the ReLU ones
for arrays too small to be worth entering the C core.
"""
from __future__ import annotations


def relu(xp, x):
    # maximum propagates NaN and is one pass (a masked select is ~10x slower)
    return xp.maximum(x, xp.zeros((), x.dtype))


def relu_backward(xp, grad_output, x):
    gx = grad_output * (x > 0)
    if not bool(xp.isfinite(grad_output).all()):
        # a NaN or Inf gradient where x <= 0 must still give exactly 0
        gx = xp.where(x > 0, grad_output, xp.zeros((), grad_output.dtype))
    return gx.astype(grad_output.dtype, copy=False)


def relu_inplace(xp, x):
    """x = relu(x), in place; returns x."""
    return xp.maximum(x, xp.zeros((), x.dtype), out=x)


def relu_mask(xp, x, inplace):
    """(relu(x), its bool mask y > 0); with ``inplace`` y is x."""
    y = xp.maximum(x, xp.zeros((), x.dtype), out=x if inplace else None)
    return y, y > 0


def relu_backward_mask(xp, grad_output, mask):
    # exactly 0 where the mask is clear, even for a NaN or Inf gradient
    return xp.where(mask, grad_output, xp.zeros((), grad_output.dtype))


def _bn_shape(x):
    """(reduction axes, per-channel broadcast shape) of an (N, C, ...) array."""
    return (0,) + tuple(range(2, x.ndim)), (1, x.shape[1]) + (1,) * (x.ndim - 2)


def batch_norm(xp, x, weight, bias, mean, var, training, eps):
    """(y, mean, var): with `training` the batch statistics (biased variance)
    are computed and returned; otherwise `mean` and `var` are used."""
    axes, bshape = _bn_shape(x)
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    invstd = 1.0 / (var + eps) ** 0.5
    scale = invstd if weight is None else invstd * weight
    y = (x - mean.reshape(bshape)) * scale.reshape(bshape).astype(x.dtype, copy=False)
    if bias is not None:
        y += bias.reshape(bshape)
    return y.astype(x.dtype, copy=False), mean, var


def batch_norm_backward(xp, grad_output, x, weight, mean, var, training, eps):
    """(grad_input, grad_weight, grad_bias); see batch_norm's `training`."""
    axes, bshape = _bn_shape(x)
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        m = x.size // x.shape[1]
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


def _in_range(xp, logits, target):
    return not target.size or (int(target.min()) >= 0
                               and int(target.max()) < logits.shape[1])


def cross_entropy(xp, logits, target, reduction):
    """The loss, reduced by 'mean', 'sum' or 'none'; None where a target lies
    outside [0, num_classes)."""
    if not _in_range(xp, logits, target):
        return None
    z = logits - logits.max(axis=1, keepdims=True)
    lp = z - xp.log(xp.exp(z).sum(axis=1, keepdims=True))
    per = -lp[xp.arange(logits.shape[0]), target]
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.mean() if per.size else per.sum() * float("nan")


def cross_entropy_backward(xp, logits, target, reduction, grad_output):
    """``(softmax(logits) - onehot(target)) * grad_output`` (divided by N for
    'mean'; `grad_output` a number, or per row for 'none'); None where a
    target lies outside [0, num_classes)."""
    if not _in_range(xp, logits, target):
        return None
    N = logits.shape[0]
    e = xp.exp(logits - logits.max(axis=1, keepdims=True))
    g = e / e.sum(axis=1, keepdims=True)
    g[xp.arange(N), target] -= 1
    if reduction == "none":
        go = xp.asarray(grad_output, dtype=logits.dtype)
        return g * (go[:, None] if go.ndim else go)
    scale = float(grad_output) / (N if reduction == "mean" and N else 1)
    return g * logits.dtype.type(scale)


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


def local_response_norm(xp, x, size, alpha, beta, k):
    d = k + (alpha / size) * _channel_window_sum(xp, x * x, size // 2, (size - 1) // 2)
    return (x * d ** (-beta)).astype(x.dtype, copy=False)


def local_response_norm_backward(xp, grad_output, x, size, alpha, beta, k):
    before, after = size // 2, (size - 1) // 2
    d = k + (alpha / size) * _channel_window_sum(xp, x * x, before, after)
    t = grad_output * x * d ** (-beta - 1)
    s = _channel_window_sum(xp, t, after, before)
    gx = grad_output * d ** (-beta) - (2 * beta * alpha / size) * x * s
    return gx.astype(x.dtype, copy=False)
