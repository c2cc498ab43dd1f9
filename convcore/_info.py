"""show_config(): what this build of convcore runs on."""
from __future__ import annotations

import os
import platform
import sys


def config_info() -> dict:
    import numpy
    import scipy

    from convcore import _config, _core
    from convcore._core import _conv
    from convcore._version import __version__
    info = {
        "convcore": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "openmp": _conv.openmp_enabled(),
        "threads": _config.get_num_threads(),
        "workspace_limit_bytes": _config.get_workspace_limit(),
        "memory_cache_bytes": _config.get_memory_cache(),
        "malloc": (f"glibc keeps freed memory (trim threshold {_core.MALLOC_TRIM_THRESHOLD >> 20} "
                   f"MiB, mmap threshold {_core.MALLOC_MMAP_THRESHOLD >> 20} MiB)"
                   if _core.malloc_tuned else "the system's settings"),
    }
    try:
        from threadpoolctl import threadpool_info
        import scipy.linalg  # noqa: F401
        blas = [f"{d.get('internal_api')} {d.get('version')}"
                + (f", {d['architecture']} kernels" if d.get("architecture") else "")
                + f" ({d.get('filepath')})"
                for d in threadpool_info() if d.get("user_api") == "blas"]
        info["blas"] = blas
    except Exception as exc:  # pragma: no cover - informational only
        info["blas"] = [f"unknown ({exc})"]
    # OpenBLAS variables that replace the kernels it picks for this CPU
    # (convcore's GEMMs run on SciPy's OpenBLAS: an older CPU's kernels
    # forced on a newer one slow every convolution)
    info["blas_overrides"] = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
                              if k in os.environ} or None
    try:
        import cupy  # noqa: F401
        info["cupy"] = cupy.__version__
    except Exception:
        info["cupy"] = None
    return info


def show_config() -> None:
    """Print the build and run-time configuration (versions, OpenMP, threads, BLAS)."""
    for key, value in config_info().items():
        if isinstance(value, list):
            print(f"{key}:")
            for v in value:
                print(f"  {v}")
        else:
            print(f"{key}: {value}")
