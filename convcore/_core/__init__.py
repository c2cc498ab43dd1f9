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
"""
import os as _os

if not any(k in _os.environ for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")):
    _os.environ["GOMP_SPINCOUNT"] = "100000"     # GNU OpenMP: spins before sleeping
    _os.environ["KMP_BLOCKTIME"] = "2"           # LLVM/Intel OpenMP: milliseconds


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
