"""Runs convcore's CUDA kernels on the CPU, for tests on machines with no GPU.

The very same ``convcore/backends/kernels/*.cu`` files are compiled with the
host C++ compiler through ``gpu_emulation/prelude.h`` (which defines the CUDA
keywords and the built-in block/thread indices) into a shared library, and
every launch runs the whole grid, block after block, thread after thread.
:func:`install` then points ``convcore.backends.cuda`` at that library and at
a NumPy stand-in for CuPy, so the backend's Python glue (chunking, batched
GEMMs over groups, the sorted max-pool gather) runs unchanged on NumPy arrays.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import types
from pathlib import Path

import numpy as np

from convcore.backends import cuda

HERE = Path(__file__).resolve().parent / "gpu_emulation"
SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def compiler():
    for cxx in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if cxx and shutil.which(cxx):
            return cxx
    return None


def build(out_dir, force64: bool = False) -> ctypes.CDLL:
    """Compiles the kernels + launch entries into out_dir and loads them.

    With `force64`, CC_I32_LIMIT is 0, so every kernel runs its 64-bit
    index body instead of the 32-bit one that small inputs pick."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no host C++ compiler found (g++, c++ or clang++)")
    sources = [cuda.KERNEL_DIR / f for f in cuda.KERNEL_FILES]
    sources += [HERE / "prelude.h", HERE / "launch.cpp"]
    extra = os.environ.get("CC_GPU_EMU_CFLAGS", "").split()  # e.g. -fsanitize=address
    if force64:
        extra.append("-DCC_I32_LIMIT=0")
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in sources)
                          + " ".join(extra).encode()).hexdigest()[:12]
    lib = Path(out_dir) / f"cc_gpu_emu_{digest}.so"
    if not lib.exists():
        cmd = [cxx, "-std=c++14", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
               f"-I{cuda.KERNEL_DIR}", f"-I{HERE}", str(HERE / "launch.cpp"),
               "-o", str(lib)] + extra
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"emulation build failed:\n{' '.join(cmd)}\n{res.stderr}")
    return ctypes.CDLL(str(lib))


@functools.lru_cache(maxsize=None)
def kernel_params():
    """{kernel: ["T" / "i64*" / "i64" per parameter]} from the kernels'
    source, to check every launch's arguments against."""
    import re
    # the preprocessor expands the parameter-list macros (and drops comments)
    res = subprocess.run([compiler(), "-E", "-P", "-x", "c++", "-"], input=cuda.kernel_source(),
                         capture_output=True, text=True, check=True)
    src = res.stdout
    out = {}
    for m in re.finditer(r"__global__\s+void\s+(\w+)\s*\(([^)]*)\)", src):
        params = [p.strip() for p in m.group(2).split(",")]
        for p in params:
            if "*" not in p and not p.startswith("cc_i64 "):
                raise AssertionError(f"{m.group(1)}: scalar parameter {p!r} is not cc_i64")
        out[m.group(1)] = [("i64*" if re.sub(r"^const\s+", "", p).startswith("cc_i64") else "T")
                           if "*" in p else "i64" for p in params]
    return out


def _carg(a):
    if isinstance(a, np.ndarray):
        if not a.flags.c_contiguous:
            raise AssertionError("kernel argument is not C-contiguous")
        return ctypes.c_void_p(a.ctypes.data)
    if isinstance(a, np.int64):
        return ctypes.c_longlong(int(a))
    raise AssertionError(f"kernel argument of unexpected type {type(a).__name__}: every "
                         f"scalar must be passed as numpy.int64")


class Runner:
    """Stands in for ``cuda._run_kernel``: launches on the CPU.

    With `grid` = (blocks, threads) every launch uses that grid instead of the
    backend's, to exercise the grid-stride loops with few threads.
    """

    def __init__(self, lib, grid=None):
        self.lib = lib
        self.grid = grid
        self.launches = []
        self.params = kernel_params()

    def __call__(self, kernel, dtype, blocks, threads, args):
        assert kernel in cuda.KERNELS, kernel
        assert 0 < blocks <= cuda.MAX_BLOCKS and threads == cuda.THREADS
        if self.grid is not None:
            blocks, threads = self.grid
        name = "emu" + kernel[2:] + "_" + SUFFIX[np.dtype(dtype)]
        fn = getattr(self.lib, name)
        fn.restype = None
        want = self.params[kernel]
        got = ["i64" if isinstance(a, np.int64) else
               "i64*" if a.dtype == np.int64 else
               "T" if a.dtype == dtype else str(a.dtype) for a in args]
        assert got == want, f"{kernel}<{dtype}>: arguments {got}, parameters {want}"
        self.launches.append(kernel)
        fn(ctypes.c_uint(blocks), ctypes.c_uint(threads), *[_carg(a) for a in args])


def numpy_as_cupy():
    """The few CuPy functions the backend calls, answered by NumPy."""
    ns = types.SimpleNamespace()
    for fname in ("empty", "zeros", "ascontiguousarray", "matmul", "sum", "arange",
                  "argsort", "stack", "int64", "asarray", "pad"):
        setattr(ns, fname, getattr(np, fname))
    ns.asnumpy = np.asarray
    return ns


def install(monkeypatch, lib, grid=None) -> Runner:
    runner = Runner(lib, grid)
    monkeypatch.setattr(cuda, "_cp", numpy_as_cupy())
    monkeypatch.setattr(cuda, "_run_kernel", runner)
    return runner
