"""At import convcore asks glibc to keep freed memory for the next
allocation (convcore/_core/__init__.py): arrays of a few MiB allocated,
touched and freed over and over then stop page-faulting their memory in.
Checked by counting page faults in fresh interpreters (not by timing), with
the opt-outs as the control."""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

LOOP = """
import resource, numpy as np, convcore
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    a = [np.ones(300_000) for _ in range(4)]
    del a
r0 = faults()
for _ in range(20):
    a = [np.ones(300_000) for _ in range(4)]   # 4 x 2.4 MB, every page touched
    del a
print((faults() - r0) / 20, convcore._core.malloc_tuned)
"""


def _output(code, **env):
    """stdout words of code run in a fresh interpreter with none of the
    malloc variables set but env."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")
            and k != "CONVCORE_MALLOC"}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True,
                          check=True, timeout=120).stdout.split()


def _run(**env):
    out = _output(LOOP, **env)
    return float(out[0]), out[1] == "True"


def _need_glibc():
    try:
        import ctypes
        ctypes.CDLL(None).gnu_get_libc_version
    except (OSError, AttributeError):
        pytest.skip("not glibc")


def test_freed_arrays_are_reused_without_page_faults():
    _need_glibc()
    faults, tuned = _run()
    assert tuned
    # 4 x 586 pages an iteration if the memory went back to the system
    assert faults < 100, f"{faults} page faults an iteration"


@pytest.mark.parametrize("env", [{"CONVCORE_MALLOC": "system"},
                                 {"MALLOC_TRIM_THRESHOLD_": "1000000"}])
def test_the_user_can_keep_the_systems_settings(env):
    faults, tuned = _run(**env)
    assert not tuned
    assert faults > 1000, f"{faults} page faults an iteration: glibc's settings were changed"


BIG = """
import numpy as np, convcore
def rss():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS")) << 10
r0 = rss()
a = np.ones(64 << 17)          # 64 MiB, every page touched
r1 = rss()
del a
print(r1 - r0, rss() - r0, convcore._core.malloc_tuned)
"""


def test_large_blocks_still_go_back_to_the_system():
    # Blocks above the mmap threshold (16 MiB) are mapped and unmapped one by
    # one: keeping them in the heap fragmented it (ResNet-18's training peak
    # rose by 70 MiB with 32 MiB).
    _need_glibc()
    grown, left, tuned = _output(BIG)
    assert tuned == "True"
    assert int(grown) > 60 << 20
    assert int(left) < 8 << 20, f"{int(left) >> 20} MiB of a freed 64 MiB array still resident"


STEP = """
import resource, numpy as np, convcore
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():
    a = [np.ones(750_000) for _ in range(16)]     # 16 x 6 MB, every page touched
    del a
for _ in range(3):
    step()
r0 = faults()
for _ in range(10):
    step()
print((faults() - r0) / 10, convcore._core.malloc_tuned)
"""


def test_a_step_freeing_96_mb_at_once_keeps_its_memory():
    # a training step of a large network frees more than 32 MiB at once; the
    # heap is kept (up to 128 MiB), not trimmed and grown again every step
    _need_glibc()
    out = _output(STEP)
    assert out[1] == "True"
    assert float(out[0]) < 300, f"{out[0]} page faults a step"
    control = _output(STEP, MALLOC_TRIM_THRESHOLD_=str(32 << 20),
                      MALLOC_MMAP_THRESHOLD_=str(8 << 20))
    assert float(control[0]) > 1000, "the control kept its memory: the test shows nothing"
