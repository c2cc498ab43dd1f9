"""scripts/gpu_check.sh needs a GPU to run; here: it parses, and the parts it
calls accept their arguments."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.skipif(not os.path.isfile(os.path.join(ROOT, "scripts", "gpu_check.sh")),
                    reason="needs the source tree's scripts/ (not in the wheel check)")
def test_gpu_check_script_parses():
    res = subprocess.run(["bash", "-n", os.path.join(ROOT, "scripts", "gpu_check.sh")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_bench_gpu_knows_quick_and_says_what_it_needs():
    import convcore
    if not os.path.abspath(convcore.__file__).startswith(os.path.join(ROOT, "convcore")):
        # the benchmarks import the source tree, which an installed package leaves unbuilt
        pytest.skip("the benchmarks need the extension built in place")
    script = os.path.join(ROOT, "benchmarks", "bench_gpu.py")
    res = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--quick" in res.stdout
    from convcore.backends import cuda
    if not cuda.is_available():
        res = subprocess.run([sys.executable, script, "--quick"], capture_output=True,
                             text=True)
        assert res.returncode == 2 and "needs CuPy" in res.stdout
