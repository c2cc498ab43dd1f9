"""Process-wide settings: thread count and the im2col workspace budget."""
from __future__ import annotations

import os
import threading

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
