"""SciPy's BLAS is held at one thread inside the core's OpenMP teams.  The
binding finds its set/get-num-threads functions through threadpoolctl, or,
when that dependency is missing, in the libraries this process has mapped;
without either, OpenBLAS's own pool ran inside the teams and a ResNet-18
training step on 32x32 images took about 10x longer."""
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps")

PROBE = """
import sys
sys.modules["threadpoolctl"] = None          # as if it were not installed
import scipy
if "openblas" not in str(scipy.show_config(mode="dicts")["Build Dependencies"]["blas"]).lower():
    print("skip"); raise SystemExit
from convcore._core import _conv
from convcore.backends import cpu
libs = cpu._scipy_blas_from_maps()
names = [getattr(l, "_name", "") for l in libs]
bound = [n for n, l in zip(names, libs)
         if any(hasattr(l, f) for f in ("scipy_openblas_set_num_threads", "openblas_set_num_threads",
                                         "scipy_openblas_set_num_threads64_"))]
print(len(bound), all("numpy" not in n for n in names), cpu._blas_context(),
      _conv.has_blas_thread_functions())
"""


def test_scipy_blas_is_found_without_threadpoolctl():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    if out == ["skip"]:
        pytest.skip("SciPy is not built on OpenBLAS")
    n, no_numpy, fallback, held = out
    assert int(n) >= 1, "SciPy's OpenBLAS was not found among the mapped libraries"
    assert no_numpy == "True", "NumPy's own OpenBLAS was taken for SciPy's"
    assert fallback == "None"     # bound in the binding: no per-call context needed
    assert held == "True", "the binding was given no set/get-num-threads functions"
