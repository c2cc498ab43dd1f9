"""Batch normalisation whose training statistics span every rank's shard.

:class:`SyncBatchNorm2d` is a :class:`~convcore.nn.BatchNorm2d` that, in
training mode, computes the mean and variance of the *global* batch (all
ranks together, through :mod:`convcore.distributed`); in eval mode it is
BatchNorm2d (running statistics, eval-mode folding included).  Without MPI,
or with one rank, it computes what BatchNorm2d does.

:func:`convert_sync_batchnorm` replaces each BatchNorm2d of a model by one,
module by module; the new layer shares the old one's parameters and buffers,
so state-dict names stay the same and checkpoints load either way.
"""
from __future__ import annotations

import numpy as np

from convcore.nn.layers import BatchNorm2d
from convcore.nn.module import Module, _not_ready

__all__ = ["SyncBatchNorm2d", "convert_sync_batchnorm"]

# Per-step caches of a layer, not carried over when a layer is converted.
_CACHES = ("_x", "_batch", "_fold", "_sync_cache", "_stats")


class SyncBatchNorm2d(BatchNorm2d):
    """BatchNorm2d with training statistics over the global batch of all ranks
    (as ``torch.nn.SyncBatchNorm``).

    Each training step costs two small allreduces, one in :meth:`forward` and
    one in :meth:`backward`.  The layer assumes, as
    :func:`convcore.distributed.allreduce_gradients` with ``local_batch`` set
    to the shard size does, that each rank's loss is the mean over its own
    samples and that ranks are weighted by their number of samples; training
    then reproduces single-process BatchNorm over the global batch.

    Examples
    --------
    >>> import numpy as np
    >>> from convcore import nn
    >>> bn = nn.SyncBatchNorm2d(2, dtype=np.float64)
    >>> x = np.arange(16.0).reshape(2, 2, 2, 2)
    >>> bool(np.allclose(bn(x), nn.BatchNorm2d(2, dtype=np.float64)(x)))  # one process
    True
    """

    _sync_cache = None
    _saved_state = ("_x", "_stats", "_sync_cache")

    @classmethod
    def from_batch_norm(cls, bn):
        """A SyncBatchNorm2d with ``bn``'s settings that shares its parameters
        and buffers (the same ``Parameter`` objects and arrays)."""
        if not isinstance(bn, BatchNorm2d):
            raise TypeError(f"expected a convcore.nn.BatchNorm2d, got {type(bn).__name__}")
        new = cls.__new__(cls)
        Module.__init__(new)
        for k, v in vars(bn).items():
            if k in ("_parameters", "_buffers", "_modules"):
                getattr(new, k).update(v)
            elif k not in _CACHES:
                object.__setattr__(new, k, v)
        object.__setattr__(new, "_x", None)
        object.__setattr__(new, "_stats", None)
        return new

    def forward(self, x):
        if not self.training:
            self._sync_cache = None
            return super().forward(x)
        if x.ndim != 4:
            raise ValueError(f"SyncBatchNorm2d expects a 4-D (N, C, H, W) input, got shape "
                             f"{tuple(x.shape)}")
        from convcore.distributed.batchnorm import sync_batch_norm_forward
        track = self.track_running_stats and self.running_mean is not None
        if track:
            self.num_batches_tracked += 1
        y, _, _, cache = sync_batch_norm_forward(
            x, None if self.weight is None else self.weight.data,
            None if self.bias is None else self.bias.data, self.eps,
            running_mean=self.running_mean if track else None,
            running_var=self.running_var if track else None, momentum=self.momentum)
        self._x, self._sync_cache = None, cache
        return y

    def backward(self, grad_output):
        cache = self._sync_cache
        if cache is None:
            if not self.training:
                return super().backward(grad_output)
            raise _not_ready(self)
        from convcore.distributed.batchnorm import sync_batch_norm_backward
        # Each rank's upstream gradient is that of its own mean loss; the
        # gradient of the global mean loss is it times (local / global count)
        # (allreduce_gradients(local_batch=n) weights ranks the same way).
        # The statistics' terms need the global-scale gradient; the results
        # go back to the per-rank scale that the weighted allreduce expects.
        xhat, count = cache[0], cache[3]
        local = xhat.shape[0] * xhat.shape[2] * xhat.shape[3]
        frac = local / count
        dy = np.asarray(grad_output)
        dx, gw, gb = sync_batch_norm_backward(dy * dy.dtype.type(frac), cache)
        if local:
            inv = dy.dtype.type(1.0 / frac)
            dx, gw, gb = dx * inv, gw * inv, gb * inv
        if self.weight is not None:   # backward accumulates into .grad
            self.weight._accumulate(gw.reshape(self.weight.data.shape))
            self.bias._accumulate(gb.reshape(self.bias.data.shape))
        return dx


def convert_sync_batchnorm(model):
    """Replace every :class:`~convcore.nn.BatchNorm2d` below ``model`` by a
    :class:`SyncBatchNorm2d` (statistics over the global batch of all ranks in
    training mode); returns how many layers are synchronised, counting those
    that already were.  Evaluation mode is unchanged (running statistics).

    Each new layer shares the old one's parameters and buffers, so an optimiser
    built before the conversion keeps working and ``state_dict()`` keeps its
    names.  ``model`` is a :class:`~convcore.nn.Module` or any object holding
    modules in its attributes (directly or in lists, tuples and dicts).  A
    layer that is itself the model cannot be replaced in place: use
    :meth:`SyncBatchNorm2d.from_batch_norm` for it.

    Examples
    --------
    >>> from convcore import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.BatchNorm2d(2), nn.ReLU())
    >>> nn.convert_sync_batchnorm(net)
    1
    >>> type(net[1]).__name__, sorted(net.state_dict()) == sorted(
    ...     nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()).state_dict())
    ('SyncBatchNorm2d', True)
    """
    if isinstance(model, BatchNorm2d) and not isinstance(model, SyncBatchNorm2d):
        raise TypeError("convert_sync_batchnorm replaces the batch norms inside a model; "
                        "for a BatchNorm2d on its own use SyncBatchNorm2d.from_batch_norm(bn)")
    memo, seen = {}, set()
    _convert_inside(model, memo, seen)
    if isinstance(model, Module) and any(old._fold is not None for old, _ in memo.values()):
        from convcore.nn import fold
        fold.plan(model)   # the eval-mode folds named the replaced layers
    return len(memo)


def _convert_inside(obj, memo, seen):
    """Swap the batch norms among ``obj``'s attributes, in place."""
    if id(obj) in seen or not hasattr(obj, "__dict__"):
        return
    seen.add(id(obj))
    for k, v in list(vars(obj).items()):
        new = _converted(v, memo, seen)
        if new is not v:
            # object.__setattr__: Module.__setattr__ would move the name to the
            # end of _modules (the registry itself is updated as a dict below).
            object.__setattr__(obj, k, new)


def _converted(v, memo, seen):
    """``v``, or what replaces it; lists and dicts are updated in place."""
    if isinstance(v, BatchNorm2d):
        if id(v) not in memo:
            memo[id(v)] = (v, v if isinstance(v, SyncBatchNorm2d)
                           else SyncBatchNorm2d.from_batch_norm(v))
        return memo[id(v)][1]
    if isinstance(v, (list, dict)):
        if id(v) not in seen:
            seen.add(id(v))
            items = v.items() if isinstance(v, dict) else enumerate(v)
            for k, e in list(items):
                new = _converted(e, memo, seen)
                if new is not e:
                    v[k] = new
        return v
    if type(v) is tuple:
        new = tuple(_converted(e, memo, seen) for e in v)
        return v if all(a is b for a, b in zip(new, v)) else new
    if hasattr(v, "forward") and hasattr(v, "backward") and not isinstance(v, type):
        _convert_inside(v, memo, seen)
    return v
