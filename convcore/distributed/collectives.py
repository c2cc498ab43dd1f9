"""Collectives over the ranks: gradient buckets and their allreduce, array and
metric reductions, broadcasts of objects, arrays and parameters, and the
averaging of non-parameter state.  Without MPI (or with one rank) each is an
identity or a no-op."""
from __future__ import annotations

import math
import numbers

import numpy as np

from convcore.distributed.runtime import DistributedError, _Collective, _state

__all__ = [
    "allreduce_gradients", "allreduce_array", "reduce_metrics", "broadcast_object",
    "broadcast_arrays", "broadcast_parameters", "average_buffers",
]

_DEFAULT_BUCKET_BYTES = 16 * 2**20


def _parameters(model):
    if hasattr(model, "parameters") and callable(model.parameters):
        params = list(model.parameters())
    else:
        params = list(model)
    for i, p in enumerate(params):
        if not hasattr(p, "data"):
            raise TypeError(f"expected a model whose parameters() yield objects with "
                            f".data and .grad arrays, got {type(p).__name__} at position {i}")
    return params


class _Bucket:
    __slots__ = ("dtype", "buf", "slots")

    def __init__(self, dtype, slots, extra):
        # slots: list of (param, offset, size); extra: trailing elements (counts)
        self.dtype = dtype
        self.slots = slots
        n = sum(s for _, _, s in slots) + extra
        self.buf = np.zeros(n, dtype=dtype)


class _GradPlan:
    """Parameters grouped by dtype into buckets of at most ``bucket_bytes``."""

    def __init__(self, params, bucket_bytes):
        self.key = tuple((id(p), p.data.shape, p.data.dtype.str) for p in params)
        self.buckets = []
        by_dtype = {}
        for p in params:
            by_dtype.setdefault(np.dtype(p.data.dtype), []).append(p)
        first = True
        for dtype, ps in by_dtype.items():
            if dtype.kind != "f":
                raise TypeError(f"gradients must be floating point, got a parameter of dtype {dtype}")
            cap = max(1, bucket_bytes // dtype.itemsize)
            cur, off = [], 0
            for p in ps:
                size = int(p.data.size)
                if cur and off + size > cap:
                    self.buckets.append(_Bucket(dtype, cur, 1 if first else 0))
                    first = False
                    cur, off = [], 0
                cur.append((p, off, size))
                off += size
            if cur:
                self.buckets.append(_Bucket(dtype, cur, 1 if first else 0))
                first = False
        self.views = {}


_plans = {}


def _plan_for(params, bucket_bytes):
    key = tuple((id(p), p.data.shape, p.data.dtype.str) for p in params)
    plan = _plans.get((key, bucket_bytes))
    if plan is None:
        if len(_plans) > 8:
            _plans.clear()
        plan = _GradPlan(params, bucket_bytes)
        _plans[(key, bucket_bytes)] = plan
    return plan


def allreduce_gradients(model, *, local_batch=None, bucket_bytes=_DEFAULT_BUCKET_BYTES):
    """Average the parameters' gradients over all ranks, in place.

    The gradients are packed into a few contiguous buffers (one per
    ``bucket_bytes`` of parameters and per dtype) and each buffer is summed
    with one ``MPI_Allreduce``.  After the first call each parameter's
    ``.grad`` is a view into its bucket, so later steps whose backward pass
    accumulates in place need no copy.

    Parameters
    ----------
    model : Module or iterable of Parameter
        Anything whose ``parameters()`` (or iteration) yields objects with
        ``.data`` and ``.grad`` arrays.  A ``None`` gradient counts as zero.
    local_batch : int or float, optional
        Number of samples this rank's gradients were averaged over (for a
        weighted mean loss: the sum of this shard's sample weights).  When
        given, the result is the gradient of the mean over the *global* batch
        even when ranks hold different numbers of samples (each rank's
        gradient is weighted by ``local_batch / sum(local_batch)``; a rank with
        an empty shard contributes nothing).  When omitted, the ranks'
        gradients are averaged with equal weights.
    bucket_bytes : int
        Largest bucket, in bytes (a larger parameter gets a bucket of its own).

    Returns
    -------
    total : int, float or None
        The sum of ``local_batch`` over the ranks when given, else None.

    Examples
    --------
    >>> import numpy as np, convcore.distributed as dist
    >>> class P:
    ...     def __init__(self, a): self.data, self.grad = a, np.ones_like(a)
    >>> ps = [P(np.zeros(3)), P(np.zeros((2, 2)))]
    >>> dist.allreduce_gradients(ps, local_batch=4)   # one process: unchanged
    4
    >>> ps[1].grad
    array([[1., 1.],
           [1., 1.]])
    """
    params = _parameters(model)
    local_batch, as_int = _check_local_batch(local_batch)
    comm = _state.comm
    if comm is None or comm.Get_size() == 1:
        for p in params:
            if p.grad is None:
                p.grad = np.zeros_like(p.data)
        return local_batch
    if not params:
        return local_batch
    plan = _plan_for(params, int(bucket_bytes))
    MPI = _state.MPI
    total = None
    for bi, b in enumerate(plan.buckets):
        buf = _pack(b, plan.views, local_batch)
        with _Collective("allreduce_gradients"):
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        if bi == 0 and local_batch is not None:
            total = float(buf[-1])
            total = int(round(total)) if as_int else total
        if local_batch is None:
            buf *= 1.0 / comm.Get_size()
        else:
            if total is None:
                raise DistributedError("internal: batch count missing from the first bucket")
            if total > 0:
                buf *= 1.0 / total
        for p, off, size in b.slots:
            view = buf[off:off + size].reshape(p.data.shape)
            p.grad = view
            plan.views[id(p)] = view
    return total


def _check_local_batch(local_batch):
    """``(local_batch, is_int)``: the number as an int or a float, checked."""
    if local_batch is None:
        return None, True
    if isinstance(local_batch, bool) or not isinstance(local_batch, numbers.Real):
        raise TypeError(f"local_batch must be a number, got {type(local_batch).__name__}")
    as_int = isinstance(local_batch, numbers.Integral)
    local_batch = int(local_batch) if as_int else float(local_batch)
    if not local_batch >= 0 or math.isinf(local_batch):
        raise ValueError(f"local_batch must be a finite number >= 0, got {local_batch}")
    return local_batch, as_int


def _pack(bucket, views, local_batch):
    """Fill ``bucket``'s buffer with its gradients times ``local_batch`` (and,
    in the first bucket, ``local_batch`` itself last); returns the buffer.  A
    gradient that already is its view of the buffer is scaled in place."""
    buf = bucket.buf
    scale = 1.0 if local_batch is None else float(local_batch)
    for p, off, size in bucket.slots:
        view = buf[off:off + size]
        g = p.grad
        if local_batch == 0 or g is None:
            view[...] = 0
        elif g is views.get(id(p)):
            if scale != 1.0:
                view *= scale
        else:
            if g.shape != p.data.shape:
                raise ValueError(f"a gradient has shape {g.shape}, its parameter {p.data.shape}")
            np.multiply(g.reshape(-1), scale, out=view, casting="unsafe")
    if buf.size > sum(s for _, _, s in bucket.slots):
        buf[-1] = 0 if local_batch is None else local_batch
    return buf


def _allreduce_inplace(arr, op_name="SUM", what="allreduce"):
    comm = _state.comm
    if comm is None or comm.Get_size() == 1:
        return arr
    MPI = _state.MPI
    op = getattr(MPI, op_name)
    with _Collective(what):
        comm.Allreduce(MPI.IN_PLACE, arr, op=op)
    return arr


def allreduce_array(x, op="sum"):
    """Reduce a NumPy array over all ranks and return the result (a new array).

    ``op`` is ``"sum"``, ``"max"`` or ``"min"``.

    Examples
    --------
    >>> import numpy as np, convcore.distributed as dist
    >>> dist.allreduce_array(np.array([1.0, 2.0]))   # one process: a copy
    array([1., 2.])
    """
    ops = {"sum": "SUM", "max": "MAX", "min": "MIN"}
    if op not in ops:
        raise ValueError(f"op must be one of {sorted(ops)}, got {op!r}")
    out = np.ascontiguousarray(np.array(x, copy=True))
    return _allreduce_inplace(out, ops[op], f"allreduce({op})")


def reduce_metrics(metrics):
    """Sum a dict of scalar metrics over all ranks in one allreduce.

    Sharded evaluation: each rank sums its share (e.g. ``{"loss_sum": ...,
    "correct": ..., "count": ...}``), this returns the global sums, the same
    on every rank; divide afterwards (``loss_sum / count``).

    Examples
    --------
    >>> import convcore.distributed as dist
    >>> dist.reduce_metrics({"correct": 7, "count": 10})
    {'correct': 7.0, 'count': 10.0}
    """
    keys = sorted(metrics)
    vec = np.array([float(metrics[k]) for k in keys], dtype=np.float64)
    # Every rank must reduce the same keys in the same order.
    _allreduce_inplace(vec, "SUM", "reduce_metrics")
    return {k: float(v) for k, v in zip(keys, vec)}


def broadcast_object(obj, root=0):
    """Send a picklable Python object from ``root`` to every rank (small
    control data only: epoch numbers, paths, flags)."""
    comm = _state.comm
    if comm is None or comm.Get_size() == 1:
        return obj
    with _Collective("broadcast_object"):
        return comm.bcast(obj, root=root)


def _bcast_arrays(arrays, root, bucket_bytes=_DEFAULT_BUCKET_BYTES):
    """Broadcast arrays from root in place, packed into buckets per dtype."""
    comm = _state.comm
    by_dtype = {}
    for a in arrays:
        by_dtype.setdefault(a.dtype, []).append(a)
    for dtype, group in by_dtype.items():
        cap = max(1, bucket_bytes // dtype.itemsize)
        i = 0
        while i < len(group):
            chunk, n = [], 0
            while i < len(group) and (not chunk or n + group[i].size <= cap):
                chunk.append(group[i])
                n += group[i].size
                i += 1
            buf = np.empty(n, dtype=dtype)
            if comm.Get_rank() == root:
                off = 0
                for a in chunk:
                    buf[off:off + a.size] = a.reshape(-1)
                    off += a.size
            with _Collective("broadcast_parameters"):
                comm.Bcast(buf, root=root)
            off = 0
            for a in chunk:
                a[...] = buf[off:off + a.size].reshape(a.shape)
                off += a.size


def broadcast_arrays(arrays, root=0):
    """Send a dict of NumPy arrays from ``root`` to every rank.

    On ``root`` pass the dict; elsewhere anything (it is ignored).  Returns the
    dict on every rank.  Names, shapes and dtypes travel first, then the data
    in a few large messages (no pickling of the array data).  Used to resume
    from a checkpoint that only rank 0 can read.

    Examples
    --------
    >>> import numpy as np, convcore.distributed as dist
    >>> dist.broadcast_arrays({"w": np.ones(2)})   # one process: unchanged
    {'w': array([1., 1.])}
    """
    comm = _state.comm
    if comm is None or comm.Get_size() == 1:
        return arrays
    is_root = comm.Get_rank() == root
    if is_root:
        layout = [(k, np.asarray(v).shape, np.asarray(v).dtype.str) for k, v in arrays.items()]
    else:
        layout = None
    layout = broadcast_object(layout, root)
    out = {}
    for k, shape, dt in layout:
        if is_root:
            out[k] = np.array(arrays[k], copy=True, order="C")   # keeps 0-d arrays 0-d
        else:
            out[k] = np.empty(shape, dtype=np.dtype(dt))
    numeric = [a for a in out.values() if a.dtype.kind in "biufc" and a.size]
    other = {k: a for k, a in out.items() if not (a.dtype.kind in "biufc")}
    _bcast_arrays(numeric, root)
    if other:   # strings and the like: small, sent pickled
        other = broadcast_object(other if is_root else None, root)
        out.update({k: np.asarray(v) for k, v in other.items()})
    return out


def _buffer_names(model, sd):
    """state_dict keys that are not parameters (running statistics...)."""
    if hasattr(model, "named_parameters"):
        pnames = {n for n, _ in model.named_parameters()}
    else:
        pnames = set()
    return sorted(k for k, v in sd.items()
                  if isinstance(v, (np.ndarray, np.generic)) and k not in pnames)


def average_buffers(model):
    """Average the model's floating-point non-parameter state (BatchNorm
    running mean and variance) over the ranks, in place.

    With per-rank BatchNorm statistics each rank's running estimates come
    from its own shards; averaging them before evaluation or a checkpoint
    gives every rank the same model.  A no-op without MPI or for a model
    without ``state_dict``/``load_state_dict``.
    """
    comm = _state.comm
    if comm is None or comm.Get_size() == 1:
        return
    if not (hasattr(model, "state_dict") and hasattr(model, "load_state_dict")):
        return
    sd = model.state_dict()
    names = [k for k in _buffer_names(model, sd) if np.asarray(sd[k]).dtype.kind == "f"]
    if not names:
        return
    arrays = [np.array(sd[k], dtype=np.float64, copy=True) for k in names]
    _check_same_layout(arrays, "buffers", names)
    flat = np.concatenate([a.reshape(-1) for a in arrays])
    _allreduce_inplace(flat, "SUM", "average_buffers")
    flat /= comm.Get_size()
    off = 0
    for k, a in zip(names, arrays):
        sd[k] = flat[off:off + a.size].reshape(a.shape).astype(np.asarray(sd[k]).dtype)
        off += a.size
    model.load_state_dict(sd)


def broadcast_parameters(model, root=0):
    """Copy the parameters (and, for a model with ``state_dict``, its other
    state such as BatchNorm running statistics) from ``root`` to every rank,
    in place.  Call it once after building the model, or after loading a
    checkpoint on one rank, so that all ranks start from the same weights.

    Raises
    ------
    DistributedError
        The ranks' models differ in their parameters' names, shapes or dtypes.

    Examples
    --------
    >>> import numpy as np, convcore.distributed as dist
    >>> class P:
    ...     def __init__(self, a): self.data, self.grad = a, None
    >>> dist.broadcast_parameters([P(np.arange(3.0))])   # one process: no-op
    """
    comm = _state.comm
    if comm is None or comm.Get_size() == 1:
        return
    params = _parameters(model)
    arrays = [p.data for p in params]
    _check_same_layout(arrays, "parameters")
    _bcast_arrays(arrays, root)
    for p in params:
        if hasattr(p, "_version"):
            p._version += 1   # (eval-mode folds of it are made again)
    # Non-parameter state (running statistics) travels through state_dict.
    if hasattr(model, "state_dict") and hasattr(model, "load_state_dict"):
        sd = model.state_dict()
        ids = {id(p.data) for p in params}
        names = [k for k in _buffer_names(model, sd) if id(sd[k]) not in ids]
        extra = [np.array(sd[k], order="C") for k in names]   # 0-d stays 0-d
        _check_same_layout(extra, "state_dict entries", names)
        if extra:
            extra = [a.copy() for a in extra]
            _bcast_arrays(extra, root)
            for k, a in zip(names, extra):
                sd[k] = a
            model.load_state_dict(sd)


def _check_same_layout(arrays, what, names=None):
    comm = _state.comm
    sig = [(a.shape, a.dtype.str) for a in arrays]
    if names is not None:
        sig = list(zip(names, sig))
    with _Collective("broadcast_parameters"):
        allsig = comm.allgather(sig)
    for r, s in enumerate(allsig):
        if s != allsig[0]:
            raise DistributedError(f"the ranks' models differ: rank {r}'s {what} are "
                                   f"{_short(s)}, rank 0's are {_short(allsig[0])}")


def _short(sig):
    text = repr(sig)
    return text if len(text) < 300 else text[:300] + "..."
