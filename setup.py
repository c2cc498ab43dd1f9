"""Build of convcore's compiled core.

Each Cython module ``convcore/_core/_<family>.pyx`` is built together with
``src_c/<family>.c`` and ``src_c/common.c``.  OpenMP is probed; without it the
core builds serial and says so loudly.  No -march=native, no -ffast-math.
"""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = "src_c"


def _probe_openmp():
    if os.environ.get("CONVCORE_NO_OPENMP"):
        return False
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cc = cc.split()
    if not shutil.which(cc[0]):
        return False
    code = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as fh:
            fh.write(code)
        try:
            res = subprocess.run(cc + ["-fopenmp", src, "-o", os.path.join(tmp, "probe")],
                                 capture_output=True, timeout=120)
        except (OSError, subprocess.SubprocessError):
            return False
        return res.returncode == 0


OPENMP = _probe_openmp()
if not OPENMP:
    banner = "*" * 72
    sys.stderr.write(
        f"\n{banner}\nWARNING: the C compiler does not support OpenMP (-fopenmp).\n"
        "convcore will build SERIAL kernels: correct, but using one core.\n"
        f"Install a compiler with OpenMP (gcc, or clang with libomp) and rebuild.\n{banner}\n\n")

compile_args = ["-O3", "-std=c99", "-fno-strict-aliasing"]
link_args = []
if OPENMP:
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")
if os.environ.get("CONVCORE_SANITIZE"):
    flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"]
    compile_args = [f for f in compile_args if f != "-O3"] + flags
    link_args += ["-fsanitize=address,undefined"]

headers = sorted(glob.glob(os.path.join(SRC, "*.h")))
extensions = []
for pyx in sorted(glob.glob(os.path.join("convcore", "_core", "_*.pyx"))):
    family = os.path.basename(pyx)[1:-4]
    sources = [pyx, os.path.join(SRC, f"{family}.c"), os.path.join(SRC, "common.c")]
    include = [SRC]
    if family == "mem":   # (NumPy's allocator interface: its headers)
        import numpy
        include.append(numpy.get_include())
    extensions.append(Extension(
        f"convcore._core._{family}", sources=sources, include_dirs=include,
        extra_compile_args=compile_args, extra_link_args=link_args, depends=headers))

directives = {"language_level": 3, "boundscheck": False, "wraparound": False,
              "cdivision": True}
if os.environ.get("CONVCORE_DEBUG"):
    directives.update(boundscheck=True, wraparound=True)

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
