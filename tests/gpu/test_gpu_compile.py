"""Every CUDA kernel compiles for the GPU, for both dtypes, without a GPU.

The source is exactly what the cuda backend hands to CuPy's RawModule
(``cuda.kernel_source()`` with ``cuda.NVRTC_OPTIONS``).  It is compiled with
NVRTC from the ``cuda-bindings`` + ``nvidia-cuda-nvrtc`` wheels, which need no
GPU, and every name expression (``cc_im2col<float>`` ...) must lower to a
mangled kernel name.  Without those wheels, ``nvcc -ptx`` does the same check
on the PTX entries.  Skipped, saying why, when neither is available.
"""
import re
import shutil
import subprocess

import numpy as np
import pytest

from convcore.backends import cuda

ARCH = "compute_75"


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        try:
            from cuda import nvrtc  # older cuda-python layout
        except ImportError:
            return None
    try:
        err, _, _ = nvrtc.nvrtcVersion()  # loads libnvrtc from the wheel
    except Exception:
        return None
    return nvrtc if err == nvrtc.nvrtcResult.NVRTC_SUCCESS else None


def _check(nvrtc, res):
    err = res[0]
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, f"NVRTC call failed: {err}"
    return res[1] if len(res) > 1 else None


def _compile_nvrtc(nvrtc, dtype):
    names = cuda.name_expressions(dtype)
    prog = _check(nvrtc, nvrtc.nvrtcCreateProgram(cuda.kernel_source().encode(),
                                                  b"convcore_kernels.cu", 0, [], []))
    try:
        for n in names:
            _check(nvrtc, nvrtc.nvrtcAddNameExpression(prog, n.encode()))
        opts = [o.encode() for o in cuda.NVRTC_OPTIONS] + [f"--gpu-architecture={ARCH}".encode()]
        err = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)[0]
        size = _check(nvrtc, nvrtc.nvrtcGetProgramLogSize(prog))
        # the binding writes the log into this object's buffer: it must be a
        # fresh one, never a length-0/1 bytes (CPython shares those, and an
        # empty log's terminating NUL once turned every b" " of the process
        # into b"\x00")
        log = b" " * (size + 2)
        nvrtc.nvrtcGetProgramLog(prog, log)
        log = log.decode(errors="replace").strip("\x00 \n")
        assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, f"NVRTC compile failed:\n{log}"
        lowered = {n: _check(nvrtc, nvrtc.nvrtcGetLoweredName(prog, n.encode())) for n in names}
        return log, {n: v.decode() for n, v in lowered.items()}
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def _compile_nvcc(nvcc, dtype, tmp_path):
    names = cuda.name_expressions(dtype)
    # taking each instantiation's address makes nvcc emit it, as a name
    # expression makes NVRTC do
    refs = "\n".join(f"void *cc_ref_{i} = (void *)&{n};" for i, n in enumerate(names))
    src = tmp_path / "kernels.cu"
    src.write_text(cuda.kernel_source() + "\n" + refs + "\n")
    ptx = tmp_path / "kernels.ptx"
    cmd = [nvcc, "-ptx", f"-arch={ARCH}", *cuda.NVRTC_OPTIONS, str(src), "-o", str(ptx)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"nvcc failed:\n{' '.join(cmd)}\n{res.stderr}"
    entries = re.findall(r"\.entry\s+(\w+)", ptx.read_text())
    lowered = {}
    tag = {np.dtype(np.float32): "f", np.dtype(np.float64): "d"}[np.dtype(dtype)]
    for n in names:
        base = n.split("<")[0]
        hit = [e for e in entries if e.startswith(f"_Z{len(base)}{base}I{tag}E")]
        lowered[n] = hit[0] if hit else None
    return res.stderr, lowered


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    nvrtc = _nvrtc()
    nvcc = shutil.which("nvcc")
    results = {}

    def get(dtype):
        dt = np.dtype(dtype)
        if dt not in results:
            if nvrtc is not None:
                results[dt] = ("nvrtc",) + _compile_nvrtc(nvrtc, dt)
            elif nvcc is not None:
                results[dt] = ("nvcc",) + _compile_nvcc(nvcc, dt, tmp_path_factory.mktemp("ptx"))
            else:
                pytest.skip("neither NVRTC (pip install cuda-bindings nvidia-cuda-nvrtc-cu12) "
                            "nor nvcc is available: GPU kernel compile check not run")
        return results[dt]
    return get


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel", cuda.KERNELS)
def test_kernel_compiles_and_its_name_lowers(compiled, kernel, dtype):
    tool, log, lowered = compiled(dtype)
    name = f"{kernel}<{cuda.CTYPES[np.dtype(dtype)]}>"
    mangled = lowered[name]
    assert mangled and mangled.startswith(f"_Z{len(kernel)}{kernel}I"), (tool, name, mangled)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_compile_without_warnings(compiled, dtype):
    tool, log, _ = compiled(dtype)
    assert "warning" not in log.lower(), f"{tool} warned:\n{log}"


def test_kernel_source_is_shipped_and_self_contained():
    src = re.sub(r"/\*.*?\*/|//[^\n]*", "", cuda.kernel_source(), flags=re.S)
    # the shared header is inlined, so CuPy's source-keyed cache sees changes
    assert '#include "common.cuh"' not in src
    assert "#include <" not in src          # NVRTC has no host headers
    assert "INFINITY" not in src and "isnan(" not in src.replace("cc_isnan(", "")
    for k in cuda.KERNELS:
        assert re.search(rf"__global__ void {k}\(", src), k
