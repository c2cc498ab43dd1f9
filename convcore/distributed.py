"""Data-parallel training across processes over MPI (through ``mpi4py``).

Every process (a *rank*) holds a full copy of the model, reads its own shard
of each global batch, runs forward and backward on it, and the ranks then
average their gradients with one ``Allreduce`` per bucket of parameters, so
that every rank applies the same update and the weights stay identical.  For
a model without BatchNorm, ``W`` ranks with global batch ``B`` compute the same
weights, to float rounding, as one process with batch ``B`` and the same data
order.

The functions work in a user's own training loop::

    import convcore.distributed as dist
    dist.init()                                  # under mpiexec
    dist.broadcast_parameters(model)             # same start on every rank
    batches = dist.ShardedBatches(len(x), batch_size=64, seed=0)
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        for idx in batches:                      # this rank's share of a batch
            model.zero_grad()
            loss_grad = ...                      # forward/backward on x[idx]
            dist.allreduce_gradients(model, local_batch=len(idx))
            optimizer.step()

launched as ``mpiexec -n 2 python my_loop.py``.  Without :func:`init` (or
under ``mpiexec -n 1``) everything here works as a single process: rank 0,
world size 1, reductions are identities.

A rank that dies makes the MPI launcher end the whole job.  A rank that
stops answering (hung, or finished early) would leave the others waiting in
a collective forever; :func:`init` starts a watchdog that aborts the job, with
a message saying so, when one collective waits longer than ``timeout``
seconds.  An uncaught exception on any rank aborts the whole job too.
"""
from __future__ import annotations

import atexit
import math
import numbers
import os
import sys
import threading
import time
import traceback

import numpy as np

__all__ = [
    "init", "is_initialized", "is_available", "rank", "world_size",
    "local_rank", "local_world_size", "is_main_process", "launched_by_mpi",
    "barrier", "abort", "communication_stats", "allreduce_gradients",
    "broadcast_parameters", "broadcast_object", "broadcast_arrays", "allreduce_array",
    "reduce_metrics", "average_buffers", "threads_per_rank",
    "epoch_permutation", "shard_bounds", "ShardedBatches", "shard_indices",
    "sync_batch_norm_forward", "sync_batch_norm_backward", "convert_sync_batchnorm",
    "DistributedError", "INSTALL_HINT", "LAUNCH_HINT",
]

INSTALL_HINT = 'pip install "convcore[mpi]"'
LAUNCH_HINT = "mpiexec -n 2 convcore train --distributed ..."

# Environment variables that MPI launchers set in the processes they start
# (MPICH/Hydra and Intel MPI, Open MPI, PMI/PMIx-based launchers such as srun).
# Not Slurm's own SLURM_* variables: they are set in a whole allocation,
# also for a plain `python` that no launcher started.
_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE",
                       "MPI_LOCALNRANKS")
_LAUNCHER_VARS = _LAUNCHER_SIZE_VARS + ("PMI_RANK", "OMPI_COMM_WORLD_RANK",
                                        "PMIX_RANK", "PMI_FD", "HYDRA_CONTROL_FD")

_DEFAULT_TIMEOUT = 300.0          # seconds one collective may wait
_DEFAULT_BUCKET_BYTES = 16 * 2**20


class DistributedError(RuntimeError):
    """MPI is missing, not launched as expected, or the ranks disagree."""


class _State:
    def __init__(self):
        self.MPI = None
        self.comm = None
        self.local_comm = None
        self.timeout = None
        self.deadline = None        # monotonic time when the current collective times out
        self.what = ""              # the collective under way, for the watchdog's message
        self.watchdog = None
        self.hooked = False
        self.comm_seconds = 0.0     # time spent inside collectives (for reports)
        self.n_collectives = 0


_state = _State()
_init_lock = threading.Lock()


# ----------------------------------------------------------------------------
# Start-up
# ----------------------------------------------------------------------------

def launched_by_mpi() -> bool:
    """Whether this process looks started by an MPI launcher (``mpiexec``,
    ``mpirun``, ``srun``), judged from the environment variables they set.

    Examples
    --------
    >>> import convcore.distributed as dist
    >>> isinstance(dist.launched_by_mpi(), bool)
    True
    """
    return any(v in os.environ for v in _LAUNCHER_VARS)


def _launcher_world_size():
    for v in _LAUNCHER_SIZE_VARS:
        val = os.environ.get(v)
        if val:
            try:
                return int(val)
            except ValueError:
                continue
    return None


def _import_mpi():
    """Import mpi4py's MPI module, turning every way it can fail into a
    :class:`DistributedError` that says what to install."""
    try:
        import mpi4py
    except ImportError as e:
        raise DistributedError(
            f"distributed training needs mpi4py and an MPI library, which are not "
            f"installed ({e}). Install them with: {INSTALL_HINT}  (brings mpi4py and "
            f"the MPICH runtime from PyPI; a system MPI such as Open MPI works too)"
        ) from None
    # Initialise ourselves so that MPI_Init_thread asks for MPI_THREAD_MULTIPLE
    # (the watchdog thread may call MPI_Abort while the main thread waits).
    mpi4py.rc.thread_level = "multiple"
    mpi4py.rc.initialize = False     # init() decides when (not at import) ...
    mpi4py.rc.finalize = True        # ... but MPI_Finalize still runs at exit: a rank
    #                                  that exits without it makes the launcher kill the job
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as e:
        msg = str(e).strip().splitlines()
        first = msg[0] if msg else type(e).__name__
        raise DistributedError(
            f"mpi4py is installed but could not load an MPI library ({first}). "
            f"Install one with: {INSTALL_HINT}  (the MPICH runtime from PyPI), or a "
            f"system MPI (e.g. apt-get install libopenmpi-dev openmpi-bin)"
        ) from None
    return MPI


def is_available() -> bool:
    """Whether mpi4py and an MPI library can be loaded in this environment.

    Examples
    --------
    >>> import convcore.distributed as dist
    >>> isinstance(dist.is_available(), bool)
    True
    """
    if _state.comm is not None:
        return True
    try:
        _import_mpi()
    except DistributedError:
        return False
    return True


def init(timeout=None, *, require_launcher=False, abort_on_exception=True):
    """Initialise MPI and convcore's distributed state; idempotent.

    Parameters
    ----------
    timeout : float, optional
        Seconds one collective (allreduce, broadcast, barrier) may wait for the
        other ranks before the job is aborted with a message saying a rank
        died or hung.  Default: ``CONVCORE_DIST_TIMEOUT`` from the environment,
        else 300.  ``0`` or ``math.inf`` turns the watchdog off.
    require_launcher : bool
        Raise :class:`DistributedError` saying how to launch when this process
        was not started by an MPI launcher (``mpiexec``).
    abort_on_exception : bool
        Make an uncaught exception on any rank abort the whole job (instead of
        leaving the other ranks waiting).

    Returns
    -------
    comm : mpi4py.MPI.Comm
        The communicator of all ranks (a duplicate of ``COMM_WORLD``).

    Raises
    ------
    DistributedError
        mpi4py or an MPI library is missing (the message says
        ``pip install "convcore[mpi]"``), or ``require_launcher`` and the
        process was not started by ``mpiexec``.
    """
    with _init_lock:
        if _state.comm is not None:
            if timeout is not None:
                _state.timeout = _check_timeout(timeout)
            return _state.comm
        if timeout is None:
            env = os.environ.get("CONVCORE_DIST_TIMEOUT")
            try:
                timeout = float(env) if env else _DEFAULT_TIMEOUT
            except ValueError:
                raise ValueError(f"CONVCORE_DIST_TIMEOUT must be a number of seconds, "
                                 f"got {env!r}") from None
        timeout = _check_timeout(timeout)
        MPI = _import_mpi()
        if require_launcher and not launched_by_mpi():
            raise DistributedError(
                "distributed training must be started by an MPI launcher, one process "
                f"per rank, e.g.:  {LAUNCH_HINT}  (on several hosts: mpiexec -hosts "
                "h1,h2 -n 4 ...); to train in one process, leave out --distributed")
        if not MPI.Is_initialized():
            MPI.Init_thread(MPI.THREAD_MULTIPLE)
            # Runs before mpi4py's MPI_Finalize (atexit is last in, first out):
            # output still buffered would be lost once the launcher sees finalize.
            atexit.register(_flush_std)
        comm = MPI.COMM_WORLD.Dup()
        expected = _launcher_world_size()
        if expected is not None and expected > 1 and comm.Get_size() == 1:
            raise DistributedError(
                f"the launcher started {expected} processes but MPI sees each as a world "
                "of one: mpiexec and mpi4py use different MPI libraries. Use the mpiexec "
                f"that comes with the MPI mpi4py loads ({INSTALL_HINT} puts both in the "
                "same environment)")
        _state.MPI = MPI
        _state.comm = comm
        _state.local_comm = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
        _state.timeout = timeout
        if abort_on_exception and not _state.hooked:
            _install_excepthook()
        _start_watchdog()
        return comm


def _flush_std():
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:   # pragma: no cover - closed stream
            pass


def _check_timeout(timeout):
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout must be a number of seconds, got {type(timeout).__name__}")
    timeout = float(timeout)
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds (0 = no watchdog), got {timeout}")
    return None if timeout == 0 or math.isinf(timeout) else timeout


def is_initialized() -> bool:
    """Whether :func:`init` has run in this process."""
    return _state.comm is not None


def _comm():
    return _state.comm


def rank() -> int:
    """This process's rank, ``0 .. world_size() - 1`` (0 when not initialised).

    Examples
    --------
    >>> import convcore.distributed as dist
    >>> dist.rank() if not dist.is_initialized() else 0
    0
    """
    c = _state.comm
    return 0 if c is None else c.Get_rank()


def world_size() -> int:
    """Number of ranks (1 when not initialised).

    Examples
    --------
    >>> import convcore.distributed as dist
    >>> dist.world_size() >= 1
    True
    """
    c = _state.comm
    return 1 if c is None else c.Get_size()


def local_rank() -> int:
    """Rank among the processes on this host."""
    c = _state.local_comm
    return 0 if c is None else c.Get_rank()


def local_world_size() -> int:
    """Number of ranks on this host (to divide its cores between them)."""
    c = _state.local_comm
    return 1 if c is None else c.Get_size()


def is_main_process() -> bool:
    """True on rank 0, the rank that prints and writes files."""
    return rank() == 0


_ABORT_DRAIN_S = 0.5   # seconds between printing the reason and aborting


def _abort(code, message):
    """End the whole job: print ``message`` and call MPI_Abort (which makes
    the launcher kill every rank)."""
    try:
        sys.stderr.write(message.rstrip() + "\n")
        sys.stderr.flush()
    except Exception:   # pragma: no cover - stderr gone
        pass
    # The launcher forwards each rank's stderr through a pipe and kills every
    # rank as soon as one aborts; give it a moment to drain the message first,
    # or the user may see a failed job with no reason printed.
    time.sleep(_ABORT_DRAIN_S)
    MPI = _state.MPI
    try:
        if MPI is not None and MPI.Query_thread() >= MPI.THREAD_MULTIPLE:
            MPI.COMM_WORLD.Abort(code)
    finally:
        os._exit(code)   # a process that exits without MPI_Finalize also ends the job


def abort(code=1, message=""):
    """End every rank of the job now with exit status ``code`` (MPI_Abort),
    after writing ``message`` to stderr.  Use it where one rank meets an error
    the others cannot know about: returning normally would leave them waiting
    in their next collective.  Without MPI, exits the process."""
    _abort(int(code), message)


def threads_per_rank():
    """This host's usable cores divided among the ranks on it (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:   # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // local_world_size())


def _install_excepthook():
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        if _state.comm is None or world_size() == 1 or issubclass(exc_type, KeyboardInterrupt):
            return previous(exc_type, exc, tb)
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        _abort(1, f"{text}convcore.distributed: rank {rank()} of {world_size()} raised "
                  f"{exc_type.__name__}; aborting every rank of the job")

    sys.excepthook = hook
    _state.hooked = True


def _start_watchdog():
    if _state.watchdog is not None or _state.timeout is None or world_size() == 1:
        return

    def watch():
        while True:
            t = _state.timeout
            time.sleep(0.5 if t is None else min(1.0, max(0.05, t / 10)))
            dl = _state.deadline
            if dl is not None and time.monotonic() > dl:
                _abort(3, f"convcore.distributed: rank {rank()} of {world_size()} waited "
                          f"more than {_state.timeout:g} s in {_state.what} for the other "
                          f"ranks: a rank has died, hung or left the loop early. "
                          f"Aborting the job (set the limit with init(timeout=...), "
                          f"--dist-timeout or CONVCORE_DIST_TIMEOUT)")

    th = threading.Thread(target=watch, name="convcore-dist-watchdog", daemon=True)
    th.start()
    _state.watchdog = th


class _Collective:
    """Context manager that arms the watchdog and accounts the time spent."""
    __slots__ = ("what", "t0")

    def __init__(self, what):
        self.what = what

    def __enter__(self):
        self.t0 = time.perf_counter()
        if _state.timeout is not None:
            _state.what = self.what
            _state.deadline = time.monotonic() + _state.timeout
        return self

    def __exit__(self, *exc):
        _state.deadline = None
        _state.comm_seconds += time.perf_counter() - self.t0
        _state.n_collectives += 1
        return False


def communication_stats(reset=False):
    """Seconds spent in collectives and their number since the last reset
    (waiting for slower ranks included)."""
    out = {"seconds": _state.comm_seconds, "collectives": _state.n_collectives}
    if reset:
        _state.comm_seconds = 0.0
        _state.n_collectives = 0
    return out


def barrier():
    """Wait until every rank gets here (no-op without MPI)."""
    c = _state.comm
    if c is None or c.Get_size() == 1:
        return
    with _Collective("barrier"):
        c.Barrier()


# ----------------------------------------------------------------------------
# Gradients and parameters
# ----------------------------------------------------------------------------

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
    as_int = True
    if local_batch is not None:
        if isinstance(local_batch, bool) or not isinstance(local_batch, numbers.Real):
            raise TypeError(f"local_batch must be a number, got {type(local_batch).__name__}")
        as_int = isinstance(local_batch, numbers.Integral)
        local_batch = int(local_batch) if as_int else float(local_batch)
        if not local_batch >= 0 or math.isinf(local_batch):
            raise ValueError(f"local_batch must be a finite number >= 0, got {local_batch}")
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
        buf = b.buf
        scale = 1.0 if local_batch is None else float(local_batch)
        for p, off, size in b.slots:
            view = buf[off:off + size]
            g = p.grad
            if local_batch == 0 or g is None:
                view[...] = 0
            elif g is plan.views.get(id(p)):
                if scale != 1.0:
                    view *= scale
            else:
                if g.shape != p.data.shape:
                    raise ValueError(f"a gradient has shape {g.shape}, its parameter {p.data.shape}")
                np.multiply(g.reshape(-1), scale, out=view, casting="unsafe")
        if b.buf.size > sum(s for _, _, s in b.slots):
            buf[-1] = 0 if local_batch is None else local_batch
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


# ----------------------------------------------------------------------------
# Data sharding
# ----------------------------------------------------------------------------

def epoch_permutation(n, seed, epoch):
    """The sample order of one epoch: a permutation of ``range(n)`` that
    depends only on ``(seed, epoch)``, the same on every rank and in a
    single-process run.

    Examples
    --------
    >>> import convcore.distributed as dist
    >>> p = dist.epoch_permutation(5, seed=0, epoch=0)
    >>> sorted(p.tolist())
    [0, 1, 2, 3, 4]
    >>> bool((p == dist.epoch_permutation(5, seed=0, epoch=0)).all())
    True
    """
    n = _count(n, "n", 0)
    rng = np.random.default_rng([int(seed), int(epoch)])
    return rng.permutation(n)


def shard_bounds(n, rank=None, world_size=None):
    """``(start, stop)`` of this rank's contiguous share of ``n`` items.

    The first ``n % world_size`` ranks get one item more; shares are disjoint
    and in rank order cover ``range(n)``.

    Examples
    --------
    >>> import convcore.distributed as dist
    >>> [dist.shard_bounds(10, r, 4) for r in range(4)]
    [(0, 3), (3, 6), (6, 8), (8, 10)]
    """
    n = _count(n, "n", 0)
    r, w = _rank_world(rank, world_size)
    q, m = divmod(n, w)
    start = r * q + min(r, m)
    return start, start + q + (1 if r < m else 0)


def shard_indices(indices, rank=None, world_size=None):
    """This rank's contiguous share of a global batch of ``indices``.

    Examples
    --------
    >>> import numpy as np, convcore.distributed as dist
    >>> dist.shard_indices(np.arange(6), rank=1, world_size=2)
    array([3, 4, 5])
    """
    a, b = shard_bounds(len(indices), rank, world_size)
    return indices[a:b]


def _rank_world(rank_, world):
    r = rank() if rank_ is None else _count(rank_, "rank", 0)
    w = world_size() if world is None else _count(world, "world_size", 1)
    if r >= w:
        raise ValueError(f"rank must be < world_size ({w}), got {r}")
    return r, w


def _count(n, name, minimum):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    n = int(n)
    if n < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {n}")
    return n


class ShardedBatches:
    """Seeded batches of sample indices, each global batch split across ranks.

    Epoch ``e`` visits :func:`epoch_permutation` ``(n, seed, e)`` (or
    ``range(n)`` without shuffling) in global batches of ``batch_size``; this
    rank gets a contiguous, disjoint share of each (see :func:`shard_bounds`).
    Concatenating the shares of ranks ``0 .. W-1`` gives the global batch, so
    the global order is the same as a single-process run with the same seed,
    for any number of ranks, and every rank yields the same number of
    batches (a share can be empty when a batch has fewer samples than ranks).

    Parameters
    ----------
    n : int
        Number of samples.
    batch_size : int
        Global batch size (over all ranks).
    shuffle : bool
        Permute the samples each epoch (seeded), else keep their order.
    seed : int
        Seed of the permutation.
    drop_last : bool
        Drop a last global batch smaller than ``batch_size``.
    rank, world_size : int, optional
        Default: this process's rank and the number of ranks.
    start_batch : int
        Skip the first ``start_batch`` global batches of the epoch set by
        :meth:`set_epoch` (resuming in the middle of an epoch).

    Examples
    --------
    >>> import convcore.distributed as dist
    >>> b = dist.ShardedBatches(10, batch_size=4, shuffle=False, rank=1, world_size=2)
    >>> [idx.tolist() for idx in b]
    [[2, 3], [6, 7], [9]]
    >>> len(b)
    3
    """

    def __init__(self, n, batch_size, *, shuffle=True, seed=0, drop_last=False,
                 rank=None, world_size=None, start_batch=0):
        self.n = _count(n, "n", 0)
        self.batch_size = _count(batch_size, "batch_size", 1)
        self.rank, self.world_size = _rank_world(rank, world_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.start_batch = _count(start_batch, "start_batch", 0)

    def set_epoch(self, epoch, start_batch=0):
        """Choose the epoch whose order the next iteration follows."""
        self.epoch = _count(epoch, "epoch", 0)
        self.start_batch = _count(start_batch, "start_batch", 0)

    def __len__(self):
        if self.drop_last:
            return self.n // self.batch_size
        return -(-self.n // self.batch_size)

    def global_batches(self):
        """The global batches of the current epoch (index arrays), as one
        process would see them."""
        order = (epoch_permutation(self.n, self.seed, self.epoch) if self.shuffle
                 else np.arange(self.n))
        for i in range(self.start_batch, len(self)):
            yield order[i * self.batch_size:(i + 1) * self.batch_size]

    def __iter__(self):
        for batch in self.global_batches():
            yield shard_indices(batch, self.rank, self.world_size)


# ----------------------------------------------------------------------------
# Synchronised BatchNorm (statistics over the global batch)
# ----------------------------------------------------------------------------

def sync_batch_norm_forward(x, weight, bias, eps=1e-5):
    """Training-mode BatchNorm over the *global* batch: per channel mean and
    biased variance of ``x`` (N, C, H, W) on all ranks together.

    Returns ``(y, mean, var_unbiased, cache)``; ``var_unbiased`` (over the
    global count) is the one the running statistics track, ``cache`` feeds
    :func:`sync_batch_norm_backward`.  One allreduce of ``2C + 1`` numbers.
    Without MPI this is ordinary BatchNorm.
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


def _children(obj, seen):
    """Sub-objects of a module: attributes that have forward/backward, and
    such objects inside lists, tuples and dicts."""
    vals = list(vars(obj).values()) if hasattr(obj, "__dict__") else []
    out = []
    while vals:
        v = vals.pop(0)
        if isinstance(v, (list, tuple)):
            vals[:0] = list(v)
        elif isinstance(v, dict):
            vals[:0] = list(v.values())
        elif hasattr(v, "forward") and hasattr(v, "backward") and not isinstance(v, type):
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
    return out


def _is_batch_norm(m):
    """convcore.nn.BatchNorm2d, or any class derived from one named so (a
    user's own BatchNorm2d with the same attributes: weight, bias, eps,
    momentum, running_mean, running_var, training)."""
    try:
        from convcore.nn import BatchNorm2d
    except ImportError:
        BatchNorm2d = None
    if BatchNorm2d is not None and isinstance(m, BatchNorm2d):
        return True
    return any(c.__name__ == "BatchNorm2d" for c in type(m).__mro__)


_sync_classes = {}


def _sync_class(cls):
    if getattr(cls, "_convcore_sync_bn", False):
        return cls
    if cls in _sync_classes:
        return _sync_classes[cls]

    def forward(self, x):
        if not getattr(self, "training", True):
            self._sync_cache = None
            return cls.forward(self, x)
        w = getattr(self, "weight", None)
        b = getattr(self, "bias", None)
        wd = None if w is None else w.data
        bd = None if b is None else b.data
        y, mean, var_unbiased, cache = sync_batch_norm_forward(x, wd, bd, self.eps)
        self._sync_cache = cache
        rm = getattr(self, "running_mean", None)
        rv = getattr(self, "running_var", None)
        if rm is not None and rv is not None and getattr(self, "track_running_stats", True):
            if getattr(self, "num_batches_tracked", None) is not None:
                self.num_batches_tracked += 1
            mom = getattr(self, "momentum", 0.1)
            if mom is None:   # cumulative moving average
                mom = 1.0 / float(np.asarray(self.num_batches_tracked))
            rm *= 1 - mom
            rm += mom * mean.astype(rm.dtype)
            rv *= 1 - mom
            rv += mom * var_unbiased.astype(rv.dtype)
        return y

    def backward(self, grad_output):
        cache = getattr(self, "_sync_cache", None)
        if cache is None:
            if not getattr(self, "training", True):
                return cls.backward(self, grad_output)
            raise RuntimeError("backward called before forward")
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
        w = getattr(self, "weight", None)
        b = getattr(self, "bias", None)
        for p, g in ((w, gw), (b, gb)):   # backward accumulates into .grad
            if p is None:
                continue
            if p.grad is None:
                p.grad = g.reshape(p.data.shape).copy()
            else:
                p.grad += g.reshape(p.data.shape)
        return dx

    new = type("Sync" + cls.__name__, (cls,), {"forward": forward, "backward": backward,
                                               "_convcore_sync_bn": True,
                                               "__doc__": f"{cls.__name__} whose training "
                                               "statistics span every rank's shard."})
    _sync_classes[cls] = new
    return new


def convert_sync_batchnorm(model):
    """Make every BatchNorm layer of ``model`` use statistics over the global
    batch (all ranks' shards together) in training mode; returns how many
    layers were converted.  Evaluation mode is unchanged (running statistics).

    Each converted layer costs two small allreduces per step (forward and
    backward).  Without MPI the layers compute what plain BatchNorm does.

    The layers assume, as :func:`allreduce_gradients` with ``local_batch`` set
    to the shard size does, that each rank's loss is the mean over its own
    samples and that ranks are weighted by their number of samples; training
    then reproduces single-process BatchNorm over the global batch.
    """
    if hasattr(model, "modules") and callable(model.modules):
        mods = list(model.modules())        # convcore.nn.Module: itself and below
    else:
        seen = {id(model)}
        todo, mods = [model], []
        while todo:
            m = todo.pop()
            mods.append(m)
            todo.extend(_children(m, seen))
    n = 0
    for m in mods:
        if _is_batch_norm(m):
            m.__class__ = _sync_class(type(m))
            n += 1
    return n
