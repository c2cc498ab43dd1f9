"""The UNROLLED strategy: a map smaller than the kernel as one matrix
product, y = x . Wu^T with Wu the layer's matrix from an image to its output.

Checked against the independent loops of tests/reference/conv.py (float64,
to rounding) and PyTorch (float32 and float64), forward and backward, on
the maps it was made for -- 1x1 and 2x2 maps, odd sizes at stride 2, 1-4
input channels -- and on geometries that stress the tap map (padding wider
than the kernel's reach, dilation, rectangular kernels, stride 3); Inf and
NaN keep the loops' pattern; results do not depend on the thread count.
"""
import numpy as np
import pytest

import convcore as cc
from convcore._core import _conv
import _small_maps as small_maps
from reference.conv import conv2d_backward_naive, conv2d_naive

torch = pytest.importorskip("torch")

# (N, C, H, W, K, (KH, KW), stride, padding, dilation)
CASES = [
    (3, 4, 2, 2, 5, (3, 3), 1, 1, 1),      # 2x2 map, 3x3 kernel: 4 pixels, 9 taps
    (4, 2, 1, 1, 3, (3, 3), 1, 1, 1),      # 1x1 map
    (2, 1, 3, 3, 4, (3, 3), 2, 1, 1),      # odd size at stride 2, one channel
    (2, 3, 2, 3, 6, (3, 3), 2, 1, 1),      # 2x3 map at stride 2
    (2, 4, 3, 3, 5, (5, 5), 1, 2, 1),      # 5x5 on a 3x3 map
    (2, 2, 3, 3, 3, (3, 3), 1, 3, 1),      # padding 3: outer positions see no tap
    (2, 3, 3, 3, 4, (3, 3), 1, 2, 2),      # dilation 2
    (2, 3, 2, 4, 4, (2, 5), 1, (1, 2), 1),  # rectangular kernel
    (3, 2, 4, 4, 3, (3, 3), 3, 2, 1),      # stride 3
    (1, 4, 3, 4, 2, (7, 7), 2, 3, 1),      # a stem on a small map
    (2, 40, 2, 2, 70, (3, 3), 1, 1, 1),    # channels across several blocks
]


@pytest.fixture
def unrolled(monkeypatch):
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "unrolled")


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_applies_to_every_case(case):
    for dtype in (np.float32, np.float64):
        for backward in (False, True):
            ran = _conv.plan(small_maps.geom(case), dtype, "unrolled", backward)
            assert ran.split("+")[0] == "unrolled"


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_float64_matches_the_loops(case, unrolled, rng):
    small_maps.check_float64_against_the_loops(case, rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_matches_pytorch(case, dtype, unrolled, rng):
    small_maps.check_against_pytorch(case, dtype, rng, torch)


def test_positions_that_see_no_tap_hold_the_bias(unrolled, rng):
    # 3x3 map, padding 3: the outer ring of the 7x7 output
    small_maps.check_bias_where_no_tap_is_seen(CASES[5], rng)


def test_weight_gradient_alone(rng):
    # a layer whose input needs no gradient: dW without dX, through the module
    conv = cc.nn.Conv2d(24, 32, 3, padding=1, bias=False, rng=0)
    conv.needs_input_grad = False
    x = rng.standard_normal((32, 24, 2, 2)).astype(np.float32)
    assert _conv.plan((32, 24, 2, 2, 32, 3, 3, 1, 1, 1, 1, 1, 1, 2, 2, 1), np.float32,
                      backward=True) == "unrolled"
    dy = rng.standard_normal((32, 32, 2, 2)).astype(np.float32)
    conv(x)
    conv.backward(dy)
    _, dw_ref, _ = conv2d_backward_naive(dy.astype(np.float64), x.astype(np.float64),
                                         conv.weight.data.astype(np.float64), (1, 1), (1, 1))
    np.testing.assert_allclose(conv.weight.grad, dw_ref, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inf_and_nan_keep_the_reference_pattern(dtype, unrolled, rng):
    # Wu's zeros would multiply an Inf or NaN input where the loops make no
    # product, and a weight's products with the padding are NaN in the
    # loops: every such call runs the GEMM over padded columns instead.
    x = rng.standard_normal((2, 3, 2, 2)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    w[1, 2, 0, 0] = np.inf       # a corner tap: live for one output position only
    w[3, 0, 2, 1] = np.nan
    y = cc.conv2d(x, w, padding=1)
    with np.errstate(invalid="ignore"):
        ref = conv2d_naive(x, w, None, (1, 1), (1, 1))
    for test in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(test(y), test(ref))
    assert np.isnan(y[:, 1, 0, :]).all() and np.isinf(y[:, 1, 1, 1]).all()
    w[1, 2, 0, 0] = w[3, 0, 2, 1] = 0.5
    x[0, 1, 0, 0] = np.inf       # seen by every output position, through different taps
    y = cc.conv2d(x, w, padding=1)
    with np.errstate(invalid="ignore"):
        ref = conv2d_naive(x, w, None, (1, 1), (1, 1))
    for test in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(test(y), test(ref))
    assert np.isfinite(y[1]).all()
    x[0, 1, 0, 0] = 0.25
    dy = rng.standard_normal((2, 4, 2, 2)).astype(dtype)
    dy[1, 2, 0, 0] = np.inf
    dx, dw, _ = cc.conv2d_backward(dy, x, w, padding=1)
    with np.errstate(invalid="ignore"):
        dx_ref, dw_ref, _ = conv2d_backward_naive(dy, x, w, (1, 1), (1, 1))
    for got, ref in ((dx, dx_ref), (dw, dw_ref)):
        for test in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(test(got), test(ref))


def test_results_identical_for_any_thread_count(unrolled, rng):
    small_maps.check_identical_for_thread_counts((8, 40, 2, 2, 72, (3, 3), 1, 1, 1), rng,
                                                 (1, 2, 3, 4))


def _g(N, C, H, K, k=3, s=1, p=1, groups=1):
    O = (H + 2 * p - k) // s + 1
    return (N, C, H, H, K, k, k, s, s, p, p, 1, 1, O, O, groups)


def test_where_auto_takes_it():
    # fewer pixels than taps, and a batch where the products outweigh
    # writing the layer's matrix (4 MiB: from 24 images; 16 MiB: from 64)
    for backward in (False, True):
        assert _conv.plan(_g(32, 256, 2, 256), np.float32, backward=backward) == "unrolled"
        assert _conv.plan(_g(8, 256, 2, 256), np.float32, backward=backward) == "batched"
    assert _conv.plan(_g(64, 512, 2, 512), np.float32) == "unrolled"
    assert _conv.plan(_g(32, 512, 2, 512), np.float32) == "batched"
    assert _conv.plan(_g(32, 256, 2, 256), np.float64) == "batched"    # 8 MiB
    assert _conv.plan(_g(32, 8, 2, 256), np.float32) == "batched"      # too few channels
    assert _conv.plan(_g(64, 128, 4, 128), np.float32) == "winograd"   # 16 pixels, 9 taps
    # a 1x1 map: the matrix is the centre taps, a ninth of the weights (the
    # crop would find the same taps; it is skipped)
    for n in (8, 32):
        for backward in (False, True):
            assert _conv.plan(_g(n, 512, 1, 512), np.float32, backward=backward) == "unrolled"
    assert _conv.plan(_g(1, 512, 1, 512), np.float32) == "batched"
    assert _conv.plan(_g(1, 512, 1, 512), np.float32, backward=True) == "unrolled"
    assert _conv.plan(_g(32, 8, 1, 512), np.float32).endswith("+crop")    # too few channels


def test_does_not_apply_to_groups_or_large_maps():
    assert _conv.plan(_g(4, 8, 4, 8, groups=2), np.float64, "unrolled") == "batched"
    assert _conv.plan(_g(4, 8, 9, 8), np.float64, "unrolled") == "batched"      # 81 pixels
