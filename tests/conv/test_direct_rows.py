"""DIRECT's forward pass along the output rows (few output channels, wide
rows: LeNet's first layer), against PyTorch and the loops of
tests/reference/conv.py, and where AUTO takes it."""
import numpy as np
import pytest

import convcore as cc
from convcore._core import _conv
from reference.conv import conv2d_backward_naive, conv2d_naive

torch = pytest.importorskip("torch")

# (AUTO runs these kernels on CPUs with AVX-512 only: see test_wide_vectors.py)
pytestmark = pytest.mark.usefixtures("wide_vectors")

# (N, C, H, W, K, KH, KW, padding, dilation): every one runs the row kernel
CASES = [
    (3, 1, 28, 28, 6, 5, 5, (2, 2), (1, 1)),   # LeNet-5's first layer
    (1, 1, 28, 28, 6, 5, 5, (2, 2), (1, 1)),   # one image: the channels split
    (2, 3, 7, 30, 5, 3, 3, (1, 1), (1, 1)),    # 7 rows (a block of 4, one of 3)
    (2, 2, 6, 41, 4, 3, 3, (1, 1), (1, 1)),    # 41 columns: a block of 32, one of 9
    (2, 4, 9, 33, 3, 3, 5, (0, 2), (1, 1)),    # rectangular kernel, 29 columns
    (2, 1, 12, 36, 7, 3, 3, (2, 2), (2, 2)),   # dilation
    (5, 2, 10, 26, 15, 3, 3, (1, 0), (1, 1)),  # 15 output channels, 24 columns
    (1, 3, 5, 64, 2, 5, 5, (2, 2), (1, 1)),    # two full column blocks, 5 rows
]


def _geom(N, C, H, W, K, KH, KW, pad, dil, stride=(1, 1)):
    OH = (H + 2 * pad[0] - dil[0] * (KH - 1) - 1) // stride[0] + 1
    OW = (W + 2 * pad[1] - dil[1] * (KW - 1) - 1) // stride[1] + 1
    return (N, C, H, W, K, KH, KW, stride[0], stride[1], pad[0], pad[1], dil[0], dil[1], OH, OW, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:7])))
def test_rows_kernel_matches_pytorch_and_the_loops(case, dtype, rng):
    N, C, H, W, K, KH, KW, pad, dil = case
    assert _conv.plan(_geom(*case), dtype) == "direct"
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, KH, KW)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    y = cc.conv2d(x, w, b, padding=pad, dilation=dil)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x.astype(np.float64)),
                                     torch.from_numpy(w.astype(np.float64)),
                                     torch.from_numpy(b.astype(np.float64)),
                                     padding=pad, dilation=dil).numpy()
    loops = conv2d_naive(x, w, b, (1, 1), pad, dil)
    assert y.dtype == dtype and y.shape == ref.shape
    tol = 1e-13 if dtype == np.float64 else 3e-6
    for r in (ref, loops):
        err = np.abs(y - r).max() / np.abs(r).max()
        assert err < tol, f"max relative error {err:.3g}"


def test_rows_kernel_takes_strided_and_unbatched_input(rng):
    x = rng.standard_normal((2, 1, 28, 56)).astype(np.float32)[:, :, :, ::2]
    w = rng.standard_normal((6, 1, 5, 5)).astype(np.float32)
    y = cc.conv2d(x, w, padding=2)
    np.testing.assert_allclose(y, conv2d_naive(x, w, None, (1, 1), (2, 2)), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(cc.conv2d(x[1], w, padding=2), y[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_kernel_inf_and_nan_follow_the_reference(dtype, rng):
    # an Inf/NaN weight over the zero padding gives NaN there, as the
    # definition (and im2col) do; Inf/NaN inputs spread as in the loops
    x = rng.standard_normal((2, 1, 28, 28)).astype(dtype)
    w = rng.standard_normal((6, 1, 5, 5)).astype(dtype)
    w[1, 0, 0, 0] = np.inf
    w[4, 0, 4, 2] = np.nan
    x[1, 0, 10, 3] = np.inf
    x[0, 0, 27, 27] = np.nan
    y = cc.conv2d(x, w, padding=2)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = conv2d_naive(x, w, None, (1, 1), (2, 2))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(y[fin], ref[fin], rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-5 if dtype == np.float32 else 1e-12)


def test_where_auto_takes_the_row_kernel():
    lenet1 = _geom(64, 1, 28, 28, 6, 5, 5, (2, 2), (1, 1))
    assert _conv.plan(lenet1, np.float32) == "direct"
    # dW by plane sums, three output channels at a time, for 5x5 kernels at
    # any batch; 3x3 ones only once BATCHED's columns outgrow the cache
    assert _conv.plan(lenet1, np.float32, backward=True) == "direct"
    assert _conv.plan(_geom(4, 1, 28, 28, 6, 5, 5, (2, 2), (1, 1)), np.float32,
                      backward=True) == "direct"
    assert _conv.plan(_geom(16, 3, 32, 32, 8, 3, 3, (1, 1), (1, 1)), np.float32,
                      backward=True) == "batched"
    # 16 output channels: BATCHED (the rows kernel would leave them to BLAS)
    assert _conv.plan(_geom(64, 1, 28, 28, 16, 5, 5, (2, 2), (1, 1)), np.float32) == "batched"
    # narrow rows: the 16-channel kernel (LeNet's second layer) or BATCHED
    assert _conv.plan(_geom(64, 6, 14, 14, 16, 5, 5, (0, 0), (1, 1)), np.float32) == "direct"
    assert _conv.plan(_geom(64, 3, 10, 10, 6, 3, 3, (1, 1), (1, 1)), np.float32) == "batched"
    # stride 2: not along rows
    assert _conv.plan(_geom(8, 1, 56, 56, 6, 5, 5, (2, 2), (1, 1), (2, 2)),
                      np.float32) == "batched"
    # a VGG first layer on 32x32: its 27-value columns are cheap, BATCHED
    # forward (the 16-channel kernel was 2x slower); the backward pass as before
    vgg1 = _geom(16, 3, 32, 32, 64, 3, 3, (1, 1), (1, 1))
    assert _conv.plan(vgg1, np.float32) == "batched"
    assert _conv.plan(vgg1, np.float32, backward=True) == "direct"


def _torch_grads(x, w, dy, pad, dil):
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, padding=pad, dilation=dil)
    yt.backward(torch.tensor(dy, dtype=torch.float64))
    return xt.grad.numpy(), wt.grad.numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:7])))
def test_rows_layers_weight_gradient_by_plane_sums(case, dtype, rng, monkeypatch):
    # DIRECT asked for by name: dW by the per-plane sums (dX through BATCHED)
    N, C, H, W, K, KH, KW, pad, dil = case
    N += 9                                   # more than one task of 8 images
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "direct")
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, KH, KW)).astype(dtype)
    y = cc.conv2d(x, w, padding=pad, dilation=dil)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = cc.conv2d_backward(dy, x, w, padding=pad, dilation=dil)
    rdx, rdw = _torch_grads(x, w, dy, pad, dil)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for got, ref in ((dw, rdw), (dx, rdx), (db, dy.astype(np.float64).sum(axis=(0, 2, 3)))):
        assert got.dtype == dtype
        err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
        assert err < tol, f"relative error {err:.3g}"


def test_plane_sums_are_taken_where_the_columns_outgrow_the_cache_and_do_not_depend_on_threads(rng):
    g256 = _geom(256, 1, 28, 28, 6, 5, 5, (2, 2), (1, 1))
    assert _conv.plan(g256, np.float32, backward=True) == "direct"
    x = rng.standard_normal((256, 1, 28, 28)).astype(np.float32)
    w = rng.standard_normal((6, 1, 5, 5)).astype(np.float32)
    dy = rng.standard_normal((256, 6, 28, 28)).astype(np.float32)
    before = cc.get_num_threads()
    try:
        got = []
        for t in (1, 2, 3):
            cc.set_num_threads(t)
            got.append(cc.conv2d_backward(dy, x, w, padding=2, output_mask=(False, True, True))[1])
    finally:
        cc.set_num_threads(before)
    assert all(np.array_equal(got[0], g) for g in got[1:])
    _, rdw = _torch_grads(x, w, dy, (2, 2), (1, 1))
    assert np.linalg.norm(got[0] - rdw) / np.linalg.norm(rdw) < 2e-5


@pytest.mark.parametrize("K, H", [(6, 28), (6, 14), (16, 14)])   # plane sums, direct loops
@pytest.mark.parametrize("where", ["x", "dy"])
def test_direct_weight_gradient_leaves_inf_and_nan_to_the_exact_sums(where, K, H, rng,
                                                                     monkeypatch):
    # the zeros of the padding meet an Inf or NaN in dy as in the definition
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "direct")
    x = rng.standard_normal((10, 1, H, H))
    w = rng.standard_normal((K, 1, 5, 5))
    dy = rng.standard_normal((10, K, H, H))
    (x if where == "x" else dy)[3, 0, H - 1, H - 1] = np.inf
    (x if where == "x" else dy)[7, 0, 0, 5] = np.nan
    dw = cc.conv2d_backward(dy, x, w, padding=2, output_mask=(False, True, False))[1]
    with np.errstate(invalid="ignore", over="ignore"):
        ref = conv2d_backward_naive(dy, x, w, (1, 1), (2, 2))[1]
    np.testing.assert_array_equal(np.isnan(dw), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(dw), np.isinf(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(dw[fin], ref[fin], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES + [(2, 1, 27, 29, 5, 5, 5, (2, 2), (1, 1))],
                         ids=lambda c: "x".join(map(str, c[:7])))
def test_conv_relu_pool_in_one_pass_gives_the_three_calls_bits(case, dtype, rng):
    from convcore._ops.conv import _conv2d_relu_maxpool2
    N, C, H, W, K, KH, KW, pad, dil = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    x[0, 0, 3, :5] = [np.nan, -0.0, np.inf, -np.inf, 0.0]
    w = rng.standard_normal((K, C, KH, KW)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    for bias in (b, None):
        y = cc.conv2d(x, w, bias, padding=pad, dilation=dil)
        with np.errstate(invalid="ignore"):
            ref = cc.max_pool2d(np.maximum(y, 0), 2)          # (-0 -> +0 as ReLU)
            ref = np.where(ref == 0, np.zeros((), dtype), ref)
            fused = _conv2d_relu_maxpool2(x, w, bias, 1, pad, dil)
        assert fused is not None and fused.dtype == dtype and fused.shape == ref.shape
        np.testing.assert_array_equal(fused.view(np.uint8), ref.view(np.uint8))
        assert np.array_equal(_conv2d_relu_maxpool2(x[-1], w, bias, 1, pad, dil), fused[-1],
                              equal_nan=True)


def test_conv_relu_pool_in_one_pass_only_where_the_row_kernel_runs(rng, monkeypatch):
    from convcore._core import _conv as core
    from convcore._ops.conv import _conv2d_relu_maxpool2
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    w6 = rng.standard_normal((6, 1, 5, 5)).astype(np.float32)
    assert _conv2d_relu_maxpool2(x, w6, None, 1, 2) is not None
    # 16 output channels, stride 2, narrow rows: not the row kernel
    assert _conv2d_relu_maxpool2(x, rng.standard_normal((16, 1, 5, 5)).astype(np.float32),
                                 None, 1, 2) is None
    assert _conv2d_relu_maxpool2(x, w6, None, 2, 2) is None
    assert _conv2d_relu_maxpool2(x[:, :, :, :20], w6, None, 1, 2) is None
    # another strategy asked for: the three calls run it, so no one pass
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "batched")
    assert _conv2d_relu_maxpool2(x, w6, None, 1, 2) is None
    with pytest.raises(RuntimeError, match="rejected"):   # the core refuses a geometry it lacks
        core.conv2d_relu_pool2_forward(x, np.zeros((16, 1, 5, 5), np.float32),
                                       np.empty(0, np.float32), False,
                                       np.empty((2, 16, 14, 14), np.float32),
                                       _geom(2, 1, 28, 28, 16, 5, 5, (2, 2), (1, 1)), 1)
