"""Compiled bindings of the C core.

Before the extensions load the OpenMP runtime, ask it to wait for work
briefly instead of spinning for long: between parallel regions the C core
hands control back to Python (NumPy, a training loop, another library's
thread pool), and on a machine with few cores a team that keeps spinning
steals those cores.  Measured on a 2-core machine, training a BatchNorm CNN
ran 2 to 5 times faster with a short spin.  A user's own OMP_WAIT_POLICY,
GOMP_SPINCOUNT or KMP_BLOCKTIME wins; nothing changes if an OpenMP runtime
was already loaded by another library (it read its settings then).
"""
import os as _os

if not any(k in _os.environ for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")):
    _os.environ["GOMP_SPINCOUNT"] = "10000"      # GNU OpenMP: spins before sleeping
    _os.environ["KMP_BLOCKTIME"] = "1"           # LLVM/Intel OpenMP: milliseconds
