"""The CUDA kernels, run on the CPU through the emulation prelude.

The same .cu files that CuPy compiles for the GPU are built with the host C++
compiler (see gpu_emu.py) and driven through ``convcore.backends.cuda`` with
NumPy standing in for CuPy.  Convolution is compared with the C core on the
same kind of grid as the CPU tests; pooling with naive loops written here.
Each case runs on the backend's own launch grid and on tiny grids (one
thread; a few blocks of a few threads), so the grid-stride loops wrap.
"""
import math

import numpy as np
import pytest

import convcore as cc
from convcore._geometry import PoolGeom
from convcore.backends import cuda

gpu_emu = pytest.importorskip("gpu.gpu_emu")

# (library, grid): the backend's own grid and tiny ones with 32-bit index
# bodies, and a small grid with the 64-bit bodies forced
GRIDS = [("i32", None), ("i32", (3, 5)), ("i32", (1, 1)), ("i64", (2, 7))]
DTYPES = [np.float32, np.float64]


@pytest.fixture(scope="session")
def emu_libs(tmp_path_factory):
    if gpu_emu.compiler() is None:
        pytest.skip("no host C++ compiler (g++/c++/clang++) to build the GPU kernel emulation")
    out = tmp_path_factory.mktemp("gpu_emu")
    return {"i32": gpu_emu.build(out), "i64": gpu_emu.build(out, force64=True)}


@pytest.fixture
def emu_lib(emu_libs):
    return emu_libs["i32"]


@pytest.fixture(params=GRIDS, ids=["grid-backend", "grid-3x5", "grid-1x1", "i64-grid-2x7"])
def gpu(request, monkeypatch, emu_libs):
    """The cuda backend running on the emulator; functional conv routed to it."""
    lib, grid = request.param
    runner = gpu_emu.install(monkeypatch, emu_libs[lib], grid)
    _route_ops_to_cuda(monkeypatch)
    return runner


def _ops_modules():
    import importlib
    import pkgutil

    import convcore._ops as ops
    return [importlib.import_module(f"convcore._ops.{m.name}")
            for m in pkgutil.iter_modules(ops.__path__)]


def _route_ops_to_cuda(monkeypatch):
    """Every functional op picks the cuda backend, whatever its arrays."""
    for mod in _ops_modules():
        if hasattr(mod, "get_backend"):
            monkeypatch.setattr(mod, "get_backend", lambda *a: cuda)


# ---------------------------------------------------------------- conv
# (N, C, H, W, K, KH, KW, stride, padding, dilation, groups)
CONV_CASES = [
    (2, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1),
    (1, 4, 9, 8, 6, 3, 2, (2, 3), (1, 0), (2, 1), 2),
    (3, 6, 5, 5, 6, 3, 3, 1, 1, 1, 6),                 # depthwise
    (2, 8, 6, 7, 4, 1, 1, 1, 0, 1, 1),                 # pointwise: no im2col
    (2, 4, 6, 7, 4, 1, 1, 2, 0, 1, 2),                 # 1x1 at stride 2
    (1, 2, 11, 13, 3, 5, 4, (3, 2), (2, 2), (2, 3), 1),
    (2, 3, 4, 4, 5, 4, 4, 1, 0, 1, 1),                 # kernel = image
    (1, 1, 3, 3, 1, 3, 3, 2, 2, 1, 1),                 # windows mostly padding
]


def _case(rng, dtype, case):
    N, C, H, W, K, KH, KW, s, p, d, g = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // g, KH, KW)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b, dict(stride=s, padding=p, dilation=d, groups=g)


def _cpu_call(fn, *args, **kw):
    """Runs a functional op on the C core (the backend patch bypassed)."""
    from convcore.backends import get_backend
    mods = [m for m in _ops_modules() if hasattr(m, "get_backend")]
    saved = [m.get_backend for m in mods]
    for m in mods:
        m.get_backend = get_backend
    try:
        return fn(*args, **kw)
    finally:
        for m, f in zip(mods, saved):
            m.get_backend = f


def _tol(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_im2col_kernel_matches_c_core_exactly(gpu, rng, dtype, case):
    x, w, b, kw = _case(rng, dtype, case)
    KH, KW = w.shape[2:]
    args = dict(stride=kw["stride"], padding=kw["padding"], dilation=kw["dilation"])
    got = cc.im2col(x, (KH, KW), **args)
    want = _cpu_call(cc.im2col, x, (KH, KW), **args)
    assert got.dtype == dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_col2im_gather_matches_c_core_exactly(gpu, rng, dtype, case):
    x, w, b, kw = _case(rng, dtype, case)
    N, C, H, W = x.shape
    KH, KW = w.shape[2:]
    args = dict(stride=kw["stride"], padding=kw["padding"], dilation=kw["dilation"])
    L = _cpu_call(cc.im2col, x, (KH, KW), **args).shape[-1]
    cols = rng.standard_normal((N, C * KH * KW, L)).astype(dtype)
    got = cc.col2im(cols, (H, W), (KH, KW), **args)
    want = _cpu_call(cc.col2im, cols, (H, W), (KH, KW), **args)
    # same (kh, kw) summation order as the C core: the same bits
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_forward_backward_match_c_core(gpu, rng, dtype, case):
    x, w, b, kw = _case(rng, dtype, case)
    y = cc.conv2d(x, w, b, **kw)
    y_ref = _cpu_call(cc.conv2d, x, w, b, **kw)
    np.testing.assert_allclose(y, y_ref, **_tol(dtype))
    dy = rng.standard_normal(y.shape).astype(dtype)
    got = cc.conv2d_backward(dy, x, w, **kw)
    want = _cpu_call(cc.conv2d_backward, dy, x, w, **kw)
    for g_, w_ in zip(got, want):
        assert g_.shape == w_.shape and g_.dtype == dtype
        np.testing.assert_allclose(g_, w_, **_tol(dtype))


@pytest.mark.parametrize("mask", [(True, False, False), (False, True, False),
                                  (False, False, True), (False, True, True),
                                  (True, True, False)])
@pytest.mark.parametrize("case", [CONV_CASES[1], CONV_CASES[3]])
def test_conv2d_backward_output_mask_matches_c_core(gpu, rng, mask, case):
    x, w, b, kw = _case(rng, np.float64, case)
    y = _cpu_call(cc.conv2d, x, w, **kw)
    dy = rng.standard_normal(y.shape)
    got = cc.conv2d_backward(dy, x, w, output_mask=mask, **kw)
    want = _cpu_call(cc.conv2d_backward, dy, x, w, **kw)
    for m, g_, w_ in zip(mask, got, want):
        if m:
            np.testing.assert_allclose(g_, w_, rtol=1e-12, atol=1e-12)
        else:
            assert g_ is None


def test_conv2d_chunked_batch_and_same_padding_match_c_core(gpu, rng):
    x = rng.standard_normal((5, 3, 8, 9))
    w = rng.standard_normal((4, 3, 4, 3))
    from convcore import _config
    saved = _config.get_workspace_limit()
    _config.set_workspace_limit(3 * 4 * 3 * 8 * 9 * 8 * 2)  # two images per chunk
    try:
        y = cc.conv2d(x, w, padding="same")
        assert gpu.launches.count("cc_im2col") == 3          # chunks of 2, 2, 1
        gx, gw, gb = cc.conv2d_backward(np.ones_like(y), x, w, padding="same")
    finally:
        _config.set_workspace_limit(saved)
    np.testing.assert_allclose(y, _cpu_call(cc.conv2d, x, w, padding="same"), rtol=1e-12,
                               atol=1e-12)
    for g_, w_ in zip((gx, gw, gb), _cpu_call(cc.conv2d_backward, np.ones_like(y), x, w,
                                              padding="same")):
        np.testing.assert_allclose(g_, w_, rtol=1e-12, atol=1e-12)


def test_conv2d_empty_batch_on_the_gpu_backend(gpu, rng):
    x = np.zeros((0, 2, 5, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    assert cc.conv2d(x, w).shape == (0, 3, 3, 3)
    gx, gw, gb = cc.conv2d_backward(np.zeros((0, 3, 3, 3)), x, w)
    assert gx.shape == (0, 2, 5, 5)
    np.testing.assert_array_equal(gw, 0)
    np.testing.assert_array_equal(gb, 0)


def test_conv2d_nan_and_inf_pattern_matches_c_core(gpu, rng):
    x = rng.standard_normal((1, 2, 6, 6))
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 4, 4] = np.inf
    w = rng.standard_normal((2, 2, 3, 3))
    y = cc.conv2d(x, w, padding=1)
    ref = _cpu_call(cc.conv2d, x, w, padding=1)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(ref))


# ---------------------------------------------------------------- pooling
def out_len(size, k, s, p, d, ceil_mode):
    eff = d * (k - 1) + 1
    num = size + 2 * p - eff
    o = -(-num // s) + 1 if ceil_mode else num // s + 1
    if ceil_mode and (o - 1) * s >= size + p:
        o -= 1
    return o


def pool_geom(shape, k, s, p, d=(1, 1), ceil_mode=False, count_include_pad=True,
              divisor_override=None):
    N, C, H, W = shape
    OH = out_len(H, k[0], s[0], p[0], d[0], ceil_mode)
    OW = out_len(W, k[1], s[1], p[1], d[1], ceil_mode)
    return PoolGeom(N, C, H, W, k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1], OH, OW,
                    int(ceil_mode), int(count_include_pad), divisor_override or 0, 0)


def max_pool_naive(x, g):
    N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW = g[:14]
    y = np.empty((N, C, OH, OW), x.dtype)
    idx = np.empty((N, C, OH, OW), np.int64)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    taps = [(h, w) for h in range(i * SH - PH, i * SH - PH + DH * KH, DH)
                            for w in range(j * SW - PW, j * SW - PW + DW * KW, DW)
                            if 0 <= h < H and 0 <= w < W]
                    best, arg = -np.inf, taps[0][0] * W + taps[0][1]
                    for h, w in taps:
                        v = x[n, c, h, w]
                        if v > best or math.isnan(v):
                            best, arg = v, h * W + w
                    y[n, c, i, j], idx[n, c, i, j] = best, arg
    return y, idx


def max_pool_bwd_naive(dy, idx, shape):
    N, C, H, W = shape
    dx = np.zeros((N, C, H * W), np.float64)
    for n in range(N):
        for c in range(C):
            for o, t in zip(dy[n, c].ravel(), idx[n, c].ravel()):
                dx[n, c, t] += o
    return dx.reshape(shape)


def avg_pool_naive(x, g):
    N, C, H, W, KH, KW, SH, SW, PH, PW, _, _, OH, OW, _, cip, div, _ = g
    y = np.empty((N, C, OH, OW), np.float64)
    dmat = np.empty((OH, OW))
    for i in range(OH):
        for j in range(OW):
            h0, w0 = i * SH - PH, j * SW - PW
            h1, w1 = min(h0 + KH, H + PH), min(w0 + KW, W + PW)
            if div:
                d = div
            elif cip:
                d = (h1 - h0) * (w1 - w0)
            else:
                d = (min(h1, H) - max(h0, 0)) * (min(w1, W) - max(w0, 0))
            dmat[i, j] = d
            y[:, :, i, j] = x[:, :, max(h0, 0):min(h1, H), max(w0, 0):min(w1, W)].astype(
                np.float64).sum(axis=(2, 3)) / d
    return y, dmat


def avg_pool_bwd_naive(dy, g, dmat):
    N, C, H, W, KH, KW, SH, SW, PH, PW, _, _, OH, OW = g[:14]
    dx = np.zeros((N, C, H, W))
    for i in range(OH):
        for j in range(OW):
            h0, w0 = i * SH - PH, j * SW - PW
            dx[:, :, max(h0, 0):min(h0 + KH, H), max(w0, 0):min(w0 + KW, W)] += (
                dy[:, :, i:i + 1, j:j + 1] / dmat[i, j])
    return dx


def adaptive_bounds(i, size, out):
    return (i * size) // out, -(-((i + 1) * size) // out)


def adaptive_naive(x, OH, OW):
    N, C, H, W = x.shape
    y = np.empty((N, C, OH, OW))
    for i in range(OH):
        h0, h1 = adaptive_bounds(i, H, OH)
        for j in range(OW):
            w0, w1 = adaptive_bounds(j, W, OW)
            y[:, :, i, j] = x[:, :, h0:h1, w0:w1].astype(np.float64).mean(axis=(2, 3))
    return y


def adaptive_bwd_naive(dy, shape):
    N, C, H, W = shape
    OH, OW = dy.shape[2:]
    dx = np.zeros(shape)
    for i in range(OH):
        h0, h1 = adaptive_bounds(i, H, OH)
        for j in range(OW):
            w0, w1 = adaptive_bounds(j, W, OW)
            dx[:, :, h0:h1, w0:w1] += dy[:, :, i:i + 1, j:j + 1] / ((h1 - h0) * (w1 - w0))
    return dx


# (shape, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = [
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0), (1, 1), False),
    ((1, 2, 7, 9), (3, 3), (2, 2), (1, 1), (1, 1), False),
    ((1, 2, 7, 9), (3, 3), (2, 2), (1, 1), (1, 1), True),
    ((2, 1, 10, 11), (3, 2), (2, 3), (1, 1), (2, 2), True),
    ((1, 1, 6, 7), (1, 1), (2, 2), (0, 0), (1, 1), True),    # ceil_mode: no window starts in the padding
    ((1, 2, 5, 5), (2, 2), (2, 2), (1, 1), (1, 1), True),    # width 5, k2 s2 p1 -> 3
    ((1, 1, 9, 9), (3, 3), (1, 1), (1, 1), (3, 3), False),   # dilation, overlap
]


def _max_input(rng, shape, dtype):
    # distinct values (exact in float32), so the argmax is unique
    n = int(np.prod(shape))
    return (rng.permutation(n).reshape(shape) - n // 2).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MAX_CASES)
def test_max_pool_kernels_match_naive_loops(gpu, rng, dtype, case):
    shape, k, s, p, d, ceil_mode = case
    g = pool_geom(shape, k, s, p, d, ceil_mode)
    x = _max_input(rng, shape, dtype)
    y = np.empty(shape[:2] + g[12:14], dtype)
    idx = np.empty(y.shape, np.int64)
    cuda.max_pool2d_forward(x, y, idx, g)
    y_ref, idx_ref = max_pool_naive(x, g)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    dy = rng.standard_normal(y.shape).astype(dtype)
    want = max_pool_bwd_naive(dy.astype(np.float64), idx, shape)
    for geom in (g, None):  # window gather, and the sorted gather (indices only)
        dx = np.full(shape, 7.0, dtype)
        cuda.max_pool2d_backward(dy, idx, dx, geom)
        np.testing.assert_allclose(dx, want, **_tol(dtype))


@pytest.mark.parametrize("geom_known", [True, False])
def test_max_pool_ties_nan_and_neg_inf_windows(gpu, geom_known):
    def run(x, k, s, p):
        x = np.asarray(x, np.float64)[None, None]
        g = pool_geom(x.shape, (k, k), (s, s), (p, p), ceil_mode=False)
        y = np.empty((1, 1) + g[12:14])
        idx = np.empty(y.shape, np.int64)
        cuda.max_pool2d_forward(x, y, idx, g)
        dx = np.empty_like(x)
        cuda.max_pool2d_backward(np.ones_like(y), idx, dx, g if geom_known else None)
        return y[0, 0], idx[0, 0], dx[0, 0], g
    # ties: first maximum wins; each gradient to one input
    y, idx, dx, g = run([[1, 1], [1, 8]], 2, 1, 1)
    np.testing.assert_array_equal(idx, [[0, 0, 1], [0, 3, 3], [2, 3, 3]])
    assert dx.sum() == y.size
    np.testing.assert_array_equal(dx, [[3, 1], [1, 4]])
    # NaN wins, with its index; the last NaN of an all-NaN window, as PyTorch
    y, idx, dx, _ = run([[1, np.nan], [5, 6]], 2, 2, 0)
    assert np.isnan(y[0, 0]) and idx[0, 0] == 1 and dx[0, 1] == 1
    y, idx, _, _ = run([[np.nan, np.nan], [np.nan, np.nan]], 2, 2, 0)
    assert np.isnan(y[0, 0]) and idx[0, 0] == 3
    # a window of all -inf: -inf and a valid index inside the window
    y, idx, dx, _ = run([[-np.inf, -np.inf, 1], [-np.inf, -np.inf, 2], [0, 0, 0]], 2, 1, 0)
    assert y[0, 0] == -np.inf and idx[0, 0] == 0
    # padding acts as -inf, not 0
    y, idx, _, _ = run(-np.ones((2, 2)), 2, 2, 1)
    np.testing.assert_array_equal(y, -1)
    np.testing.assert_array_equal(idx, [[0, 1], [2, 3]])


def test_max_pool_backward_rejects_out_of_range_indices(gpu):
    dy = np.ones((1, 1, 2, 2))
    dx = np.empty((1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        cuda.max_pool2d_backward(dy, np.full((1, 1, 2, 2), 16, np.int64), dx)


# (shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_CASES = [
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0), False, True, None),
    ((1, 2, 7, 9), (3, 3), (2, 2), (1, 1), False, True, None),
    ((1, 2, 7, 9), (3, 3), (2, 2), (1, 1), True, False, None),
    ((1, 2, 7, 9), (3, 2), (2, 3), (1, 1), True, True, None),
    ((2, 1, 7, 7), (2, 2), (3, 3), (0, 0), True, True, None),   # ceil_mode: the overhang is not in the divisor
    ((1, 2, 6, 5), (3, 3), (1, 2), (1, 0), False, False, 5),
    ((1, 1, 5, 5), (4, 4), (3, 3), (2, 2), True, True, None),
    ((1, 1, 5, 5), (4, 4), (3, 3), (2, 2), True, False, None),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", AVG_CASES)
def test_avg_pool_kernels_match_naive_loops(gpu, rng, dtype, case):
    shape, k, s, p, ceil_mode, cip, div = case
    g = pool_geom(shape, k, s, p, (1, 1), ceil_mode, cip, div)
    x = rng.standard_normal(shape).astype(dtype)
    y = np.empty(shape[:2] + g[12:14], dtype)
    cuda.avg_pool2d_forward(x, y, g)
    y_ref, dmat = avg_pool_naive(x, g)
    np.testing.assert_allclose(y, y_ref, **_tol(dtype))
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = np.full(shape, 7.0, dtype)
    cuda.avg_pool2d_backward(dy, dx, g)
    np.testing.assert_allclose(dx, avg_pool_bwd_naive(dy.astype(np.float64), g, dmat),
                               **_tol(dtype))


def test_avg_pool_ceil_overhang_not_in_divisor(gpu):
    x = np.arange(1.0, 6.0)[None, None, None]             # ceil_mode overhang
    g = pool_geom(x.shape, (1, 2), (1, 2), (0, 0), ceil_mode=True)
    y = np.empty((1, 1) + g[12:14])
    cuda.avg_pool2d_forward(x, y, g)
    np.testing.assert_array_equal(y.ravel(), [1.5, 3.5, 5.0])
    x = np.arange(49.0).reshape(1, 1, 7, 7)               # ceil_mode: the overhang is not in the divisor
    g = pool_geom(x.shape, (2, 2), (3, 3), (0, 0), ceil_mode=True)
    y = np.empty((1, 1) + g[12:14])
    cuda.avg_pool2d_forward(x, y, g)
    np.testing.assert_array_equal(y[0, 0, -1], [42.5, 45.5, 48.0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,out", [((2, 3, 7, 9), (3, 4)), ((1, 2, 5, 5), (5, 5)),
                                       ((1, 2, 4, 6), (7, 9)), ((2, 4, 7, 7), (1, 1)),
                                       ((1, 1, 10, 3), (4, 2))])
def test_adaptive_avg_pool_kernels_match_naive_loops(gpu, rng, dtype, shape, out):
    x = rng.standard_normal(shape).astype(dtype)
    y = np.empty(shape[:2] + out, dtype)
    cuda.adaptive_avg_pool2d_forward(x, y)
    np.testing.assert_allclose(y, adaptive_naive(x, *out), **_tol(dtype))
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = np.full(shape, 7.0, dtype)
    cuda.adaptive_avg_pool2d_backward(dy, dx)
    np.testing.assert_allclose(dx, adaptive_bwd_naive(dy.astype(np.float64), shape),
                               **_tol(dtype))


def test_every_kernel_is_exercised(emu_lib, monkeypatch, rng):
    """Guards the harness itself: each kernel of the module ran at least once
    through the backend, and scalars reach it as int64."""
    runner = gpu_emu.install(monkeypatch, emu_lib)
    _route_ops_to_cuda(monkeypatch)
    x = rng.standard_normal((1, 2, 6, 6))
    w = rng.standard_normal((2, 2, 3, 3))
    y = cc.conv2d(x, w)
    cc.conv2d_backward(np.ones_like(y), x, w)
    g = pool_geom(x.shape, (2, 2), (2, 2), (0, 0))
    yp = np.empty((1, 2, 3, 3))
    idx = np.empty(yp.shape, np.int64)
    cuda.max_pool2d_forward(x, yp, idx, g)
    cuda.max_pool2d_backward(yp, idx, np.empty_like(x), g)
    cuda.max_pool2d_backward(yp, idx, np.empty_like(x))
    cuda.avg_pool2d_forward(x, yp, g)
    cuda.avg_pool2d_backward(yp, np.empty_like(x), g)
    cuda.adaptive_avg_pool2d_forward(x, yp)
    cuda.adaptive_avg_pool2d_backward(yp, np.empty_like(x))
    assert set(runner.launches) == set(cuda.KERNELS)


# ------------------------------------------- pooling through the functional API
def _need_pool_api():
    if not hasattr(cc, "max_pool2d"):
        pytest.skip("the pooling functional API is not in this build")


# (shape, kernel, stride, padding, dilation, ceil_mode) through cc.max_pool2d
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MAX_CASES)
def test_max_pool2d_functional_matches_c_core_exactly(gpu, rng, dtype, case):
    _need_pool_api()
    shape, k, s, p, d, ceil_mode = case
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[::7] = x.flat[0]                        # ties
    x.flat[5] = np.nan
    x[..., 0, :] = -np.inf                         # rows of -inf
    args = (x, k, s, p, d)
    y, idx = cc.max_pool2d(*args, ceil_mode=ceil_mode, return_indices=True)
    y_ref, idx_ref = _cpu_call(cc.max_pool2d, *args, ceil_mode=ceil_mode, return_indices=True)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = cc.max_pool2d_backward(dy, idx, x.shape)
    dx_ref = _cpu_call(cc.max_pool2d_backward, dy, idx_ref, x.shape)
    np.testing.assert_array_equal(dx, dx_ref)     # same output order per pixel


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", AVG_CASES)
def test_avg_pool2d_functional_matches_c_core(gpu, rng, dtype, case):
    _need_pool_api()
    shape, k, s, p, ceil_mode, cip, div = case
    x = rng.standard_normal(shape).astype(dtype)
    kw = dict(ceil_mode=ceil_mode, count_include_pad=cip, divisor_override=div)
    y = cc.avg_pool2d(x, k, s, p, **kw)
    np.testing.assert_allclose(y, _cpu_call(cc.avg_pool2d, x, k, s, p, **kw), **_tol(dtype))
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = cc.avg_pool2d_backward(dy, x.shape, k, s, p, **kw)
    np.testing.assert_allclose(dx, _cpu_call(cc.avg_pool2d_backward, dy, x.shape, k, s, p,
                                             **kw), **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,out", [((2, 3, 7, 9), (3, 4)), ((2, 4, 7, 7), 1),
                                       ((1, 2, 4, 6), (7, 9))])
def test_adaptive_avg_pool2d_functional_matches_c_core(gpu, rng, dtype, shape, out):
    _need_pool_api()
    x = rng.standard_normal(shape).astype(dtype)
    y = cc.adaptive_avg_pool2d(x, out)
    np.testing.assert_allclose(y, _cpu_call(cc.adaptive_avg_pool2d, x, out), **_tol(dtype))
    dy = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_allclose(cc.adaptive_avg_pool2d_backward(dy, x.shape),
                               _cpu_call(cc.adaptive_avg_pool2d_backward, dy, x.shape),
                               **_tol(dtype))


def test_pooling_functional_errors_are_the_same_on_the_gpu_backend(gpu):
    _need_pool_api()
    x = np.ones((1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        cc.max_pool2d_backward(np.ones((1, 1, 2, 2)), np.full((1, 1, 2, 2), 16, np.int64),
                               x.shape)
    with pytest.raises(ValueError):
        cc.avg_pool2d(x, 2, divisor_override=0)
    y = cc.max_pool2d(np.zeros((0, 2, 4, 4)), 2)
    assert y.shape == (0, 2, 2, 2)


# ------------------------------------------------------- transposed convolution
# conv_transpose2d is conv2d's dX (and its backward conv2d's forward and dW) on
# the same backend: on the emulated GPU it must match the C core.
TRANSPOSE_CASES = [
    # (N, C_in, H, W, C_out, KH, KW, stride, padding, output_padding, dilation, groups)
    (2, 4, 5, 4, 6, 3, 3, 2, 1, 1, 1, 2),
    (1, 3, 4, 6, 2, 2, 3, (3, 1), (0, 1), (2, 0), (1, 2), 1),
    (2, 4, 3, 3, 4, 3, 3, 1, 1, 0, 1, 4),              # depthwise
    (2, 3, 4, 5, 5, 1, 1, 2, 0, 1, 1, 1),              # pointwise, strided
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", TRANSPOSE_CASES)
def test_conv_transpose2d_on_the_gpu_backend_matches_c_core(gpu, rng, dtype, case):
    N, C, H, W, K, KH, KW, s, p, op, d, g = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((C, K // g, KH, KW)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    kw = dict(stride=s, padding=p, output_padding=op, dilation=d, groups=g)
    got = cc.conv_transpose2d(x, w, b, **kw)
    want = _cpu_call(cc.conv_transpose2d, x, w, b, **kw)
    assert got.dtype == dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, **_tol(dtype))
    dy = rng.standard_normal(got.shape).astype(dtype)
    for a, e in zip(cc.conv_transpose2d_backward(dy, x, w, **kw),
                    _cpu_call(cc.conv_transpose2d_backward, dy, x, w, **kw)):
        assert a.dtype == dtype and a.shape == e.shape
        np.testing.assert_allclose(a, e, **_tol(dtype))
