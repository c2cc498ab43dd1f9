"""The depthwise kernels (C / groups == 1): padded-plane vector loops.

The forward runs blocks of 4 rows x 32 columns over a zero-padded copy of each
plane; dX with one output channel per input channel and stride 1 runs the same
kernel over dy with the flipped taps; dW sums dy x x over padded planes with
stride-1 columns.  Everything else (strides in dX, channel multipliers, Inf or
NaN) takes the bounds-checked loops.  The shapes below reach every one of
those branches: column tails, row tails, planes wider than one block, planes
larger than the old stack buffer, dilation, asymmetric and over-wide padding.
References are float64 loops (tests/reference/conv.py), compared under the sound
float32 bound: (number of terms) x 2^-24 x the sums of absolute values.
"""
import numpy as np
import pytest

import convcore as cc
from reference.conv import conv2d_backward_naive, conv2d_naive

U32 = 2.0 ** -24

CASES = [  # N, C, mult, H, W, k, stride, padding, dilation
    (2, 3, 1, 28, 28, 3, 1, 1, 1),        # the benchmark layer, smaller
    (1, 2, 1, 9, 45, 3, 1, 1, 1),         # two column blocks, a tail of 13
    (2, 2, 1, 7, 5, 5, 1, 2, 1),          # 5x5, row tail
    (1, 3, 1, 10, 33, 3, 1, 0, 1),        # no padding: 31 columns out
    (1, 2, 1, 11, 17, 3, 1, 2, 2),        # dilation 2
    (1, 2, 1, 9, 12, 3, 1, (1, 0), 1),    # asymmetric padding
    (1, 2, 1, 8, 8, 3, 1, 3, 1),          # padding past D (K - 1): dX loops
    (2, 3, 1, 13, 14, 3, 2, 1, 1),        # stride 2: strided loads, dX and dW loops
    (1, 2, 1, 9, 20, 3, (1, 2), 1, 1),    # stride in columns only
    (2, 2, 2, 8, 9, 3, 1, 1, 1),          # channel multiplier 2: dX loops
    (1, 1, 1, 1, 1, 3, 1, 1, 1),          # 1x1 plane
    (1, 2, 1, 1, 40, (1, 3), 1, (0, 1), 1),  # one row
]


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def _data(case, dtype, rng):
    N, C, mult, H, W, k, s, p, d = case
    kh, kw = _pair(k)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((C * mult, 1, kh, kw)).astype(dtype)
    b = rng.standard_normal(C * mult).astype(dtype)
    return x, w, b, _pair(s), _pair(p), _pair(d), C


def _bound(terms, absref, dtype):
    return 1e-12 * (absref + 1) if dtype == np.float64 else terms * U32 * absref + 1e-30


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_depthwise_forward_and_gradients_match_float64_loops(case, dtype, rng):
    x, w, b, s, p, d, C = _data(case, dtype, rng)
    y = cc.conv2d(x, w, b, s, p, d, C)
    ref = conv2d_naive(x, w, b, s, p, d, C)
    absref = conv2d_naive(np.abs(x), np.abs(w), np.abs(b), s, p, d, C)
    kk = w.shape[2] * w.shape[3]
    assert np.all(np.abs(y - ref) <= _bound(kk + 1, absref, dtype))

    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = cc.conv2d_backward(dy, x, w, s, p, d, C)
    rdx, rdw, rdb = conv2d_backward_naive(dy, x, w, s, p, d, C)
    adx, adw, _ = conv2d_backward_naive(np.abs(dy), np.abs(x), np.abs(w), s, p, d, C)
    mult = w.shape[0] // C
    assert dx.dtype == dw.dtype == dtype
    assert np.all(np.abs(dx - rdx) <= _bound(kk * mult, adx, dtype))
    n_terms = y.shape[0] * y.shape[2] * y.shape[3]
    assert np.all(np.abs(dw - rdw) <= _bound(n_terms + 1, adw, dtype))
    np.testing.assert_allclose(db, rdb, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_forward_on_a_plane_larger_than_a_stack_buffer(dtype, rng):
    # 120 x 120 padded is more than 8192 elements: the plane buffer is on the heap
    x = rng.standard_normal((1, 2, 120, 120)).astype(dtype)
    w = rng.standard_normal((2, 1, 3, 3)).astype(dtype)
    y = cc.conv2d(x, w, None, 1, 1, 1, 2)
    ref = conv2d_naive(x, w, None, (1, 1), (1, 1), (1, 1), 2)
    absref = conv2d_naive(np.abs(x), np.abs(w), None, (1, 1), (1, 1), (1, 1), 2)
    assert np.all(np.abs(y - ref) <= _bound(10, absref, dtype))


@pytest.mark.parametrize("case", CASES[:3] + CASES[7:8], ids=str)
def test_depthwise_results_do_not_depend_on_the_thread_count(case, rng):
    x, w, b, s, p, d, C = _data(case, np.float32, rng)
    dy = rng.standard_normal(cc.conv2d(x, w, b, s, p, d, C).shape).astype(np.float32)
    old = cc.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3):
            cc.set_num_threads(n)
            runs.append((cc.conv2d(x, w, b, s, p, d, C),) + cc.conv2d_backward(dy, x, w, s, p, d, C))
    finally:
        cc.set_num_threads(old)
    for other in runs[1:]:
        for a, b_ in zip(runs[0], other):
            assert np.array_equal(a, b_)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_gradients_with_nan_or_inf_take_the_loops_and_keep_the_rest(dtype, rng):
    # a NaN inside one input plane, an Inf tap: those channels follow IEEE,
    # and every other channel's gradient is unchanged from the finite run
    x = rng.standard_normal((2, 4, 10, 10)).astype(dtype)
    w = rng.standard_normal((4, 1, 3, 3)).astype(dtype)
    dy = rng.standard_normal((2, 4, 10, 10)).astype(dtype)
    dx0, dw0, _ = cc.conv2d_backward(dy, x, w, 1, 1, 1, 4)
    x[1, 2, 4, 5] = np.nan
    w[3, 0, 1, 1] = np.inf
    dx, dw, _ = cc.conv2d_backward(dy, x, w, 1, 1, 1, 4)
    with np.errstate(invalid="ignore"):
        rdx, rdw, _ = conv2d_backward_naive(dy, x, w, (1, 1), (1, 1), (1, 1), 4)
    assert np.isnan(dw[2]).all()
    np.testing.assert_array_equal(np.isinf(dx), np.isinf(rdx))
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(rdx))
    tol = 1e-4 if dtype == np.float32 else 1e-12
    keep = [0, 1, 3]     # dW does not depend on the weights
    np.testing.assert_allclose(dw[keep], rdw[keep], rtol=tol, atol=tol)
    np.testing.assert_allclose(dw[keep], dw0[keep], rtol=tol, atol=tol)
    np.testing.assert_allclose(dx[:, :3], dx0[:, :3], rtol=tol, atol=tol)
    fin = np.isfinite(rdx)
    np.testing.assert_allclose(dx[fin], rdx[fin], rtol=tol, atol=tol)
