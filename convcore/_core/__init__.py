"""Compiled bindings of the C core.

Before the extensions load the OpenMP runtime, set how long the team's
threads spin between parallel regions before they sleep (unless the user
set it).  A long spin keeps back-to-back layers from paying a thread
wake-up each (a network at batch 1 runs hundreds of short regions); a
short one gives the cores back sooner to the user's own code between calls.
``benchmarks/bench_threads.py`` measures the choice (docs: Threads and
memory).  A user's own OMP_WAIT_POLICY, GOMP_SPINCOUNT or KMP_BLOCKTIME
wins; nothing changes if an OpenMP runtime was already loaded by another
library (it read its settings then).

Under glibc, freed memory is also kept for the next allocation instead of
being handed back to the system at once (see ``_keep_freed_memory``).
"""
import os as _os
import sys as _sys

if not any(k in _os.environ for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")):
    _os.environ["GOMP_SPINCOUNT"] = "100000"     # GNU OpenMP: spins before sleeping
    _os.environ["KMP_BLOCKTIME"] = "2"           # LLVM/Intel OpenMP: milliseconds

#: glibc's malloc thresholds convcore sets at import (bytes), and whether it did:
#: arrays of up to MALLOC_MMAP_THRESHOLD bytes, that size included, come from
#: the heap.  glibc maps a request fresh when the block it needs -- the request
#: plus malloc's header -- reaches its threshold, so the threshold it is given
#: lies a little above: a 16 MiB array (64 channels of 32 x 32 at batch 64,
#: float32) is a common size.
MALLOC_TRIM_THRESHOLD = 128 << 20
MALLOC_MMAP_THRESHOLD = 16 << 20
_MALLOC_HEADER_ROOM = 64 << 10
malloc_tuned = False
_MALLOC_VARS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
                "MALLOC_MMAP_MAX_")


def _keep_freed_memory():
    """Ask glibc to keep up to 128 MiB of freed memory at the top of its heap
    and to serve blocks of up to 16 MiB from the heap.

    By default glibc hands freed memory back to the system once more than a
    few MiB lie free at the top of its heap, and maps blocks above a moving
    threshold fresh from the system each time; the next step's arrays then
    page-fault their memory in again.  A LeNet-5 training step at batch 64
    took 150-190 page faults, 15 % of its time; with these settings none.
    Larger blocks (activations of big networks) are still mapped and handed
    back one by one: serving them from the heap as well fragmented it.  With
    32 MiB blocks ResNet-18's training step at batch 16 peaked at 803 MiB
    instead of 733 MiB.  16 MiB takes in ResNet-18's 9 MiB last-stage weight
    gradients and the 12.25 MiB maps of ResNet-18 at batch 16 and ResNet-50
    at batch 4, which 8 MiB (the first setting) mapped afresh and
    page-faulted in at every step: ResNet-18 on 32x32 inputs at batch 32
    trained 5-8 % faster (31.0-31.5 ms a step against 33.3-33.6), ResNet-18
    at batch 16 4-7 %, in alternating processes; the whole-network
    benchmark's peaks stayed below PyTorch's on every network (ResNet-18's
    process 658 MiB against 609 with 8 MiB and PyTorch's 733; the others
    within 10 MiB).  Keeping only 32 MiB at the top of the heap was not
    enough for networks whose steps free more than that at once: in some
    processes (which ones depends on where long-lived blocks land) the heap
    was trimmed and grown again at every step, 4,000-13,000 page faults a
    step (ResNet-18 on 32x32 at batch 32: 104 ms a step against 83 ms); with
    128 MiB kept, 30-200 faults a step on ResNet-18/50 and GoogLeNet, peaks
    within 1 %.  A user's own MALLOC_*_ variable, or CONVCORE_MALLOC=system,
    leaves glibc's settings alone; so does any other C library.
    """
    global malloc_tuned
    if (not _sys.platform.startswith("linux") or _os.environ.get("CONVCORE_MALLOC") == "system"
            or any(k in _os.environ for k in _MALLOC_VARS)):
        return
    import ctypes
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version          # glibc only (musl has no such thresholds)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    malloc_tuned = bool(mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD + _MALLOC_HEADER_ROOM)
                        and mallopt(M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))


_keep_freed_memory()


def _check_built():
    """Fail at ``import convcore`` with the fix, not at the first kernel call
    with "cannot import name '_conv'": the usual cause is a source checkout
    (the current directory) shadowing the installed package."""
    import importlib.machinery
    here = _os.path.dirname(_os.path.abspath(__file__))
    try:
        names = set(_os.listdir(here))
    except OSError:
        return
    if any("_conv" + s in names for s in importlib.machinery.EXTENSION_SUFFIXES):
        return
    if any(n.startswith("_conv.") and n.endswith((".so", ".pyd")) for n in names):
        return                              # built for another Python: let import say so
    root = _os.path.dirname(_os.path.dirname(here))
    where = (f"from its source tree {root}" if _os.path.isfile(_os.path.join(root, "setup.py"))
             else f"from {_os.path.dirname(here)}")
    raise ImportError(
        f"convcore is being imported {where}, where its C extension has not been built. "
        f"Build it in place with `python setup.py build_ext --inplace` (run in {root}), "
        f"or run Python from another directory to use the installed convcore.")


_check_built()
