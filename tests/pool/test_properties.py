"""Property tests of the pooling family: random shapes (0 and 1 included) and
random options, checked against the independent loops in tests/reference/pool.py.
The hypothesis profile (tests/conftest.py) is derandomized when CI is set.
"""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import convcore as cc  # noqa: E402
from _draw import DTYPES, make, pool_geometry, threads_restored  # noqa: E402

from reference.pool import (adaptive_avg_backward_naive, adaptive_avg_naive,  # noqa: E402
                            avg_pool_naive, max_pool_backward_naive, max_pool_naive,
                            pool_out)


@given(g=pool_geometry(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1),
       threads=st.integers(1, 4))
def test_max_pool_has_documented_shape_and_matches_reference(g, dtype, seed, threads):
    rng = np.random.default_rng(seed)
    x = make(rng, (g["N"], g["C"], g["H"], g["W"]), dtype)
    if g["N"] and rng.random() < 0.3:
        x[x > 1.0] = np.nan          # NaN wins its window
    args = (g["k"], g["s"], g["p"], g["d"], g["ceil"])
    oh = pool_out(g["H"], g["k"][0], g["s"][0], g["p"][0], g["d"][0], g["ceil"])
    ow = pool_out(g["W"], g["k"][1], g["s"][1], g["p"][1], g["d"][1], g["ceil"])
    with threads_restored():
        cc.set_num_threads(threads)
        y, idx = cc.max_pool2d(x, *args, return_indices=True)
        dy = make(rng, y.shape, dtype)
        dx = cc.max_pool2d_backward(dy, idx, x.shape)
    assert y.shape == idx.shape == (g["N"], g["C"], oh, ow)
    ry, ridx = max_pool_naive(x, *args)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(dx, max_pool_backward_naive(dy, idx, x.shape))


@given(g=pool_geometry(), seed=st.integers(0, 2**32 - 1), cip=st.booleans(),
       div=st.sampled_from([None, 1, 5]), threads=st.integers(1, 4))
def test_avg_pool_matches_reference_and_its_backward_is_the_adjoint(g, seed, cip, div,
                                                                    threads):
    rng = np.random.default_rng(seed)
    x = make(rng, (g["N"], g["C"], g["H"], g["W"]), np.float64)
    kw = dict(kernel_size=g["k"], stride=g["s"], padding=g["p"], ceil_mode=g["ceil"],
              count_include_pad=cip, divisor_override=div)
    with threads_restored():
        cc.set_num_threads(threads)
        y = cc.avg_pool2d(x, **kw)
        dy = make(rng, y.shape, np.float64)
        dx = cc.avg_pool2d_backward(dy, x.shape, **kw)
    ref = avg_pool_naive(x, g["k"], g["s"], g["p"], g["ceil"], cip, div)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    assert abs(np.vdot(y, dy) - np.vdot(x, dx)) <= 1e-12 * (1 + np.vdot(abs(y), abs(dy)))


@given(n=st.integers(0, 2), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       oh=st.integers(1, 10), ow=st.integers(1, 10), seed=st.integers(0, 2**32 - 1))
def test_adaptive_avg_pool_matches_reference(n, c, h, w, oh, ow, seed):
    rng = np.random.default_rng(seed)
    x = make(rng, (n, c, h, w), np.float64)
    y = cc.adaptive_avg_pool2d(x, (oh, ow))
    np.testing.assert_allclose(y, adaptive_avg_naive(x, oh, ow), rtol=1e-12, atol=1e-12)
    dy = make(rng, y.shape, np.float64)
    np.testing.assert_allclose(cc.adaptive_avg_pool2d_backward(dy, x.shape),
                               adaptive_avg_backward_naive(dy, x.shape), rtol=1e-12,
                               atol=1e-12)
