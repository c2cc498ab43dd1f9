"""The REGIONS strategy: a GEMM per region of the output plane over its live
taps only (no product with the padding).

Checked against the independent loops of tests/reference/conv.py (float64,
to rounding) and PyTorch (float32 and float64), forward and backward, on the
geometries it was made for -- 1x1, 2x2 and 4x4 maps, odd sizes at stride 2,
1-4 input channels -- and on the ones that stress its region map: padding
wider than the kernel's reach (positions that see no tap at all), dilation,
rectangular kernels, stride 3.
"""
import numpy as np
import pytest

import convcore as cc
from convcore import _config
from convcore._core import _conv
import _small_maps as small_maps
from reference.conv import conv2d_backward_naive, conv2d_naive

torch = pytest.importorskip("torch")

# (N, C, H, W, K, (KH, KW), stride, padding, dilation)
CASES = [
    (3, 4, 2, 2, 5, (3, 3), 1, 1, 1),      # 2x2 map: every position a corner
    (2, 3, 4, 4, 6, (3, 3), 1, 1, 1),      # 4x4: corners, edges, interior
    (4, 2, 1, 1, 3, (3, 3), 1, 1, 1),      # 1x1: the centre tap only
    (2, 1, 7, 9, 4, (3, 3), 2, 1, 1),      # odd sizes at stride 2, one channel
    (2, 4, 7, 7, 5, (5, 5), 1, 2, 1),      # 5x5 on a 7x7 map
    (2, 3, 5, 6, 4, (3, 3), 1, 2, 1),      # padding 2: border positions see 1-2 rows
    (2, 2, 3, 3, 3, (3, 3), 1, 3, 1),      # padding 3: outer positions see no tap
    (2, 3, 6, 5, 4, (3, 3), 1, 2, 2),      # dilation 2
    (2, 3, 5, 7, 4, (2, 5), 1, (1, 2), 1),  # rectangular kernel
    (3, 2, 8, 8, 3, (3, 3), 3, 2, 1),      # stride 3
    (1, 4, 3, 4, 2, (7, 7), 2, 3, 1),      # a stem on a small map
]


@pytest.fixture
def regions(monkeypatch):
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "regions")


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_applies_to_every_case(case):
    for dtype in (np.float32, np.float64):
        for backward in (False, True):
            assert _conv.plan(small_maps.geom(case), dtype, "regions", backward) == "regions"


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_float64_matches_the_loops(case, regions, rng):
    small_maps.check_float64_against_the_loops(case, rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_matches_pytorch(case, dtype, regions, rng):
    small_maps.check_against_pytorch(case, dtype, rng, torch)


def test_positions_that_see_no_tap_hold_the_bias(regions, rng):
    # 3x3 map, padding 3: the outer ring of the 7x7 output
    small_maps.check_bias_where_no_tap_is_seen(CASES[6], rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inf_and_nan_keep_the_reference_pattern(dtype, regions, rng):
    # A dead tap adds w * 0 -- NaN for an Inf or NaN weight -- and dW's
    # dy * 0 is NaN for an Inf in dy: the strategy hands such calls to the
    # GEMM over padded columns, whose pattern is the loops'.
    x = rng.standard_normal((2, 3, 4, 4)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    w[1, 2, 0, 0] = np.inf       # a corner tap: dead for the top row and left column
    w[3, 0, 2, 1] = np.nan
    y = cc.conv2d(x, w, padding=1)
    with np.errstate(invalid="ignore"):
        ref = conv2d_naive(x, w, None, (1, 1), (1, 1))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(ref))
    # the Inf weight's channel: NaN where its tap is dead, +-Inf where it is live
    assert np.isnan(y[:, 1, 0, :]).all() and np.isnan(y[:, 1, :, 0]).all()
    assert np.isinf(y[:, 1, 1:, 1:]).all() and np.isnan(y[:, 3]).all()
    w[1, 2, 0, 0] = w[3, 0, 2, 1] = 0.5
    dy = rng.standard_normal((2, 4, 4, 4)).astype(dtype)
    dy[1, 2, 0, 0] = np.inf      # a corner output: its dead taps give dW NaN
    dx, dw, _ = cc.conv2d_backward(dy, x, w, padding=1)
    with np.errstate(invalid="ignore"):
        dx_ref, dw_ref, _ = conv2d_backward_naive(dy, x, w, (1, 1), (1, 1))
    np.testing.assert_array_equal(np.isnan(dw), np.isnan(dw_ref))
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(dx_ref))
    np.testing.assert_array_equal(np.isposinf(dx), np.isposinf(dx_ref))
    # Inf in x is a live product wherever it is seen: the strategy runs, same pattern
    x[0, 1, 0, 0] = np.inf
    x[1, 0, 3, 2] = -np.inf
    y = cc.conv2d(x, w, padding=1)
    with np.errstate(invalid="ignore"):
        ref = conv2d_naive(x, w, None, (1, 1), (1, 1))
    for test in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(test(y), test(ref))


def test_results_identical_for_any_thread_count(regions, rng):
    small_maps.check_identical_for_thread_counts((8, 24, 4, 4, 40, (3, 3), 1, 1, 1), rng,
                                                 (1, 2, 3))


def test_chunks_under_a_small_workspace_limit(regions, rng):
    # one image a chunk: dW accumulates over the chunks
    geom = (6, 5, 4, 4, 7, 3, 3, 1, 1, 1, 1, 1, 1, 4, 4, 1)
    x = rng.standard_normal((6, 5, 4, 4))
    w = rng.standard_normal((7, 5, 3, 3))
    old = _config.get_workspace_limit()
    try:
        cc.set_workspace_limit(1)
        assert _conv.make_plan(geom, 8, _conv.REGIONS, True, 0)[2] == 1
        y = cc.conv2d(x, w, padding=1)
        dy = rng.standard_normal(y.shape)
        dx, dw, _ = cc.conv2d_backward(dy, x, w, padding=1)
    finally:
        cc.set_workspace_limit(old)
    np.testing.assert_allclose(y, conv2d_naive(x, w, None, (1, 1), (1, 1)), rtol=1e-12,
                               atol=1e-12)
    dx_ref, dw_ref, _ = conv2d_backward_naive(dy, x, w, (1, 1), (1, 1))
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-12, atol=1e-12)


def _g(N, C, H, K, k=3, s=1, p=1, groups=1):
    O = (H + 2 * p - k) // s + 1
    return (N, C, H, H, K, k, k, s, s, p, p, 1, 1, O, O, groups)


def test_where_auto_takes_it():
    # float64 (WINOGRAD never unasked), forward, small maps at a large batch
    # (where the layer's matrix is small enough, UNROLLED comes first)
    assert _conv.plan(_g(64, 512, 2, 512), np.float64) == "regions"
    assert _conv.plan(_g(64, 256, 2, 256), np.float64) == "unrolled"
    assert _conv.plan(_g(64, 128, 4, 128), np.float64) == "regions"
    assert _conv.plan(_g(64, 128, 4, 128), np.float64, backward=True) == "batched"
    assert _conv.plan(_g(8, 256, 2, 256), np.float64) == "batched"     # too few positions
    assert _conv.plan(_g(64, 8, 4, 128), np.float64) == "batched"      # too few channels
    assert _conv.plan(_g(64, 128, 14, 128), np.float64) == "batched"   # 9 % of taps dead
    # float32: WINOGRAD comes first where it applies
    assert _conv.plan(_g(64, 128, 4, 128), np.float32) == "winograd"


def test_does_not_apply_without_dead_taps_or_with_groups():
    assert _conv.plan(_g(4, 8, 6, 8, p=0), np.float64, "regions") == "batched"
    assert _conv.plan(_g(4, 8, 4, 8, groups=2), np.float64, "regions") == "batched"
