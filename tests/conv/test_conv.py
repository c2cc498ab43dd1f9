"""conv2d, conv2d_backward, im2col and col2im against independent references."""
import itertools
import threading

import numpy as np
import pytest
from scipy import signal

import convcore as cc
from reference.conv import (col2im_naive, conv2d_abs_bound, conv2d_backward_naive, conv2d_naive,
                       im2col_naive)


# ---------------------------------------------------------------- helpers
def layouts(a):
    """The same values in several memory layouts."""
    yield "contiguous", np.ascontiguousarray(a)
    yield "fortran", np.asfortranarray(a)
    t = np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
    yield "transposed", t
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1] + 1,), a.dtype)
    big[..., 1::2] = a
    yield "sliced", big[..., 1::2]
    flipped = np.ascontiguousarray(a[..., ::-1])
    yield "reversed", flipped[..., ::-1]


def assert_float32_close(y, ref, bound):
    """The sound float32 bound (docs/contributing.rst), y and ref of the same shape."""
    assert y.shape == ref.shape
    err = np.abs(y.astype(np.float64) - ref)
    assert np.all(err <= bound + 1e-30), f"max excess {np.max(err - bound)}"


def check_against_reference(x, w, b, stride, padding, dilation, groups):
    y = cc.conv2d(x, w, b, stride, padding, dilation, groups)
    sp = tuple(stride) if isinstance(stride, tuple) else (stride, stride)
    pp = tuple(padding) if isinstance(padding, tuple) else (padding, padding)
    dp = tuple(dilation) if isinstance(dilation, tuple) else (dilation, dilation)
    ref = conv2d_naive(x, w, b, sp, pp, dp, groups)
    assert y.dtype == x.dtype
    if x.dtype == np.float64:
        np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    else:
        terms = w.shape[1] * w.shape[2] * w.shape[3] + 1
        bound = terms * 2.0**-24 * (conv2d_abs_bound(x, w, sp, pp, dp, groups)
                                    + (0 if b is None else np.abs(b)[None, :, None, None]))
        assert_float32_close(y, ref, bound)


# ---------------------------------------------------------------- the notes
def test_notes_sobel_patch_gives_65_plus_bias():
    patch = np.array([[200, 150, 150], [100, 50, 100], [25, 25, 10]], dtype=np.float64)
    sobel = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float64)
    for bias in (0.0, 0.5, -3.0):
        y = cc.conv2d(patch[None, None], sobel[None, None], bias=np.array([bias]))
        assert y.shape == (1, 1, 1, 1)
        assert y.item() == 65 + bias


def test_notes_four_kernels_over_three_channels_hold_112_parameters(rng):
    # N * (k1 * k2 * 3 + 1) with k1 = k2 = 3, N = 4
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    y = cc.conv2d(rng.standard_normal((1, 3, 5, 5)), w, b)
    assert y.shape == (1, 4, 3, 3)           # one feature map per kernel
    assert w.size + b.size == (3 * 3 * 3 + 1) * 4 == 112


def test_padding_keeps_size_with_the_output_size_formula(rng):
    x = rng.standard_normal((1, 1, 7, 7))
    w = rng.standard_normal((1, 1, 3, 3))
    assert cc.conv2d(x, w, padding=1).shape == (1, 1, 7, 7)
    assert cc.conv2d(x, w, padding="same").shape == (1, 1, 7, 7)
    assert cc.conv2d(x, w, padding="valid").shape == (1, 1, 5, 5)
    assert cc.conv2d(x, w, stride=2).shape == (1, 1, 3, 3)  # floor((7-3)/2)+1


# ---------------------------------------------------------------- forward
GRID = [
    # N, C, H, W, K, KH, KW, stride, padding, dilation, groups
    (2, 3, 7, 9, 4, 3, 3, 1, 1, 1, 1),
    (1, 1, 5, 5, 1, 5, 5, 1, 0, 1, 1),
    (3, 4, 8, 6, 6, 2, 3, (2, 1), (1, 2), (1, 2), 2),
    (1, 4, 5, 5, 4, 1, 1, 1, 0, 1, 1),        # pointwise fast path
    (2, 4, 5, 7, 6, 1, 1, 2, 0, 1, 2),        # 1x1 but strided
    (2, 6, 9, 9, 6, 3, 3, 2, 1, 1, 6),        # depthwise
    (2, 6, 7, 7, 12, 3, 3, 1, 1, 1, 3),
    (1, 2, 11, 13, 3, 4, 2, 3, (0, 3), 2, 1),
    (2, 3, 1, 9, 2, 1, 3, 1, (0, 1), 1, 1),   # one-row images
    (1, 1, 3, 3, 2, 3, 3, 1, 0, 1, 1),        # output 1x1
    (2, 2, 6, 6, 3, 3, 3, 4, 2, 1, 1),        # stride larger than kernel
    (0, 3, 5, 5, 2, 3, 3, 1, 0, 1, 1),        # empty batch
    (1, 3, 6, 5, 130, 3, 3, 1, 1, 1, 1),      # > 128 outputs: BATCHED forward through BLAS
]


# Every strategy of the C core on the same grids: AUTO ("") takes the direct
# loops for small layers, so the im2col strategies are forced here as well.
STRATEGIES = ["", "batched", "tiles", "direct"]


@pytest.fixture(params=STRATEGIES, ids=lambda s: s or "auto")
def strategy(request, monkeypatch):
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", request.param)
    return request.param


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", GRID, ids=[str(c) for c in GRID])
def test_conv2d_matches_reference(case, dtype, rng, strategy):
    N, C, H, W, K, KH, KW, s, p, d, g = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // g, KH, KW)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    check_against_reference(x, w, b, s, p, d, g)
    check_against_reference(x, w, None, s, p, d, g)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv2d_any_layout_gives_identical_result(dtype, rng):
    x0 = rng.standard_normal((3, 4, 9, 8)).astype(dtype)
    w0 = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    ref = cc.conv2d(x0, w0, b, stride=(1, 2), padding=1, groups=2)
    for (lx, x), (lw, w) in itertools.product(layouts(x0), layouts(w0)):
        y = cc.conv2d(x, w, b, stride=(1, 2), padding=1, groups=2)
        assert np.array_equal(y, ref), (lx, lw)
        assert y.flags.c_contiguous


def test_conv2d_accepts_read_only_and_broadcast_inputs(rng):
    x = np.broadcast_to(rng.standard_normal((1, 1, 6, 6)), (2, 3, 6, 6))
    w = rng.standard_normal((2, 3, 3, 3))
    w.setflags(write=False)
    y = cc.conv2d(x, w)
    np.testing.assert_allclose(y, conv2d_naive(x, w), rtol=1e-12, atol=1e-12)


def test_conv2d_unbatched_input_matches_batched(rng):
    x = rng.standard_normal((3, 6, 7))
    w = rng.standard_normal((2, 3, 3, 3))
    y = cc.conv2d(x, w, padding=1)
    assert y.shape == (2, 6, 7)
    np.testing.assert_array_equal(y, cc.conv2d(x[None], w, padding=1)[0])
    gx, gw, gb = cc.conv2d_backward(np.ones_like(y), x, w, padding=1)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == (2,)


def test_conv2d_matches_scipy_correlate2d_summed_over_channels(rng):
    x = rng.standard_normal((1, 3, 10, 12))
    w = rng.standard_normal((2, 3, 4, 3))
    y = cc.conv2d(x, w)
    for k in range(2):
        ref = sum(signal.correlate2d(x[0, c], w[k, c], mode="valid") for c in range(3))
        np.testing.assert_allclose(y[0, k], ref, rtol=1e-12, atol=1e-12)
    # with zero padding: correlate2d(..., 'full') crops to padding 1 for a 3x3 kernel
    w3 = rng.standard_normal((1, 3, 3, 3))
    y = cc.conv2d(x, w3, padding=1)
    ref = sum(signal.correlate2d(x[0, c], w3[0, c], mode="same") for c in range(3))
    np.testing.assert_allclose(y[0, 0], ref, rtol=1e-12, atol=1e-12)


def test_conv2d_same_padding_with_even_kernel_matches_reference(rng):
    x = rng.standard_normal((2, 2, 6, 5))
    w = rng.standard_normal((3, 2, 4, 2))
    y = cc.conv2d(x, w, padding="same")
    assert y.shape == (2, 3, 6, 5)
    # PyTorch's rule: total padding d*(k-1), the extra one at the bottom/right
    xp = np.pad(x, ((0, 0), (0, 0), (1, 2), (0, 1)))
    np.testing.assert_allclose(y, conv2d_naive(xp, w), rtol=1e-12, atol=1e-12)
    gy = rng.standard_normal(y.shape)
    gx, gw, _ = cc.conv2d_backward(gy, x, w, padding="same")
    assert gx.shape == x.shape
    # adjoint: <conv(x), gy> = <x, gx> = <w, gw>
    np.testing.assert_allclose(np.vdot(cc.conv2d(x, w, padding="same"), gy),
                               np.vdot(x, gx), rtol=1e-12)
    np.testing.assert_allclose(np.vdot(cc.conv2d(x, w, padding="same"), gy),
                               np.vdot(w, gw), rtol=1e-12)


# ---------------------------------------------------------------- backward: the notes' duality
def test_grad_weight_is_cross_correlation_of_input_with_upstream_gradient(rng):
    x = rng.standard_normal((1, 1, 9, 8))
    w = rng.standard_normal((1, 1, 3, 4))
    dy = rng.standard_normal((1, 1, 7, 5))
    _, dw, db = cc.conv2d_backward(dy, x, w)
    np.testing.assert_allclose(dw[0, 0], signal.correlate2d(x[0, 0], dy[0, 0], mode="valid"),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, [dy.sum()], rtol=1e-12)


def test_grad_input_is_full_convolution_of_upstream_gradient_with_kernel(rng):
    x = rng.standard_normal((1, 1, 9, 8))
    w = rng.standard_normal((1, 1, 3, 4))
    dy = rng.standard_normal((1, 1, 7, 5))
    dx, _, _ = cc.conv2d_backward(dy, x, w)
    np.testing.assert_allclose(dx[0, 0], signal.convolve2d(dy[0, 0], w[0, 0], mode="full"),
                               rtol=1e-12, atol=1e-12)
    # ... which is a cross-correlation with the flipped kernel
    np.testing.assert_allclose(
        dx[0, 0], signal.correlate2d(dy[0, 0], w[0, 0, ::-1, ::-1], mode="full"),
        rtol=1e-12, atol=1e-12)


BWD_GRID = [
    (2, 3, 6, 7, 4, 3, 3, 1, 1, 1, 1),
    (2, 4, 7, 6, 6, 3, 2, (2, 1), (1, 0), (1, 2), 2),
    (1, 3, 5, 5, 3, 3, 3, 2, 2, 1, 3),
    (2, 4, 4, 5, 3, 1, 1, 1, 0, 1, 1),
    (1, 2, 9, 9, 2, 5, 5, 3, 2, 1, 1),
]


@pytest.mark.parametrize("case", BWD_GRID, ids=[str(c) for c in BWD_GRID])
def test_conv2d_backward_satisfies_adjoint_identities(case, rng, strategy):
    N, C, H, W, K, KH, KW, s, p, d, g = case
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((K, C // g, KH, KW))
    y = cc.conv2d(x, w, None, s, p, d, g)
    gy = rng.standard_normal(y.shape)
    gx, gw, gb = cc.conv2d_backward(gy, x, w, s, p, d, g)
    lhs = np.vdot(y, gy)
    assert abs(lhs - np.vdot(x, gx)) <= 1e-12 * max(1.0, abs(lhs)) * 10
    assert abs(lhs - np.vdot(w, gw)) <= 1e-12 * max(1.0, abs(lhs)) * 10
    np.testing.assert_allclose(gb, gy.sum(axis=(0, 2, 3)), rtol=1e-12)


@pytest.mark.parametrize("case", BWD_GRID[:3], ids=[str(c) for c in BWD_GRID[:3]])
def test_conv2d_backward_matches_central_differences(case, rng):
    N, C, H, W, K, KH, KW, s, p, d, g = case
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((K, C // g, KH, KW))
    b = rng.standard_normal(K)
    gy = rng.standard_normal(cc.conv2d(x, w, b, s, p, d, g).shape)

    def loss(x_, w_, b_):
        return float(np.vdot(conv2d_naive(x_, w_, b_, *[(v, v) if isinstance(v, int) else v
                                                        for v in (s, p, d)], g), gy))

    gx, gw, gb = cc.conv2d_backward(gy, x, w, s, p, d, g)
    eps = 1e-6
    for arr, grad in ((x, gx), (w, gw), (b, gb)):
        flat = arr.reshape(-1)
        for i in rng.choice(flat.size, size=min(6, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + eps
            up = loss(x, w, b)
            flat[i] = old - eps
            down = loss(x, w, b)
            flat[i] = old
            assert abs((up - down) / (2 * eps) - grad.reshape(-1)[i]) < 1e-6


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv2d_backward_matches_reference_grid(dtype, rng, strategy):
    for N, C, H, W, K, KH, KW, s, p, d, g in BWD_GRID + GRID[:6]:
        x = rng.standard_normal((N, C, H, W)).astype(dtype)
        w = rng.standard_normal((K, C // g, KH, KW)).astype(dtype)
        y = cc.conv2d(x, w, None, s, p, d, g)
        gy = rng.standard_normal(y.shape).astype(dtype)
        gx, gw, gb = cc.conv2d_backward(gy, x, w, s, p, d, g)
        # references built from im2col-free loops: gx and gw by linearity
        pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
        x64, w64, gy64 = x.astype(np.float64), w.astype(np.float64), gy.astype(np.float64)
        ref_gw = np.zeros_like(w64)
        for idx in np.ndindex(*w.shape):
            e = np.zeros_like(w64)
            e[idx] = 1.0
            ref_gw[idx] = np.vdot(conv2d_naive(x64, e, None, pair(s), pair(p), pair(d), g), gy64)
        tol = 1e-10 if dtype == np.float64 else 2e-4
        scale = max(1.0, np.abs(ref_gw).max())
        assert np.abs(gw - ref_gw).max() <= tol * scale
        np.testing.assert_allclose(gb, gy64.sum(axis=(0, 2, 3)), rtol=tol, atol=tol)
        assert gx.dtype == dtype and gw.dtype == dtype and gb.dtype == dtype


def test_conv2d_backward_empty_batch_gives_zero_weight_gradient(rng):
    x = np.zeros((0, 3, 5, 5))
    w = rng.standard_normal((2, 3, 3, 3))
    gx, gw, gb = cc.conv2d_backward(np.zeros((0, 2, 3, 3)), x, w)
    assert gx.shape == (0, 3, 5, 5)
    assert np.array_equal(gw, np.zeros_like(w)) and np.array_equal(gb, np.zeros(2))


# ---------------------------------------------------------------- determinism
@pytest.fixture
def restore_threads():
    n = cc.get_num_threads()
    yield
    cc.set_num_threads(n)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_identical_for_every_thread_count_and_repeat(dtype, rng, restore_threads):
    cases = [(8, 16, 20, 20, 32, 3, 3, 1, 1, 1, 1), (4, 8, 30, 30, 300, 3, 3, 1, 1, 1, 1),
             (2, 64, 50, 50, 16, 3, 3, 2, 1, 1, 1), (3, 6, 12, 12, 6, 3, 3, 1, 1, 1, 6),
             (4, 32, 16, 16, 8, 1, 1, 1, 0, 1, 1),
             (16, 1, 28, 28, 6, 5, 5, 1, 2, 1, 1)]   # a first layer: dW reduction split
    for N, C, H, W, K, KH, KW, s, p, d, g in cases:
        x = rng.standard_normal((N, C, H, W)).astype(dtype)
        w = rng.standard_normal((K, C // g, KH, KW)).astype(dtype)
        gy = rng.standard_normal(cc.conv2d(x, w, None, s, p, d, g).shape).astype(dtype)
        results = []
        for n in (1, 2, 3, 1, 2):
            cc.set_num_threads(n)
            y = cc.conv2d(x, w, None, s, p, d, g)
            results.append((y,) + cc.conv2d_backward(gy, x, w, s, p, d, g))
        for other in results[1:]:
            for a, b_ in zip(results[0], other):
                assert np.array_equal(a, b_)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("N, H, W", [(1, 1, 1), (4, 2, 3), (3, 9, 9)])
def test_batched_pointwise_columns_are_the_planes(N, H, W, groups, rng, monkeypatch):
    """BATCHED on a 1x1 layer too narrow for the product kernel (more than
    its 128 output channels) builds its columns by copying whole planes:
    forward and both gradients against float64 einsums, grouped or not."""
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "batched")
    C, K = 100, 200
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((K, C // groups, 1, 1)) / np.sqrt(C)).astype(np.float32)
    gy = rng.standard_normal((N, K, H, W)).astype(np.float32)
    x64, w64, gy64 = (a.astype(np.float64) for a in (x, w, gy))
    xg = x64.reshape(N, groups, C // groups, H, W)
    wg = w64[:, :, 0, 0].reshape(groups, K // groups, C // groups)
    gyg = gy64.reshape(N, groups, K // groups, H, W)
    y_ref = np.einsum("gkc,ngchw->ngkhw", wg, xg).reshape(N, K, H, W)
    gx_ref = np.einsum("gkc,ngkhw->ngchw", wg, gyg).reshape(N, C, H, W)
    gw_ref = np.einsum("ngkhw,ngchw->gkc", gyg, xg).reshape(K, C // groups, 1, 1)
    y = cc.conv2d(x, w, groups=groups)
    gx, gw, _ = cc.conv2d_backward(gy, x, w, groups=groups)
    np.testing.assert_allclose(y, y_ref, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(gx, gx_ref, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(gw, gw_ref, rtol=2e-4, atol=2e-4 * N * H * W)


@pytest.mark.parametrize("dtype, strategy", [(np.float32, ""), (np.float64, ""),
                                             (np.float32, "batched")])
@pytest.mark.parametrize("N, H, W", [(7, 1, 1), (6, 2, 3), (1, 5, 7), (3, 9, 9), (5, 46, 47)])
def test_wide_pointwise_layer_matches_einsum_for_every_thread_count(N, H, W, dtype, strategy,
                                                                    rng, restore_threads,
                                                                    monkeypatch):
    """1x1 layers of more weights than the product kernel takes run their
    products on the arrays in place (no columns) on maps of 64 positions or
    more, and through side-by-side columns on smaller ones: forward, each gradient
    alone and together, with and without bias, against float64 einsums, the
    same bits for 1 to 4 threads; 46x47 maps make more than one block of
    positions an image."""
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", strategy)
    C, K = 300, 260                       # 78,000 weights
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = (rng.standard_normal((K, C, 1, 1)) / np.sqrt(C)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    gy = rng.standard_normal((N, K, H, W)).astype(dtype)
    x64, w64, gy64 = (a.astype(np.float64) for a in (x, w, gy))
    y_ref = np.einsum("kc,nchw->nkhw", w64[:, :, 0, 0], x64) + b[:, None, None]
    gx_ref = np.einsum("kc,nkhw->nchw", w64[:, :, 0, 0], gy64)
    gw_ref = np.einsum("nkhw,nchw->kc", gy64, x64)[:, :, None, None]
    tol = dict(rtol=2e-4, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    first = None
    for n in (1, 2, 3, 4):
        cc.set_num_threads(n)
        y = cc.conv2d(x, w, b)
        y0 = cc.conv2d(x, w)
        gx, gw, gb = cc.conv2d_backward(gy, x, w)
        gx_only = cc.conv2d_backward(gy, x, w, output_mask=(True, False, False))[0]
        gw_only = cc.conv2d_backward(gy, x, w, output_mask=(False, True, False))[1]
        np.testing.assert_allclose(y, y_ref, **tol)
        np.testing.assert_allclose(y0, y_ref - b[:, None, None], **tol)
        np.testing.assert_allclose(gx, gx_ref, **tol)
        np.testing.assert_allclose(gw, gw_ref, rtol=tol["rtol"], atol=tol["atol"] * N * H * W)
        np.testing.assert_allclose(gb, gy64.sum(axis=(0, 2, 3)), rtol=1e-4, atol=1e-3)
        assert np.array_equal(gx_only, gx) and np.array_equal(gw_only, gw)
        got = (y, y0, gx, gw)
        if first is None:
            first = got
        for a, c in zip(first, got):
            assert np.array_equal(a, c)


def test_workspace_limit_chunks_the_batch_without_changing_results(rng):
    # Chunking changes GEMM tile shapes, so only float rounding may differ.
    x = rng.standard_normal((7, 3, 12, 12))
    w = rng.standard_normal((5, 3, 3, 3))
    gy = rng.standard_normal((7, 5, 12, 12))
    full = (cc.conv2d(x, w, padding=1),) + cc.conv2d_backward(gy, x, w, padding=1)
    ref = conv2d_naive(x, w, None, (1, 1), (1, 1), (1, 1))
    old = cc.get_workspace_limit()
    try:
        for limit in (1, 8 * 32 * 144 * 2, 8 * 32 * 144 * 3):   # 1, 2 and 3 images a chunk
            cc.set_workspace_limit(limit)
            got = (cc.conv2d(x, w, padding=1),) + cc.conv2d_backward(gy, x, w, padding=1)
            for a, b_ in zip(full, got):
                np.testing.assert_allclose(a, b_, rtol=1e-13, atol=1e-13)
            np.testing.assert_allclose(got[0], ref, rtol=1e-12, atol=1e-12)
    finally:
        cc.set_workspace_limit(old)


def test_workspace_is_kept_per_thread_and_a_lower_limit_gives_it_up(rng):
    from convcore.backends import cpu
    x = rng.standard_normal((6, 8, 16, 16)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    ref = conv2d_naive(x, w, None, (1, 1), (1, 1), (1, 1))
    old = cc.get_workspace_limit()
    try:
        cc.set_workspace_limit(old)
        cc.conv2d(x, w, padding=1)
        big = cpu._reuse.buf
        y = cc.conv2d(x, w, padding=1)              # the same buffer, reused
        assert cpu._reuse.buf is big
        limit = big.nbytes // 3
        cc.set_workspace_limit(limit)
        y2 = cc.conv2d(x, w, padding=1)
        assert cpu._reuse.buf.nbytes <= limit
        seen = []
        th = threading.Thread(target=lambda: seen.append((cc.conv2d(x, w, padding=1),
                                                          getattr(cpu._reuse, "buf", None))))
        th.start()
        th.join()
        assert seen[0][1] is not cpu._reuse.buf    # each thread has its own
        bound = 10 * 8 * 2.0 ** -24 * conv2d_abs_bound(x, w, (1, 1), (1, 1), (1, 1), 1)
        for got in (y, y2, seen[0][0]):
            assert_float32_close(got, ref, bound)
    finally:
        cc.set_workspace_limit(old)


def test_remembered_geometries_never_skip_a_check(rng):
    # the setup of a call is remembered by shapes, dtypes and plain
    # hyper-parameters; a value that only looks equal must still be checked
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = cc.conv2d(x, w, None, 1, 1, 1, 1)
    assert_float32_close(y, conv2d_naive(x, w, None, (1, 1), (1, 1), (1, 1)),
                         28 * 2.0 ** -24 * conv2d_abs_bound(x, w, (1, 1), (1, 1), (1, 1), 1))
    np.testing.assert_array_equal(cc.conv2d(x, w, None, 1, 1, 1, 1), y)
    for bad in (dict(stride=1.0), dict(stride=True), dict(padding=1.0), dict(groups=1.0)):
        with pytest.raises((TypeError, ValueError)):
            cc.conv2d(x, w, **{"stride": 1, "padding": 1, **bad})
    with pytest.raises(TypeError):
        cc.conv2d(x, w.astype(np.float64), None, 1, 1)
    np.testing.assert_array_equal(cc.conv2d(x[0], w, None, 1, 1), y[0])   # unbatched
    np.testing.assert_array_equal(cc.conv2d(x[0], w, None, 1, 1), y[0])


# ---------------------------------------------------------------- im2col / col2im
def test_im2col_matches_naive_windows(rng):
    x = rng.standard_normal((2, 3, 7, 6))
    cols = cc.im2col(x, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    OH, OW = (7 + 2 - 3) // 2 + 1, (6 - 2 - 1) // 1 + 1
    assert cols.shape == (2, 3 * 3 * 2, OH * OW)
    for n, c, a, b, i, j in itertools.product(range(2), range(3), range(3), range(2),
                                              range(OH), range(OW)):
        assert cols[n, (c * 3 + a) * 2 + b, i * OW + j] == xp[n, c, i * 2 + a, j + 2 * b]


def test_col2im_is_the_adjoint_of_im2col(rng):
    x = rng.standard_normal((2, 3, 8, 7))
    kw = dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), dilation=(2, 1))
    cols = cc.im2col(x, **kw)
    g = rng.standard_normal(cols.shape)
    back = cc.col2im(g, (8, 7), **kw)
    assert back.shape == x.shape
    np.testing.assert_allclose(np.vdot(cols, g), np.vdot(x, back), rtol=1e-12)


def test_im2col_col2im_match_torch_unfold_fold(rng):
    torch = pytest.importorskip("torch", reason="torch not installed: parity skipped")
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
        kw = dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), dilation=(2, 1))
        cols = cc.im2col(x, **kw)
        ref = torch.nn.functional.unfold(torch.from_numpy(x), **kw).numpy()
        assert np.array_equal(cols, ref)
        g = rng.standard_normal(cols.shape).astype(dtype)
        back = cc.col2im(g, (9, 8), **kw)
        ref = torch.nn.functional.fold(torch.from_numpy(g), (9, 8), **kw).numpy()
        np.testing.assert_allclose(back, ref, rtol=1e-6 if dtype == np.float32 else 1e-13,
                                   atol=1e-6 if dtype == np.float32 else 1e-13)


# ---------------------------------------------------------------- torch parity
def random_configs(rng, count):
    out = []
    while len(out) < count:
        g = int(rng.choice([1, 1, 2, 3]))
        C, K = g * int(rng.integers(1, 4)), g * int(rng.integers(1, 4))
        KH, KW = (int(v) for v in rng.integers(1, 5, size=2))
        s = tuple(int(v) for v in rng.integers(1, 4, size=2))
        d = tuple(int(v) for v in rng.integers(1, 3, size=2))
        p = tuple(int(v) for v in rng.integers(0, 3, size=2))
        H, W = (int(v) for v in rng.integers(1, 12, size=2))
        if H + 2 * p[0] < d[0] * (KH - 1) + 1 or W + 2 * p[1] < d[1] * (KW - 1) + 1:
            continue
        out.append((int(rng.integers(0, 4)), C, H, W, K, KH, KW, s, p, d, g))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_and_gradients_match_torch(dtype):
    torch = pytest.importorskip("torch", reason="torch not installed: parity skipped")
    rng = np.random.default_rng(7)
    for N, C, H, W, K, KH, KW, s, p, d, g in random_configs(rng, 60):
        x = rng.standard_normal((N, C, H, W)).astype(dtype)
        w = rng.standard_normal((K, C // g, KH, KW)).astype(dtype)
        b = rng.standard_normal(K).astype(dtype)
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        ty = torch.nn.functional.conv2d(tx, tw, tb, s, p, d, g)
        y = cc.conv2d(x, w, b, s, p, d, g)
        gy = rng.standard_normal(y.shape).astype(dtype)
        ty.backward(torch.from_numpy(gy))
        gx, gw, gb = cc.conv2d_backward(gy, x, w, s, p, d, g)
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
        np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
        np.testing.assert_allclose(gx, tx.grad.numpy(), **tol)
        np.testing.assert_allclose(gw, tw.grad.numpy(), **tol)
        np.testing.assert_allclose(gb, tb.grad.numpy(), **tol)


def test_conv2d_matches_torch_on_network_sized_layers():
    torch = pytest.importorskip("torch", reason="torch not installed: parity skipped")
    rng = np.random.default_rng(3)
    for N, C, H, K, k, s, p in [(2, 1, 28, 6, 5, 1, 2), (24, 1, 28, 6, 5, 1, 2), (2, 3, 67, 16, 11, 4, 0),
                                (1, 64, 20, 64, 3, 1, 1), (2, 128, 14, 64, 1, 1, 0)]:
        x = rng.standard_normal((N, C, H, H)).astype(np.float32)
        w = (rng.standard_normal((K, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
        tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        ty = torch.nn.functional.conv2d(tx, tw, None, s, p)
        y = cc.conv2d(x, w, None, s, p)
        gy = rng.standard_normal(y.shape).astype(np.float32)
        ty.backward(torch.from_numpy(gy))
        gx, gw, _ = cc.conv2d_backward(gy, x, w, s, p)
        for a, t in ((y, ty.detach()), (gx, tx.grad), (gw, tw.grad)):
            t = t.numpy()
            assert np.linalg.norm(a - t) <= 1e-5 * np.linalg.norm(t)


def test_scipy_blas_thread_count_is_restored_after_calls(rng):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import scipy.linalg  # noqa: F401

    def scipy_blas_threads():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "blas" and "scipy" in i["filepath"]
                and "numpy" not in i["filepath"]]

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = scipy_blas_threads()
        x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
        w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
        y = cc.conv2d(x, w)
        cc.conv2d_backward(np.ones_like(y), x, w)
        assert scipy_blas_threads() == before


@pytest.mark.parametrize("mask", [(False, True, True), (True, False, False), (False, False, True),
                                  (True, True, False), (False, False, False)])
def test_conv2d_backward_output_mask_skips_only_the_masked_gradients(mask, rng):
    x = rng.standard_normal((3, 4, 9, 9))
    w = rng.standard_normal((6, 2, 3, 3))
    gy = rng.standard_normal((3, 6, 5, 5))
    full = cc.conv2d_backward(gy, x, w, stride=2, padding=1, groups=2)
    got = cc.conv2d_backward(gy, x, w, stride=2, padding=1, groups=2, output_mask=mask)
    for g, f, wanted in zip(got, full, mask):
        if wanted:
            assert np.array_equal(g, f)
        else:
            assert g is None


def test_conv2d_backward_rejects_a_bad_output_mask(rng):
    x = rng.standard_normal((1, 1, 4, 4))
    w = rng.standard_normal((1, 1, 3, 3))
    with pytest.raises(TypeError, match="output_mask"):
        cc.conv2d_backward(np.ones((1, 1, 2, 2)), x, w, output_mask=(True, True))


def test_direct_path_in_chunks_and_threads_matches_the_reference(rng, monkeypatch,
                                                                 restore_threads):
    """The direct loops for small layers (forward and dW), with the batch cut
    into chunks by a small workspace, against float64 loops; bit-identical for
    1 and 2 threads."""
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "direct")
    x = rng.standard_normal((9, 6, 14, 13)).astype(np.float32)
    w = rng.standard_normal((20, 6, 5, 3)).astype(np.float32)     # 2 channel blocks
    b = rng.standard_normal(20).astype(np.float32)
    opts = dict(stride=(1, 2), padding=(2, 1), dilation=(1, 2))
    y64 = conv2d_naive(x, w, b, (1, 2), (2, 1), (1, 2), 1)
    gy = rng.standard_normal(y64.shape).astype(np.float32)
    limit = cc.get_workspace_limit()
    out = []
    try:
        cc.set_workspace_limit(20_000)
        for t in (1, 2):
            cc.set_num_threads(t)
            y = cc.conv2d(x, w, b, **opts)
            out.append((y,) + cc.conv2d_backward(gy, x, w, **opts))
    finally:
        cc.set_workspace_limit(limit)
    for a, c in zip(*out):
        np.testing.assert_array_equal(a, c)
    y, gx, gw, gb = out[0]
    assert_float32_close(y, y64, 25 * 2.0 ** -24 * (conv2d_abs_bound(x, w, (1, 2), (2, 1), (1, 2), 1)
                                                    + np.abs(b)[:, None, None]) * 1.01 + 1e-6)
    cols = im2col_naive(x.astype(np.float64), (5, 3), (1, 2), (2, 1), (1, 2))
    ref_gw = np.einsum("nkl,nrl->kr", gy.reshape(9, 20, -1).astype(np.float64),
                       cols).reshape(w.shape)
    np.testing.assert_allclose(gw, ref_gw, rtol=0, atol=2e-5 * np.abs(ref_gw).max())


# ---------------------------------------------------------------- thin dX
# Layers with at most 32 output channels form dX's columns a few images at a
# time, in per-thread buffers carved from the workspace, and col2im two planes
# at once, in whole-vector pieces of a row; the last piece of a row that is not
# a multiple of the vector width runs over into the next row.
THIN_DX = [  # N, C, H, W, K, kernel, stride, padding, dilation
    (5, 5, 14, 29, 16, (5, 5), (1, 1), (0, 2), (1, 1)),    # odd C: a plane without a pair
    (4, 7, 31, 17, 3, (4, 2), (1, 1), (0, 2), (2, 2)),     # dilated; outputs wider than x
    (3, 3, 20, 40, 32, (3, 6), (2, 1), (1, 0), (1, 2)),    # row stride 2
    (6, 6, 14, 14, 16, (5, 5), (1, 1), (0, 0), (1, 1)),    # LeNet's second layer
    (3, 1, 9, 40, 32, (1, 1), (2, 2), (0, 0), (1, 1)),     # buffers too big: chunked path
]


@pytest.mark.usefixtures("wide_vectors")   # (the thin kernel: AUTO with AVX-512 only)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", THIN_DX)
def test_thin_grad_input_matches_reference_for_any_workspace_and_threads(case, dtype, rng,
                                                                       restore_threads):
    N, C, H, W, K, kernel, s, p, d = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C) + kernel).astype(dtype)
    gy = rng.standard_normal((N, K) + cc.conv2d(x[:1], w, None, s, p, d).shape[2:]).astype(dtype)
    limit = cc.get_workspace_limit()
    out = []
    try:
        for lim, t in itertools.product((limit, 1, 200_000), (1, 2)):
            cc.set_workspace_limit(lim)
            cc.set_num_threads(t)
            out.append(cc.conv2d_backward(gy, x, w, s, p, d, output_mask=(True, False, False))[0])
    finally:
        cc.set_workspace_limit(limit)
    for other in out[1:]:
        np.testing.assert_array_equal(out[0], other)
    ref = conv2d_backward_naive(gy, x, w, s, p, d)[0]
    if dtype == np.float64:
        np.testing.assert_allclose(out[0], ref, rtol=1e-12, atol=1e-12)
    else:
        terms = K * kernel[0] * kernel[1]
        bound = conv2d_backward_naive(np.abs(gy), x, np.abs(w), s, p, d)[0]
        assert_float32_close(out[0], ref, terms * 2.0**-24 * bound)


@pytest.mark.parametrize("case", THIN_DX[:3])
def test_col2im_of_wide_rows_matches_naive_scatter(case, rng):
    N, C, H, W, K, kernel, s, p, d = case
    cols = cc.im2col(rng.standard_normal((N, C, H, W)), kernel, s, p, d)
    g = rng.standard_normal(cols.shape)
    np.testing.assert_allclose(cc.col2im(g, (H, W), kernel, s, p, d),
                               col2im_naive(g, (H, W), kernel, s, p, d), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("dilation", [(1, 1), (1, 2), (2, 1)])
def test_direct_grad_weight_by_channel_matches_reference(kernel, dilation, rng, monkeypatch,
                                                         restore_threads):
    """The direct dW of square 3x3 and 5x5 kernels takes whole input channels
    (every tap's sum in a register); unit and wider width dilations run
    different code."""
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "direct")
    x = rng.standard_normal((5, 4, 15, 17)).astype(np.float32)
    w = rng.standard_normal((20, 4, kernel, kernel)).astype(np.float32)   # 2 channel blocks
    s, p = (1, 2), (1, 2)
    gy = rng.standard_normal(cc.conv2d(x, w, None, s, p, dilation).shape).astype(np.float32)
    got = []
    for t in (1, 2):
        cc.set_num_threads(t)
        got.append(cc.conv2d_backward(gy, x, w, s, p, dilation, output_mask=(False, True, False))[1])
    np.testing.assert_array_equal(got[0], got[1])
    cols = im2col_naive(x.astype(np.float64), (kernel, kernel), s, p, dilation)
    gy64 = gy.reshape(5, 20, -1).astype(np.float64)
    ref = np.einsum("nkl,nrl->kr", gy64, cols).reshape(w.shape)
    terms = 5 * gy.shape[2] * gy.shape[3]
    bound = terms * 2.0**-24 * np.einsum("nkl,nrl->kr", np.abs(gy64), np.abs(cols)).reshape(w.shape)
    assert_float32_close(got[0], ref, bound * 1.01)
