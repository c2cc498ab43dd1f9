"""Property tests of the convolution family: random shapes (0 and 1 included)
and random options, checked against the independent loops in
tests/reference/conv.py.  The hypothesis profile (tests/conftest.py) is
derandomized when CI is set.  Arbitrary (mostly invalid) options run in a
child Python: tests/every_op/test_arbitrary_options.py.
"""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import convcore as cc  # noqa: E402
from reference.conv import (col2im_naive, conv2d_backward_naive, conv2d_naive,  # noqa: E402
                            im2col_naive, out_len)
from _draw import (DTYPES, conv_geometry, float32_bound_ok, make, relayout,  # noqa: E402
                   threads_restored)


@given(g=conv_geometry(), dtype=st.sampled_from(DTYPES), bias=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_conv2d_has_documented_shape_and_matches_reference(g, dtype, bias, seed):
    rng = np.random.default_rng(seed)
    x = make(rng, (g["N"], g["C"], g["H"], g["W"]), dtype)
    w = make(rng, (g["K"], g["C"] // g["groups"], g["KH"], g["KW"]), dtype)
    b = make(rng, (g["K"],), dtype) if bias else None
    y = cc.conv2d(x, w, b, g["stride"], g["padding"], g["dilation"], g["groups"])
    oh = out_len(g["H"], g["KH"], g["stride"][0], g["padding"][0], g["dilation"][0])
    ow = out_len(g["W"], g["KW"], g["stride"][1], g["padding"][1], g["dilation"][1])
    assert y.shape == (g["N"], g["K"], oh, ow)
    assert y.dtype == dtype
    ref = conv2d_naive(x, w, b, g["stride"], g["padding"], g["dilation"], g["groups"])
    if dtype == np.float64:
        np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    else:
        bound = conv2d_naive(np.abs(x), np.abs(w), None if b is None else np.abs(b),
                             g["stride"], g["padding"], g["dilation"], g["groups"])
        assert float32_bound_ok(y, ref, bound, 1 + w[0].size)


@given(g=conv_geometry(max_side=6), seed=st.integers(0, 2**32 - 1))
def test_conv2d_backward_matches_reference_and_adjoint_identities(g, seed):
    rng = np.random.default_rng(seed)
    x = make(rng, (g["N"], g["C"], g["H"], g["W"]), np.float64)
    w = make(rng, (g["K"], g["C"] // g["groups"], g["KH"], g["KW"]), np.float64)
    y = cc.conv2d(x, w, None, g["stride"], g["padding"], g["dilation"], g["groups"])
    dy = make(rng, y.shape, np.float64)
    gx, gw, gb = cc.conv2d_backward(dy, x, w, g["stride"], g["padding"], g["dilation"],
                                    g["groups"])
    rx, rw, rb = conv2d_backward_naive(dy, x, w, g["stride"], g["padding"],
                                       g["dilation"], g["groups"])
    np.testing.assert_allclose(gx, rx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, rw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gb, rb, rtol=1e-12, atol=1e-12)
    # <conv(x, w), dy> = <x, dX(dy)> = <w, dW(dy)>
    lhs = np.vdot(y, dy)
    scale = 1 + np.vdot(np.abs(y), np.abs(dy))
    assert abs(lhs - np.vdot(x, gx)) <= 1e-12 * scale
    assert abs(lhs - np.vdot(w, gw)) <= 1e-12 * scale


@given(g=conv_geometry(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_im2col_matches_naive_and_col2im_is_its_adjoint(g, dtype, seed):
    rng = np.random.default_rng(seed)
    k, s, p, d = (g["KH"], g["KW"]), g["stride"], g["padding"], g["dilation"]
    x = make(rng, (g["N"], g["C"], g["H"], g["W"]), dtype)
    cols = cc.im2col(x, k, s, p, d)
    np.testing.assert_array_equal(cols, im2col_naive(x, k, s, p, d))
    c = make(rng, cols.shape, dtype)
    back = cc.col2im(c, (g["H"], g["W"]), k, s, p, d)
    ref = col2im_naive(c, (g["H"], g["W"]), k, s, p, d)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(back, ref, rtol=tol, atol=tol)
    x64 = make(rng, x.shape, np.float64)
    c64 = make(rng, cols.shape, np.float64)
    lhs = np.vdot(cc.im2col(x64, k, s, p, d), c64)
    rhs = np.vdot(x64, cc.col2im(c64, (g["H"], g["W"]), k, s, p, d))
    assert abs(lhs - rhs) <= 1e-12 * (1 + abs(lhs))


@given(g=conv_geometry(), dtype=st.sampled_from(DTYPES),
       layouts=st.tuples(*[st.sampled_from(["c", "fortran", "reversed", "strided",
                                             "transposed"])] * 3),
       seed=st.integers(0, 2**32 - 1))
def test_results_do_not_depend_on_memory_layout(g, dtype, layouts, seed):
    rng = np.random.default_rng(seed)
    x = make(rng, (g["N"], g["C"], g["H"], g["W"]), dtype)
    w = make(rng, (g["K"], g["C"] // g["groups"], g["KH"], g["KW"]), dtype)
    opts = (g["stride"], g["padding"], g["dilation"], g["groups"])
    y = cc.conv2d(x, w, None, *opts)
    dy = make(rng, y.shape, dtype)
    lx, lw, ldy = (relayout(a, how) for a, how in zip((x, w, dy), layouts))
    np.testing.assert_array_equal(cc.conv2d(lx, lw, None, *opts), y)
    for got, want in zip(cc.conv2d_backward(ldy, lx, lw, *opts),
                         cc.conv2d_backward(dy, x, w, *opts)):
        np.testing.assert_array_equal(got, want)


@settings(max_examples=25)
@given(g=conv_geometry(max_side=9), dtype=st.sampled_from(DTYPES),
       threads=st.integers(2, 5), seed=st.integers(0, 2**32 - 1))
def test_results_do_not_depend_on_thread_count(g, dtype, threads, seed):
    with threads_restored():
        _thread_check(g, dtype, threads, seed)


def _thread_check(g, dtype, threads, seed):
    rng = np.random.default_rng(seed)
    x = make(rng, (g["N"] + 2, g["C"], g["H"], g["W"]), dtype)
    w = make(rng, (g["K"], g["C"] // g["groups"], g["KH"], g["KW"]), dtype)
    opts = (g["stride"], g["padding"], g["dilation"], g["groups"])
    cc.set_num_threads(1)
    y1 = cc.conv2d(x, w, None, *opts)
    dy = make(rng, y1.shape, dtype)
    b1 = cc.conv2d_backward(dy, x, w, *opts)
    c1 = cc.col2im(cc.im2col(x, (g["KH"], g["KW"]), *opts[:3]), (g["H"], g["W"]),
                   (g["KH"], g["KW"]), *opts[:3])
    cc.set_num_threads(threads)
    np.testing.assert_array_equal(cc.conv2d(x, w, None, *opts), y1)
    for got, want in zip(cc.conv2d_backward(dy, x, w, *opts), b1):
        np.testing.assert_array_equal(got, want)
    c2 = cc.col2im(cc.im2col(x, (g["KH"], g["KW"]), *opts[:3]), (g["H"], g["W"]),
                   (g["KH"], g["KW"]), *opts[:3])
    np.testing.assert_array_equal(c2, c1)
