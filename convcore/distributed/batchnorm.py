"""Batch normalisation statistics over the global batch (every rank's shard
together): the functional pair behind :class:`convcore.nn.SyncBatchNorm2d`."""
from __future__ import annotations

import numpy as np

from convcore._ops.layers import _bn_update_running
from convcore.distributed.collectives import _allreduce_inplace

__all__ = ["sync_batch_norm_forward", "sync_batch_norm_backward"]


def sync_batch_norm_forward(x, weight, bias, eps=1e-5, *, running_mean=None,
                            running_var=None, momentum=0.1):
    """Training-mode BatchNorm over the *global* batch: per channel mean and
    biased variance of ``x`` (N, C, H, W) on all ranks together.

    Returns ``(y, mean, var_unbiased, cache)``; ``var_unbiased`` (over the
    global count) is the one the running statistics track, ``cache`` feeds
    :func:`sync_batch_norm_backward`.  One allreduce of ``2C + 1`` numbers.
    Without MPI this is ordinary BatchNorm.

    ``running_mean`` and ``running_var``, when given, are updated in place as
    :func:`convcore.batch_norm` updates them in training mode:
    ``running = (1 - momentum) * running + momentum * batch``, with the
    global batch's mean and unbiased variance.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be 4-D (N, C, H, W), got shape {x.shape}")
    C = x.shape[1]
    acc = np.float64
    stats = np.empty(2 * C + 1, dtype=acc)
    stats[:C] = x.sum(axis=(0, 2, 3), dtype=acc)
    stats[C:2 * C] = np.square(x, dtype=acc).sum(axis=(0, 2, 3))
    stats[2 * C] = x.shape[0] * x.shape[2] * x.shape[3]
    _allreduce_inplace(stats, "SUM", "sync_batch_norm")
    count = stats[2 * C]
    if count == 0:
        raise ValueError("BatchNorm over an empty global batch")
    mean = stats[:C] / count
    var = np.maximum(stats[C:2 * C] / count - mean * mean, 0.0)
    var_unbiased = var * count / max(count - 1.0, 1.0)
    # A global batch of one value has var == 0: any count > 1 gives its update.
    _bn_update_running(running_mean, running_var,
                       None if running_mean is None else mean.astype(running_mean.dtype),
                       None if running_var is None else var.astype(running_var.dtype),
                       max(count, 2.0), momentum)
    inv_std = 1.0 / np.sqrt(var + eps)
    shape = (1, C, 1, 1)
    xhat = ((x - mean.reshape(shape).astype(x.dtype)) * inv_std.reshape(shape).astype(x.dtype))
    y = xhat
    if weight is not None:
        y = y * np.asarray(weight, dtype=x.dtype).reshape(shape)
    if bias is not None:
        y = y + np.asarray(bias, dtype=x.dtype).reshape(shape)
    cache = (xhat, inv_std.astype(x.dtype), weight, count)
    return y.astype(x.dtype, copy=False), mean, var_unbiased, cache


def sync_batch_norm_backward(grad_output, cache):
    """Backward of :func:`sync_batch_norm_forward`: returns ``(grad_input,
    grad_weight, grad_bias)``.  ``grad_input`` is exact for the global batch
    (one allreduce of ``2C`` numbers); ``grad_weight`` and ``grad_bias`` are
    this rank's shares, which :func:`allreduce_gradients` sums with the rest.

    forward: xhat = (x - mean) * inv_std, y = weight * xhat + bias
      =>  dx = weight * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat))
          with the means over the global batch.
    """
    xhat, inv_std, weight, count = cache
    dy = np.asarray(grad_output)
    if dy.shape != xhat.shape:
        raise ValueError(f"grad_output must have shape {xhat.shape}, got {dy.shape}")
    C = dy.shape[1]
    acc = np.float64
    local = np.empty(2 * C, dtype=acc)
    local[:C] = dy.sum(axis=(0, 2, 3), dtype=acc)
    local[C:] = (dy * xhat).sum(axis=(0, 2, 3), dtype=acc)
    grad_bias = local[:C].astype(dy.dtype)
    grad_weight = local[C:].astype(dy.dtype)
    tot = _allreduce_inplace(local.copy(), "SUM", "sync_batch_norm")
    shape = (1, C, 1, 1)
    mean_dy = (tot[:C] / count).astype(dy.dtype).reshape(shape)
    mean_dyx = (tot[C:] / count).astype(dy.dtype).reshape(shape)
    g = inv_std.reshape(shape)
    if weight is not None:
        g = g * np.asarray(weight, dtype=dy.dtype).reshape(shape)
    dx = g * (dy - mean_dy - xhat * mean_dyx)
    return dx.astype(dy.dtype, copy=False), grad_weight, grad_bias
