"""Shared measuring helpers for the benchmarks (see BENCHMARKS.md).

Peers run in the same process on the same inputs and thread count, interleaved
(A B A B ...); we report the median time of each and the median of per-pair
ratios peer/convcore (> 1 means convcore is faster).  Nothing is asserted.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time

import numpy as np


def timeit(fn, min_time=0.02):
    """Seconds per call of fn, repeating short calls until min_time has passed."""
    fn()
    reps, t = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        t = time.perf_counter() - t0
        if t >= min_time:
            return t / reps
        reps *= 2 if t < min_time / 4 else 1
        if t >= min_time / 4:
            reps = max(reps, int(reps * min_time / max(t, 1e-9)) + 1)


def interleaved(fns: dict, reps=7, min_time=0.02):
    """Median seconds of each fn and median per-pair ratio other/first."""
    names = list(fns)
    for f in fns.values():   # warm up
        f()
    times = {n: [] for n in names}
    for _ in range(reps):
        for n in names:
            times[n].append(timeit(fns[n], min_time))
    base = names[0]
    out = {n: {"median_s": statistics.median(times[n])} for n in names}
    for n in names[1:]:
        out[n]["ratio_vs_convcore"] = statistics.median(
            a / b for a, b in zip(times[n], times[base]))
    return out


def machine_limits(threads):
    """sgemm 2048^3 GFLOP/s (NumPy's BLAS) and np.copyto GB/s, measured now."""
    a = np.random.rand(2048, 2048).astype(np.float32)
    b = np.random.rand(2048, 2048).astype(np.float32)
    t = min(timeit(lambda: a @ b, 0.2) for _ in range(3))
    src = np.random.rand(64 * 2**20 // 8)
    dst = np.empty_like(src)
    tc = min(timeit(lambda: np.copyto(dst, src), 0.2) for _ in range(3))
    return {"sgemm_2048_gflops": 2 * 2048**3 / t / 1e9,
            "copy_gbs": 2 * src.nbytes / tc / 1e9}


def environment(threads):
    import convcore
    env = {"machine": platform.machine(), "processor": platform.processor(),
           "cpus": os.cpu_count(), "python": platform.python_version(),
           "numpy": np.__version__, "convcore": convcore.__version__, "threads": threads}
    try:
        import torch
        env["torch"] = torch.__version__
    except ImportError:
        env["torch"] = None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    env["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return env


def write_json(path, payload):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(payload, fh, indent=2)
    os.replace(tmp, path)


def geomean(values):
    values = [v for v in values if v and v > 0]
    return float(np.exp(np.mean(np.log(values)))) if values else float("nan")
