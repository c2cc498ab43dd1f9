"""AUTO's choice between the 16-value vector kernels and the GEMM paths.

The direct and product kernels, the packed GEMM and the fused convolution +
ReLU + pooling keep 16-value vectors in registers; without AVX-512 they
have none to live in and ran 5-20x slower than the GEMM paths, so AUTO
takes them only where the CPU has AVX-512 (`_conv.wide_vectors`).  Both
answers are forced here on layers where the choice matters and checked
against the independent loops of tests/reference/conv.py, whatever this
machine's CPU is.
"""
import numpy as np
import pytest

import convcore as cc
from convcore._core import _conv
from reference.conv import conv2d_backward_naive, conv2d_naive


def _cpu_flags():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


@pytest.fixture
def wide(set_wide_vectors):
    return set_wide_vectors


def test_the_answer_follows_the_cpu():
    flags = _cpu_flags()
    import platform
    if flags is None or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86-64 Linux only")
    assert _conv.wide_vectors() == ("avx512f" in flags)


def test_forcing_changes_the_answer_and_minus_one_restores_it(wide):
    own = _conv.wide_vectors()
    wide(0)
    assert _conv.wide_vectors() is False
    wide(1)
    assert _conv.wide_vectors() is True
    wide(-1)
    assert _conv.wide_vectors() is own


# (N, C, H, W, K, kernel, stride, padding): layers whose AUTO plan runs the
# vector kernels where they are allowed
CASES = [
    (8, 6, 14, 14, 16, 5, 1, 0),     # LeNet-5's second layer: DIRECT forward
    (8, 16, 8, 8, 16, 3, 1, 1),      # few channels: WINOGRAD through the product kernel
    (4, 8, 10, 10, 24, 1, 1, 0),     # small pointwise: the product kernel
    (6, 3, 9, 11, 12, 3, 1, 1),      # few weights: BATCHED through the product kernel
]


def _geom(N, C, H, W, K, k, s, p):
    OH, OW = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    return (N, C, H, W, K, k, k, s, s, p, p, 1, 1, OH, OW, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_both_answers_match_the_loops(wide, case, dtype):
    N, C, H, W, K, k, s, p = case
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = (rng.standard_normal((K, C, k, k)) / np.sqrt(C * k * k)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    y_ref = conv2d_naive(x64, w64, b64, stride=(s, s), padding=(p, p))
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    dx_ref, dw_ref, db_ref = conv2d_backward_naive(dy.astype(np.float64), x64, w64,
                                                   stride=(s, s), padding=(p, p))
    tol = 1e-11 if dtype == np.float64 else 3e-5
    plans = {}
    for mode in (1, 0):
        wide(mode)
        g = _geom(*case)
        plans[mode] = (_conv.plan(g, dtype), _conv.plan(g, dtype, backward=True))
        y = cc.conv2d(x, w, b, stride=(s, s), padding=(p, p))
        dx, dw, db = cc.conv2d_backward(dy, x, w, stride=(s, s), padding=(p, p))
        for got, ref in ((y, y_ref), (dx, dx_ref), (dw, dw_ref), (db, db_ref)):
            assert got.dtype == dtype
            err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
            assert err < tol, (mode, err)
    # without the wide vectors AUTO names DIRECT for forward passes only, and
    # only where the CPU has the AVX2 kernels
    assert "direct" not in plans[0][1]
    if not _conv.avx2_fma():
        assert "direct" not in plans[0][0]


def test_direct_without_the_wide_vectors_is_forward_only_and_needs_avx2(wide):
    g = _geom(64, 6, 14, 14, 16, 5, 1, 0)        # LeNet-5's second layer
    rows = _geom(64, 1, 28, 28, 6, 5, 1, 2)      # its first: the rows kernel
    wide(1)
    assert _conv.plan(g, np.float32).startswith("direct")
    assert _conv.plan(g, np.float32, backward=True).startswith("direct")
    assert _conv.plan(rows, np.float32).startswith("direct")
    wide(0)
    assert _conv.plan(g, np.float32).startswith("direct") == _conv.avx2_fma()
    assert not _conv.plan(g, np.float32, backward=True).startswith("direct")
    assert not _conv.plan(g, np.float64).startswith("direct")
    assert _conv.plan(rows, np.float32).startswith("direct") == _conv.avx2_fma()
    assert not _conv.plan(rows, np.float32, backward=True).startswith("direct")


def test_named_direct_still_runs_without_them(wide, monkeypatch):
    wide(0)
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "direct")
    case = (4, 6, 14, 14, 16, 5, 1, 0)
    N, C, H, W, K, k, s, p = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((K, C, k, k))
    b = rng.standard_normal(K)
    assert _conv.plan(_geom(*case), np.float64, strategy="direct").startswith("direct")
    np.testing.assert_allclose(cc.conv2d(x, w, b), conv2d_naive(x, w, b), rtol=1e-11, atol=1e-11)


def test_fused_relu_pool_only_with_the_vector_kernels(wide):
    from convcore._geometry import ConvGeom
    g = ConvGeom(*_geom(8, 1, 28, 28, 6, 5, 1, 2))
    wide(1)
    assert _conv.relu_pool2_ok(g)
    wide(0)
    assert _conv.relu_pool2_ok(g) == _conv.avx2_fma()


# The product kernel (few weights) and DIRECT's forward channel kernel run in
# 16-value vectors with AVX-512 and in 32-byte ones with AVX2 + FMA only
# (pw_block8, direct_block8); both sum in the same order with fused
# multiply-adds: the same bits.
PRODUCT_CASES = [  # (..., strategy that reaches the product kernel)
    ((6, 3, 9, 11, 12, 3, 1, 1), "batched"),    # forward: columns built per block
    ((5, 16, 8, 8, 16, 3, 1, 1), "winograd"),   # each transformed point's product
    ((4, 8, 10, 10, 24, 1, 1, 0), "batched"),   # pointwise
    ((3, 40, 7, 9, 20, 3, 1, 1), "batched"),    # thin dX (20 output channels)
    # the rows kernel (depthwise_fwd_blocks in 16-value or 32-byte vectors)
    ((6, 1, 28, 28, 6, 5, 1, 2), "direct"),     # LeNet-5's first layer
    ((2, 3, 19, 45, 5, 3, 1, 1), "direct"),     # 45 columns: a part block last
    # DIRECT's forward channel kernel (direct_block8 in float32)
    ((8, 6, 14, 14, 16, 5, 1, 0), "direct"),    # LeNet-5's second layer
    ((3, 5, 9, 11, 20, 3, 2, 1), "direct"),     # a part block of 4 channels, stride 2
    # col2im along the rows (unit width stride) in 16-value or 32-byte
    # pieces (col2im_s1_impl.h), through the dX of each GEMM path
    ((2, 5, 9, 40, 4, 7, 1, 3), "tiles"),       # 5 pieces a row, a part one last
    ((3, 2, 11, 13, 3, 3, 1, 2), "batched"),    # padding wider than a tap reaches
    ((2, 3, 12, 17, 5, 5, 1, 1), "tiles"),      # 17 columns: a piece and one value
    ((4, 1, 28, 28, 6, 5, 1, 2), "batched"),    # LeNet-5's first layer
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case, strategy", PRODUCT_CASES,
                         ids=lambda c: "x".join(map(str, c)) if isinstance(c, tuple) else c)
def test_kernels_give_the_same_bits_in_either_vector_width(wide, monkeypatch, case,
                                                                   strategy, dtype):
    N, C, H, W, K, k, s, p = case
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, k, k)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", strategy)
    out = []
    for mode in (1, 0):
        wide(mode)
        y = cc.conv2d(x, w, b, stride=s, padding=p)
        out.append((y,) + cc.conv2d_backward(np.ones_like(y) + y, x, w, stride=s, padding=p))
    # (y, dx, db: the same bits; dW's product is a dot-product kernel
    # without the wide vectors, whose sums are ordered otherwise than the
    # BLAS's: see test_weight_gradient_dot_products_match_the_loops)
    for i, (a, c) in enumerate(zip(*out)):
        if i == 2:
            np.testing.assert_allclose(a, c, rtol=1e-11 if dtype == np.float64 else 1e-4,
                                       atol=1e-11 if dtype == np.float64 else 1e-4)
        else:
            np.testing.assert_array_equal(a, c)
    ref = conv2d_naive(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                       stride=(s, s), padding=(p, p))
    tol = 1e-11 if dtype == np.float64 else 1e-4
    assert np.linalg.norm(out[0][0] - ref) / np.linalg.norm(ref) < tol


# dW's product C = cols . dyᵀ with few output channels runs, without the
# wide vectors on an AVX2 + FMA CPU, as dot products along the positions
# (dot_tn8) instead of the BLAS: the streamed dW of a first layer and
# BATCHED's, TILES' and the pointwise path's dW.  Edges: rows not a multiple
# of 4, channels not of 3, reductions not of the vector width; more than 32
# channels or fewer than 128 positions go to the BLAS again.
DOT_CASES = [
    (16, 1, 28, 28, 6, 5, 1, 2),     # LeNet-5's first layer: dW streamed
    (8, 6, 14, 14, 16, 5, 1, 0),     # LeNet-5's second layer
    (3, 2, 13, 17, 5, 3, 1, 1),      # 18 rows, 5 channels, 663 positions
    (2, 3, 25, 23, 7, 3, 2, 1),      # stride 2: 288 positions
    (4, 5, 6, 6, 40, 3, 1, 1),       # 40 channels: the BLAS
    (3, 20, 15, 13, 24, 1, 1, 0),    # pointwise: 195 positions an image
    (2, 9, 7, 7, 8, 1, 1, 0),        # pointwise on 7x7: the BLAS
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", DOT_CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("strategy", ["batched", "tiles"])
def test_weight_gradient_dot_products_match_the_loops(wide, monkeypatch, case, dtype,
                                                      strategy):
    N, C, H, W, K, k, s, p = case
    rng = np.random.default_rng(5)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, k, k)).astype(dtype)
    OH, OW = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    dy = rng.standard_normal((N, K, OH, OW)).astype(dtype)
    _, dw_ref, db_ref = conv2d_backward_naive(dy.astype(np.float64), x.astype(np.float64),
                                              w.astype(np.float64), stride=(s, s),
                                              padding=(p, p))
    tol = 1e-12 if dtype == np.float64 else 2e-6
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", strategy)
    threads = cc.get_num_threads()
    try:
        for mode in (1, 0):
            wide(mode)
            got = []
            for t in (1, 2):
                cc.set_num_threads(t)
                got.append(cc.conv2d_backward(dy, x, w, stride=s, padding=p,
                                              output_mask=(False, True, True))[1])
            # (the order of every sum is fixed by the shape: any thread count)
            np.testing.assert_array_equal(got[0], got[1])
            err = np.linalg.norm(got[0] - dw_ref) / np.linalg.norm(dw_ref)
            assert err < tol, (mode, err)
    finally:
        cc.set_num_threads(threads)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [(6, 1, 28, 28, 6, 5, 1, 2), (2, 3, 20, 38, 5, 3, 1, 1)],
                         ids=lambda c: "x".join(map(str, c)))
def test_fused_relu_pool_matches_the_loops_in_either_vector_width(wide, case, dtype):
    from convcore._ops.conv import _conv2d_relu_maxpool2
    N, C, H, W, K, k, s, p = case
    rng = np.random.default_rng(9)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, k, k)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    y = np.maximum(conv2d_naive(x.astype(np.float64), w.astype(np.float64),
                                b.astype(np.float64), padding=(p, p)), 0)
    OH, OW = y.shape[2] // 2, y.shape[3] // 2
    ref = y[:, :, :2 * OH, :2 * OW].reshape(N, K, OH, 2, OW, 2).max(axis=(3, 5))
    got = []
    for mode in (1, 0):
        wide(mode)
        if not _conv.relu_pool2_ok(_conv_geom(case)):
            continue
        out = _conv2d_relu_maxpool2(x, w, b, padding=p)
        if out is None:
            # (fused only where the convolution alone would run DIRECT:
            # not float64 without the wide vectors)
            assert not _conv.plan(_conv_geom(case), dtype).startswith("direct")
            continue
        assert out.dtype == dtype
        np.testing.assert_allclose(out, ref, rtol=1e-4 if dtype == np.float32 else 1e-12,
                                   atol=1e-4 if dtype == np.float32 else 1e-12)
        got.append(out)
    for other in got[1:]:
        np.testing.assert_array_equal(other, got[0])


def _conv_geom(case):
    from convcore._geometry import ConvGeom
    return ConvGeom(*_geom(*case))
