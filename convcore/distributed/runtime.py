"""The distributed runtime: launcher detection, MPI start-up, rank and world
size, ending the job (abort, watchdog, uncaught exceptions), barrier and the
time spent in collectives.

mpi4py is imported by :func:`init` (and :func:`is_available`), never when this
module is imported.
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

__all__ = [
    "init", "is_initialized", "is_available", "rank", "world_size",
    "local_rank", "local_world_size", "is_main_process", "launched_by_mpi",
    "barrier", "abort", "communication_stats", "threads_per_rank",
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
