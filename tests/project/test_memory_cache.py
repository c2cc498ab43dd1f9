"""convcore.set_memory_cache: freed NumPy arrays of 16 MiB or more kept, up to a
budget, and handed out again for the next array of exactly their size.

Checked by where arrays land (the same block again), by the cache's own
counts, by page faults in fresh interpreters (not by timing), and by a
network's outputs, bit for bit, with the cache on and off."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import convcore as cc
from convcore._config import MEMORY_CACHE_MIN_BLOCK
from convcore._core import _mem

# float32 elements: 4 MiB above the size the cache keeps from (16 MiB: 20 MiB)
BIG = (MEMORY_CACHE_MIN_BLOCK + (4 << 20)) // 4
# a budget that holds five BIG blocks, not six
BUDGET = 11 * BIG * 2 + (1 << 20)


def _handler_name():
    try:
        from numpy._core.multiarray import get_handler_name   # NumPy >= 2
    except ImportError:
        from numpy.core.multiarray import get_handler_name    # NumPy 1.22-1.26
    return get_handler_name()


@pytest.fixture
def cache():
    """The cache on with BUDGET for the test, off (and empty) after it."""
    assert cc.get_memory_cache() == 0
    cc.set_memory_cache(BUDGET)
    try:
        yield
    finally:
        cc.set_memory_cache(0)


def test_off_by_default_in_a_fresh_process_and_set_by_the_environment():
    code = ("import convcore, numpy as np; from convcore._core import _mem\n"
            f"a = np.ones({BIG}, np.float32); p = a.ctypes.data; del a\n"
            f"b = np.ones({BIG}, np.float32)\n"
            "print(convcore.get_memory_cache(), _mem.stats()[2])\n")
    env = {k: v for k, v in os.environ.items() if k != "CONVCORE_MEMORY_CACHE"}

    def run(**extra):
        return subprocess.run([sys.executable, "-c", code], env=dict(env, **extra),
                              capture_output=True, text=True, timeout=120)
    off = run()
    assert off.returncode == 0, off.stderr
    assert off.stdout.split() == ["0", "0"]          # no budget, nothing served from it
    on = run(CONVCORE_MEMORY_CACHE="64")
    assert on.returncode == 0, on.stderr
    assert on.stdout.split() == [str(64 << 20), "1"]  # the second array reused the first's
    bad = run(CONVCORE_MEMORY_CACHE="lots")   # a warning, and no cache
    assert bad.returncode == 0, bad.stderr
    assert "CONVCORE_MEMORY_CACHE" in bad.stderr and bad.stdout.split() == ["0", "0"]


@pytest.mark.parametrize("value", [-1, 2**62 + 1, 1.5, "1"])
def test_bad_budgets_are_refused(value):
    with pytest.raises((TypeError, ValueError)):
        cc.set_memory_cache(value)
    assert cc.get_memory_cache() == 0


def test_a_freed_large_array_is_handed_out_again_and_zeroed_when_asked(cache):
    a = np.full(BIG, 7.0, np.float32)
    where = a.ctypes.data
    del a
    kept, blocks, _, _ = _mem.stats()
    assert (kept, blocks) == (BIG * 4, 1)
    b = np.zeros(BIG, np.float32)            # calloc: the kept block, cleared
    assert b.ctypes.data == where
    assert not b.any()
    assert _mem.stats()[:2] == (0, 0)
    c = np.empty(BIG + 1, np.float32)        # another size: not that block
    assert c.ctypes.data != where


def test_small_arrays_and_other_sizes_are_not_kept(cache):
    small = np.ones(MEMORY_CACHE_MIN_BLOCK // 4 - 1024, np.float32)   # below the cache's floor
    del small
    assert _mem.stats()[:2] == (0, 0)


def test_the_budget_bounds_what_is_kept_oldest_released_first(cache):
    arrays = [np.ones(BIG + i, np.float32) for i in range(6)]   # 6 x 20 MiB
    last = arrays[-1].ctypes.data
    for i in range(6):                       # freed first to last
        arrays[i] = None
    kept, blocks, _, _ = _mem.stats()
    assert kept <= BUDGET and blocks == 5   # the first one went back to the system
    again = np.empty(BIG + 5, np.float32)
    assert again.ctypes.data == last
    assert _mem.stats()[:2] == (kept - (BIG + 5) * 4, 4)


def test_turning_it_off_releases_every_block_and_restores_numpy_s_allocator(cache):
    before = np.ones(BIG, np.float32)        # made with the cache
    assert _handler_name() == "convcore_block_cache"
    cc.set_memory_cache(0)
    assert _mem.stats()[:2] == (0, 0)
    assert _handler_name() == "default_allocator"
    del before                               # freed through the cache's allocator: let go
    assert _mem.stats()[:2] == (0, 0)
    cc.set_memory_cache(BUDGET)              # (the fixture turns it off again)
    assert _handler_name() == "convcore_block_cache"


def test_arrays_freed_on_other_threads_and_resized_ones_stay_sound(cache):
    arrays = [np.full(BIG + i, float(i), np.float32) for i in range(4)]
    threads = [threading.Thread(target=arrays.pop) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not arrays
    grown = np.ones(BIG, np.float32)
    grown.resize(BIG + (1 << 20), refcheck=False)     # realloc of a cache-made block
    assert grown[:BIG].all() and not grown[BIG:].any()
    del grown
    shrunk = np.ones(BIG + (1 << 20), np.float32)
    shrunk.resize(BIG, refcheck=False)
    assert shrunk.all()


def test_a_network_gives_the_same_bits_with_the_cache_on_and_off():
    rng = np.random.default_rng(0)
    net = cc.models.resnet18(num_classes=10, rng=0)
    # (32 x 64 x 48 x 48 float32 after the stem: 18 MiB, above the size kept from)
    x = rng.standard_normal((32, 3, 96, 96), dtype=np.float32)
    t = rng.integers(0, 10, 32)

    def step():
        net.zero_grad()
        logits = net(x)
        net.backward(cc.cross_entropy_backward(logits, t))
        return logits, [p.grad.copy() for p in net.parameters()]
    ref_logits, ref_grads = step()
    cc.set_memory_cache(256 << 20)
    try:
        for _ in range(3):    # (the later steps run on kept blocks)
            logits, grads = step()
            np.testing.assert_array_equal(logits, ref_logits)
            for g, r in zip(grads, ref_grads):
                np.testing.assert_array_equal(g, r)
        assert _mem.stats()[2] > 0
    finally:
        cc.set_memory_cache(0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page fault counts: Linux")
def test_steps_on_kept_blocks_fault_no_pages_in():
    code = """
import resource, numpy as np, convcore
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():
    a = [np.ones(%d, np.float32) for _ in range(3)]   # 3 x 20 MiB, every page touched
    del a
for _ in range(2):
    step()
r0 = faults()
for _ in range(10):
    step()
print((faults() - r0) / 10)
""" % BIG
    env = {k: v for k, v in os.environ.items() if k != "CONVCORE_MEMORY_CACHE"}

    def run(**extra):
        out = subprocess.run([sys.executable, "-c", code], env=dict(env, **extra),
                             capture_output=True, text=True, timeout=120, check=True)
        return float(out.stdout.split()[0])
    off, on = run(), run(CONVCORE_MEMORY_CACHE="128")
    # (3 x 20 MiB mapped afresh each step: hundreds to thousands of faults,
    # as many as the kernel takes pages per fault)
    assert off > 300, f"control: {off} faults a step"
    assert on < 100, f"{on} faults a step with the cache"


def test_large_outputs_are_faulted_in_before_the_kernels_write_them(rng):
    """The backend's outputs of 16 MiB or more have their pages faulted in by
    one call (Linux 5.14+): writing them then faults nothing in, where a
    plain fresh array of the same size faults in page by page (a fresh
    interpreter: no kept blocks, no earlier heap).  Results are unchanged."""
    code = """
import resource, numpy as np
from convcore._core import _mem
from convcore.backends import cpu
n = (cpu.POPULATE_MIN_BYTES + (1 << 20)) // 4     # (above the heap's blocks: mapped fresh)
def write_faults(a):
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a.fill(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
probe = np.empty(n, np.float32)
ok = _mem.populate(probe.__array_interface__["data"][0], probe.nbytes)
del probe
print(int(ok), write_faults(np.empty(n, np.float32)), write_faults(cpu.empty((n,), np.float32)))
"""
    env = {k: v for k, v in os.environ.items()
           if k != "CONVCORE_MEMORY_CACHE" and not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    ok, plain, ready = map(int, out.stdout.split())
    if not ok:
        pytest.skip("the kernel does not fault pages in on request (Linux < 5.14)")
    assert plain > 100            # (control: a fresh mapping faults page by page)
    assert ready <= 4
    from convcore.backends import cpu
    small = cpu.empty((1000,), np.float32)   # small arrays: as NumPy makes them
    assert small.shape == (1000,) and small.dtype == np.float32
    # a ReLU into a populated output: the definition
    x = rng.standard_normal((4, 64, 128, 128)).astype(np.float32)   # 16 MiB
    np.testing.assert_array_equal(cc.relu(x), np.maximum(x, 0))


@pytest.mark.parametrize("offset, size", [(0, 0), (1, 4096), (4095, 3), (17, 5 << 20)])
def test_populating_any_span_leaves_memory_as_it_was(offset, size):
    """Unaligned, tiny and empty spans: only whole pages inside are touched,
    and the contents stay."""
    from convcore._core import _mem
    buf = np.arange((6 << 20) // 4, dtype=np.float32)
    before = buf.copy()
    _mem.populate(buf.__array_interface__["data"][0] + offset, size)
    np.testing.assert_array_equal(buf, before)
