"""Process-wide settings: thread count and the im2col workspace budget."""
from __future__ import annotations

import os
import threading

from convcore._core import MALLOC_MMAP_THRESHOLD

_lock = threading.Lock()
_state = {"threads": None, "workspace_bytes": 256 * 2**20}


# Upper bound of every thread count convcore accepts (set_num_threads,
# $CONVCORE_NUM_THREADS, ``convcore train --threads``): far above any CPU it
# runs on, far below what overflows the C core's int.
MAX_THREADS = 1024


def _default_threads() -> int:
    from convcore._core import _conv
    env = os.environ.get("CONVCORE_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if not 1 <= n <= MAX_THREADS:
            raise ValueError(f"CONVCORE_NUM_THREADS must be an integer from 1 to "
                             f"{MAX_THREADS}, got {env[:40]!r}")
        return n
    return min(MAX_THREADS, max(1, _conv.max_threads()))


def set_num_threads(n: int) -> None:
    """Set the number of threads convcore's kernels use (OpenMP teams and the
    GEMM tiles run inside them): an int from 1 to ``MAX_THREADS`` (1024).

    The default is ``$CONVCORE_NUM_THREADS`` when set (an integer in the
    same range), else the number of cores OpenMP reports.
    """
    from convcore._validate import as_int   # not at import: _validate imports the backends
    n = as_int(n, "n", 1, MAX_THREADS)
    with _lock:
        _state["threads"] = n


def get_num_threads() -> int:
    """Number of threads convcore's kernels use."""
    n = _state["threads"]
    if n is None:
        with _lock:
            if _state["threads"] is None:
                _state["threads"] = _default_threads()
            n = _state["threads"]
    return n


def set_workspace_limit(nbytes: int) -> None:
    """Bound the im2col workspace of one convolution call, in bytes.

    The batch is processed in chunks whose column matrix fits the budget; a
    single image that needs more than the budget is still processed whole.
    Each thread keeps its workspace for the next call; a lower limit gives it
    up on that thread's next call.  ``nbytes`` is an int from 1 to 2**62.
    """
    from convcore._validate import as_int
    nbytes = as_int(nbytes, "nbytes", 1, 2**62)
    with _lock:
        _state["workspace_bytes"] = nbytes


def get_workspace_limit() -> int:
    """The im2col workspace budget of one convolution call, in bytes."""
    return _state["workspace_bytes"]


#: Arrays of at least this many bytes are what the memory cache keeps: the
#: size from which convcore has glibc map blocks fresh from the system, each
#: faulted in page by page.
MEMORY_CACHE_MIN_BLOCK = MALLOC_MMAP_THRESHOLD
_cache = {"bytes": 0, "previous": None}


def set_memory_cache(nbytes: int) -> None:
    """Keep freed NumPy arrays of 16 MiB or more, up to ``nbytes`` bytes in
    all, and hand each out again for the next array of exactly its size.

    A large array is otherwise mapped fresh from the system and faulted in
    page by page every time it is made (a network's activations and
    gradients, at every step), which on some machines costs more than the
    layers themselves.  The price is memory: up to ``nbytes`` more held while
    the kept blocks wait, so the process's peak grows (measured in the docs'
    Threads and memory page).  Off (0) by default; ``$CONVCORE_MEMORY_CACHE``
    (MiB) sets it at import.  0 turns it off and releases every kept block.

    It applies to every NumPy array the calling thread's context makes from
    then on (the main thread's, for most programs: arrays of threads started
    later, in their own contexts, bypass it), not only convcore's; arrays
    remember their allocator, so every array is freed correctly whenever it
    was made.  ``nbytes``: an int from 0 to 2**62.
    """
    from convcore._validate import as_int
    from convcore._core import _mem
    nbytes = as_int(nbytes, "nbytes", 0, 2**62)
    with _lock:
        if nbytes and _cache["previous"] is None:
            _cache["previous"] = _mem.install(MEMORY_CACHE_MIN_BLOCK, nbytes)
        else:
            _mem.configure(MEMORY_CACHE_MIN_BLOCK, nbytes)
            if not nbytes and _cache["previous"] is not None:
                _mem.restore(_cache["previous"])
                _cache["previous"] = None
        _cache["bytes"] = nbytes


def get_memory_cache() -> int:
    """The memory cache's budget in bytes (0: off); see :func:`set_memory_cache`."""
    return _cache["bytes"]


def _memory_cache_from_environment() -> None:
    env = os.environ.get("CONVCORE_MEMORY_CACHE", "").strip()
    if not env:
        return
    try:
        mib = int(env)
    except ValueError:
        mib = -1
    if not 0 <= mib <= 2**40:
        import warnings
        warnings.warn(f"CONVCORE_MEMORY_CACHE must be a whole number of MiB from 0 to {2**40}, "
                      f"got {env[:40]!r}: running without the memory cache", RuntimeWarning,
                      stacklevel=3)
        return
    set_memory_cache(mib << 20)
