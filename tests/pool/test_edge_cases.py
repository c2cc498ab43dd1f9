"""The edge-case catalogue (docs/contributing.rst), pooling rows: inputs that
broke other pooling implementations.

Each test names the row it covers and checks the exact behaviour the catalog
asks for (VE = ValueError, TE = TypeError, messages naming expected and given).
"""
import numpy as np
import pytest

import convcore as cc
from reference.pool import avg_pool_naive, max_pool_naive

XP = np.arange(36.0).reshape(1, 1, 6, 6)


@pytest.mark.parametrize("opt, value, msg", [
    ("kernel_size", 0, "kernel_size must be >= 1, got 0"),
    ("kernel_size", (2, -1), "kernel_size must be >= 1, got -1"),
    ("stride", 0, "stride must be >= 1, got 0"),
    ("stride", (-2, 1), "stride must be >= 1, got -2"),
    ("padding", -1, "padding must be >= 0, got -1"),
    ("dilation", 0, "dilation must be >= 1, got 0"),
])
def test_pool_row_nonpositive_kernel_stride_dilation_negative_padding_is_value_error(
        opt, value, msg, no_work):
    kw = dict(kernel_size=2)
    kw[opt] = value
    with pytest.raises(ValueError, match=msg):
        cc.max_pool2d(XP, **kw)
    if opt != "dilation":
        with pytest.raises(ValueError, match=msg):
            cc.avg_pool2d(XP, **kw)
        with pytest.raises(ValueError, match=msg):
            cc.avg_pool2d_backward(np.ones((1, 1, 3, 3)), XP.shape, **kw)


@pytest.mark.parametrize("k, d", [(2, 1), (3, 1), (4, 1), (2, 3), (3, 2), (5, 1)])
def test_pool_row_max_pool_padding_over_half_the_effective_kernel_is_value_error(k, d):
    """Refused above half the effective kernel; like PyTorch, also above half the
    kernel itself (PyTorch checks kernel // 2 first, then the effective size)."""
    eff = d * (k - 1) + 1
    x = np.random.default_rng(0).standard_normal((1, 2, 9, 9))
    # at most half the kernel: accepted, and as the reference
    y, idx = cc.max_pool2d(x, k, 1, k // 2, d, return_indices=True)
    ry, ridx = max_pool_naive(x, (k, k), (1, 1), (k // 2,) * 2, (d, d), False)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    for p in sorted({eff // 2 + 1, k // 2 + 1}):
        with pytest.raises(ValueError, match=r"padding must be at most half"):
            cc.max_pool2d(x, k, 1, p, d)
        with pytest.raises(ValueError, match=r"padding must be at most half"):
            cc.max_pool2d(x, (1, k), 1, (0, p), (1, d))
    with pytest.raises(ValueError, match="padding"):
        cc.avg_pool2d(x, k, 1, k // 2 + 1)


@pytest.mark.parametrize("call", [
    lambda: cc.max_pool2d(np.ones((1, 1, 1, 1)), 3),
    lambda: cc.max_pool2d(np.ones((1, 1, 2, 8)), 3, 1, 0),
    lambda: cc.max_pool2d(np.ones((1, 1, 4, 4)), 2, 1, 0, 4),
    lambda: cc.avg_pool2d(np.ones((1, 1, 1, 5)), 2),
    lambda: cc.avg_pool2d(np.ones((1, 1, 2, 2)), 3, 1, 0),
    lambda: cc.avg_pool2d_backward(np.ones((1, 1, 0, 1)), (1, 1, 1, 1), 3),
])
def test_pool_row_output_size_not_positive_is_value_error(call, no_work):
    """An output size <= 0 is refused before any allocation."""
    with pytest.raises(ValueError):
        call()


def test_pool_row_ceil_mode_no_window_starts_in_the_padding():
    """(1,1,6,7), k=1, s=2, ceil_mode gives (3, 4): no window starts in the padding."""
    x = np.arange(42.0).reshape(1, 1, 6, 7)
    y = cc.max_pool2d(x, 1, 2, ceil_mode=True)
    assert y.shape == (1, 1, 3, 4)
    np.testing.assert_array_equal(y, x[:, :, ::2, ::2])
    assert cc.avg_pool2d(x, 1, 2, ceil_mode=True).shape == (1, 1, 3, 4)


def test_pool_row_ceil_mode_width_5_k2_s2_p1_gives_width_3():
    """Width 5, k=2, s=2, p=1 with ceil_mode gives width 3."""
    x = np.arange(5.0).reshape(1, 1, 1, 5)
    assert cc.max_pool2d(x, (1, 2), (1, 2), (0, 1), ceil_mode=True).shape[-1] == 3
    assert cc.avg_pool2d(x, (1, 2), (1, 2), (0, 1), ceil_mode=True).shape[-1] == 3
    np.testing.assert_array_equal(cc.max_pool2d(x, (1, 2), (1, 2), (0, 1), ceil_mode=True),
                                  [[[[0.0, 2.0, 4.0]]]])


def test_pool_row_avg_ceil_overhang_is_not_in_the_divisor():
    """[1,2,3,4,5], k=2, s=2, ceil_mode -> [1.5, 3.5, 5.0]: the overhang is not in the divisor."""
    x = np.array([1.0, 2, 3, 4, 5]).reshape(1, 1, 1, 5)
    y = cc.avg_pool2d(x, (1, 2), (1, 2), ceil_mode=True)
    np.testing.assert_array_equal(y.ravel(), [1.5, 3.5, 5.0])
    y32 = cc.avg_pool2d(x.astype(np.float32), (1, 2), (1, 2), ceil_mode=True)
    np.testing.assert_array_equal(y32.ravel(), np.float32([1.5, 3.5, 5.0]))


def test_pool_row_avg_7x7_arange_k2_s3_ceil_last_row():
    """7x7 arange, k=2, s=3, ceil_mode: last row [42.5, 45.5, 48.0]."""
    x = np.arange(49.0).reshape(1, 1, 7, 7)
    y = cc.avg_pool2d(x, 2, 3, ceil_mode=True)
    assert y.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(y[0, 0, -1], [42.5, 45.5, 48.0])
    np.testing.assert_array_equal(y, avg_pool_naive(x, (2, 2), (3, 3), (0, 0), True))


@pytest.mark.parametrize("bad", [0, -1])
def test_pool_row_divisor_override_zero_is_value_error(bad, no_work):
    with pytest.raises(ValueError, match="divisor_override"):
        cc.avg_pool2d(XP, 2, divisor_override=bad)
    with pytest.raises(ValueError, match="divisor_override"):
        cc.avg_pool2d_backward(np.ones((1, 1, 3, 3)), XP.shape, 2, divisor_override=bad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pool_row_nan_wins_the_window_its_index_gets_the_gradient(dtype):
    """Window [1, NaN, 5, 6] gives NaN and the NaN's index."""
    x = np.array([[1, np.nan, 7, 8], [5, 6, np.nan, np.nan]], dtype).reshape(1, 1, 2, 4)
    y, idx = cc.max_pool2d(x, 2, return_indices=True)
    assert np.isnan(y).all()
    assert idx[0, 0, 0, 0] == 1                         # the one NaN of [1, NaN, 5, 6]
    assert idx[0, 0, 0, 1] in (6, 7)                    # all-NaN-but... [7, 8, NaN, NaN]
    assert np.isnan(x.reshape(-1)[idx[0, 0, 0, 1]])
    dx = cc.max_pool2d_backward(np.array([[[[2.0, 3.0]]]], dtype), idx, x.shape)
    want = np.zeros(8, dtype)
    want[1], want[idx[0, 0, 0, 1]] = 2, 3
    np.testing.assert_array_equal(dx.reshape(-1), want)
    allnan = np.full((1, 1, 2, 2), np.nan, dtype)
    y, idx = cc.max_pool2d(allnan, 2, return_indices=True)
    assert np.isnan(y).all() and 0 <= idx.item() < 4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pool_row_window_of_minus_inf_gives_minus_inf_and_a_valid_index(dtype):
    """An all -inf window: -inf and a valid in-window index (never -1)."""
    x = np.full((1, 1, 3, 4), -np.inf, dtype)
    x[0, 0, 2, 3] = 1
    y, idx = cc.max_pool2d(x, 2, 1, 1, return_indices=True)
    assert y.shape == (1, 1, 4, 5)
    ry, _ = max_pool_naive(x, (2, 2), (1, 1), (1, 1), (1, 1), False)
    np.testing.assert_array_equal(y, ry)
    # every index is inside its own window (and inside the input)
    for i in range(4):
        for j in range(5):
            h, w = divmod(int(idx[0, 0, i, j]), 4)
            assert i - 1 <= h <= i and j - 1 <= w <= j and 0 <= h < 3 and 0 <= w < 4
    dx = cc.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    assert dx.sum() == y.size                           # every gradient landed once


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pool_row_padding_acts_as_minus_inf_not_zero(dtype):
    """All -1 input 2x2, k=2, s=2, p=1 gives all -1: padding acts as -inf."""
    y = cc.max_pool2d(np.full((1, 1, 2, 2), -1, dtype), 2, 2, 1)
    assert y.shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(y, -1)


def test_pool_row_ties_first_maximum_wins_each_gradient_to_one_input():
    """Ties [[1,1],[1,8]], k=2, s=1, p=1: the first maximum wins."""
    x = np.array([[1.0, 1], [1, 8]]).reshape(1, 1, 2, 2)
    y, idx = cc.max_pool2d(x, 2, 1, 1, return_indices=True)
    np.testing.assert_array_equal(idx[0, 0], [[0, 0, 1], [0, 3, 3], [2, 3, 3]])
    dx = cc.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    np.testing.assert_array_equal(dx[0, 0], [[3, 1], [1, 4]])   # 9 outputs, 9 gradients


def test_pool_row_empty_batch_gives_empty_output():
    x = np.ones((0, 3, 6, 5))
    y, idx = cc.max_pool2d(x, 2, return_indices=True)
    assert y.shape == idx.shape == (0, 3, 3, 2) and idx.dtype == np.int64
    assert cc.max_pool2d_backward(y, idx, x.shape).shape == x.shape
    assert cc.avg_pool2d(x, 3, 2, 1, ceil_mode=True).shape == (0, 3, 4, 3)
    assert cc.avg_pool2d_backward(np.ones((0, 3, 4, 3)), x.shape, 3, 2, 1,
                                  ceil_mode=True).shape == x.shape
    assert cc.adaptive_avg_pool2d(x, (2, 4)).shape == (0, 3, 2, 4)
    assert cc.adaptive_avg_pool2d_backward(np.ones((0, 3, 2, 4)), x.shape).shape == x.shape
