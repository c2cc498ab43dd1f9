"""Every op on CuPy arrays against the CPU result (needs CuPy and a GPU).

Marked ``gpu`` (deselected by default; run with ``pytest -m gpu``) and skipped
when CuPy or a CUDA device is missing.  CuPy keeps TF32 off unless
``CUPY_TF32=1``; these tests refuse to run with it on.  The tests that need
no GPU (dispatch and the error without CuPy) are not marked.
"""
import os
import sys

import numpy as np
import pytest

import convcore as cc
from convcore.backends import cuda, get_backend

needs_gpu = pytest.mark.skipif(not cuda.is_available(),
                               reason="needs CuPy and a CUDA device")
gpu = [pytest.mark.gpu, needs_gpu]


@pytest.fixture
def cp():
    import cupy
    if os.environ.get("CUPY_TF32") == "1":
        pytest.skip("CUPY_TF32=1 turns TF32 on: float32 parity is not to float rounding")
    return cupy


def _tol(dtype, k=1):
    if dtype == np.float64:
        return dict(rtol=1e-11, atol=1e-11)
    return dict(rtol=1e-5 * max(1, k) ** 0.5, atol=1e-5 * max(1, k) ** 0.5)


def _same(got, want, dtype, k=1):
    import cupy
    assert isinstance(got, cupy.ndarray), type(got)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(cupy.asnumpy(got), want, **_tol(dtype, k))


CONV_CASES = [
    # (N, C, H, W, K, KH, KW, stride, padding, dilation, groups)
    (2, 3, 9, 8, 4, 3, 3, 1, 1, 1, 1),
    (3, 4, 11, 10, 6, 3, 2, (2, 3), (1, 0), (2, 1), 2),
    (2, 6, 7, 7, 6, 3, 3, 1, 1, 1, 6),
    (2, 8, 6, 7, 4, 1, 1, 1, 0, 1, 1),
    (1, 3, 16, 16, 8, 5, 5, 2, "valid", 1, 1),
    (2, 4, 9, 9, 4, 4, 4, 1, "same", 1, 2),
    (0, 3, 5, 5, 2, 3, 3, 1, 1, 1, 1),
]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_on_cupy_matches_cpu(cp, rng, dtype, case):
    N, C, H, W, K, KH, KW, s, p, d, g = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // g, KH, KW)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    kw = dict(stride=s, padding=p, dilation=d, groups=g)
    y = cc.conv2d(x, w, b, **kw)
    _same(cc.conv2d(cp.asarray(x), cp.asarray(w), cp.asarray(b), **kw), y, dtype, C * KH * KW)
    dy = rng.standard_normal(y.shape).astype(dtype)
    want = cc.conv2d_backward(dy, x, w, **kw)
    got = cc.conv2d_backward(cp.asarray(dy), cp.asarray(x), cp.asarray(w), **kw)
    for g_, w_ in zip(got, want):
        _same(g_, w_, dtype, max(1, N) * y.shape[-1] * y.shape[-2])


@pytest.mark.gpu
@needs_gpu
def test_conv2d_on_cupy_accepts_strided_views_and_unbatched_input(cp, rng):
    x = rng.standard_normal((2, 3, 8, 10))
    w = rng.standard_normal((4, 3, 3, 3))
    xv = x[:, :, ::-1, 1::2]
    _same(cc.conv2d(cp.asarray(x)[:, :, ::-1, 1::2], cp.asarray(w)), cc.conv2d(xv, w),
          np.float64)
    _same(cc.conv2d(cp.asarray(x[0]), cp.asarray(w)), cc.conv2d(x[0], w), np.float64)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_col2im_on_cupy_match_cpu_exactly(cp, rng, dtype):
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    args = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    cols = cc.im2col(x, (3, 2), **args)
    got = cc.im2col(cp.asarray(x), (3, 2), **args)
    np.testing.assert_array_equal(cp.asnumpy(got), cols)
    back = cc.col2im(cols, (9, 8), (3, 2), **args)
    np.testing.assert_array_equal(cp.asnumpy(cc.col2im(cp.asarray(cols), (9, 8), (3, 2),
                                                       **args)), back)


@pytest.mark.gpu
@needs_gpu
def test_conv2d_backward_on_cupy_is_deterministic(cp, rng):
    x = cp.asarray(rng.standard_normal((4, 8, 12, 12)).astype(np.float32))
    w = cp.asarray(rng.standard_normal((8, 8, 3, 3)).astype(np.float32))
    dy = cp.asarray(rng.standard_normal((4, 8, 12, 12)).astype(np.float32))
    a = cc.conv2d_backward(dy, x, w, padding=1)
    b = cc.conv2d_backward(dy, x, w, padding=1)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(cp.asnumpy(u), cp.asnumpy(v))


def _pool_fns():
    names = ("max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
             "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward")
    if not all(hasattr(cc, n) for n in names):
        pytest.skip("the pooling functional API is not in this build")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k,s,p,d,ceil", [(2, 2, 0, 1, False), (3, 2, 1, 1, True),
                                          ((3, 2), (2, 3), 1, 2, True)])
def test_max_pool_on_cupy_matches_cpu_exactly(cp, rng, dtype, k, s, p, d, ceil):
    _pool_fns()
    x = rng.standard_normal((2, 3, 11, 10)).astype(dtype)
    x[0, 0, 1, 1] = np.nan
    y, idx = cc.max_pool2d(x, k, s, p, d, ceil_mode=ceil, return_indices=True)
    gy, gidx = cc.max_pool2d(cp.asarray(x), k, s, p, d, ceil_mode=ceil, return_indices=True)
    np.testing.assert_array_equal(cp.asnumpy(gy), y)
    np.testing.assert_array_equal(cp.asnumpy(gidx), idx)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = cc.max_pool2d_backward(dy, idx, x.shape)
    gdx = cc.max_pool2d_backward(cp.asarray(dy), gidx, x.shape)
    np.testing.assert_allclose(cp.asnumpy(gdx), dx, **_tol(dtype))


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k,s,p,ceil,cip,div", [(2, 2, 0, False, True, None),
                                                (3, 2, 1, True, False, None),
                                                ((3, 2), (2, 3), 1, True, True, 4)])
def test_avg_pool_on_cupy_matches_cpu(cp, rng, dtype, k, s, p, ceil, cip, div):
    _pool_fns()
    x = rng.standard_normal((2, 3, 11, 10)).astype(dtype)
    kw = dict(ceil_mode=ceil, count_include_pad=cip, divisor_override=div)
    y = cc.avg_pool2d(x, k, s, p, **kw)
    _same(cc.avg_pool2d(cp.asarray(x), k, s, p, **kw), y, dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = cc.avg_pool2d_backward(dy, x.shape, k, s, p, **kw)
    _same(cc.avg_pool2d_backward(cp.asarray(dy), x.shape, k, s, p, **kw), dx, dtype)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("out", [(1, 1), (3, 4), (7, 9)])
def test_adaptive_avg_pool_on_cupy_matches_cpu(cp, rng, out):
    _pool_fns()
    x = rng.standard_normal((2, 3, 7, 8))
    y = cc.adaptive_avg_pool2d(x, out)
    _same(cc.adaptive_avg_pool2d(cp.asarray(x), out), y, np.float64)
    dy = rng.standard_normal(y.shape)
    _same(cc.adaptive_avg_pool2d_backward(cp.asarray(dy), x.shape),
          cc.adaptive_avg_pool2d_backward(dy, x.shape), np.float64)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("make,exc,match", [
    (lambda cp: (cp.ones((1, 4, 5, 5)), cp.ones((3, 3, 3, 3)), {}), ValueError, "input channels"),
    (lambda cp: (cp.ones((1, 3, 5, 5)), cp.ones((3, 3, 3, 3)), {"stride": 0}), ValueError,
     "stride"),
    (lambda cp: (cp.ones((1, 3, 2, 2)), cp.ones((3, 3, 3, 3)), {}), ValueError, "larger"),
    (lambda cp: (cp.ones((1, 3, 5, 5), dtype=cp.int32), cp.ones((3, 3, 3, 3)), {}), TypeError,
     "float32 or float64"),
    (lambda cp: (cp.ones((1, 3, 5, 5), cp.float32), cp.ones((3, 3, 3, 3)), {}), TypeError,
     "dtype"),
    (lambda cp: (cp.ones((1, 3, 5, 5)), np.ones((3, 3, 3, 3)), {}), TypeError, "devices"),
    (lambda cp: (cp.ones((3, 5)), cp.ones((3, 3, 3, 3)), {}), ValueError, "3-D"),
])
def test_conv2d_on_cupy_errors(cp, make, exc, match):
    x, w, kw = make(cp)
    with pytest.raises(exc, match=match):
        cc.conv2d(x, w, **kw)


@pytest.mark.gpu
@needs_gpu
def test_short_training_run_on_gpu_reduces_the_loss(cp):
    """A two-layer conv net fitted to a fixed random target with SGD, every
    array on the GPU: the loss falls, and matches the same run on the CPU."""
    def run(xp, x, w1, w2, t):
        losses = []
        for _ in range(30):
            h = cc.conv2d(x, w1, padding=1)
            a = xp.maximum(h, 0)
            y = cc.conv2d(a, w2, padding=1)
            r = y - t
            losses.append(float((r * r).mean()))
            gy = 2 * r / r.size
            ga, gw2, _ = cc.conv2d_backward(gy, a, w2, padding=1)
            gh = ga * (h > 0)
            _, gw1, _ = cc.conv2d_backward(gh, x, w1, padding=1)
            w1 = w1 - 0.05 * gw1
            w2 = w2 - 0.05 * gw2
        return losses

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 2, 10, 10))
    w1 = 0.3 * rng.standard_normal((4, 2, 3, 3))
    w2 = 0.3 * rng.standard_normal((1, 4, 3, 3))
    t = rng.standard_normal((8, 1, 10, 10))
    cpu = run(np, x, w1, w2, t)
    dev = run(cp, *(cp.asarray(a) for a in (x, w1, w2, t)))
    assert dev[-1] < 0.9 * dev[0]
    np.testing.assert_allclose(dev, cpu, rtol=1e-9)


@pytest.mark.gpu
@needs_gpu
def test_to_device_and_to_host_round_trip(cp, rng):
    x = rng.standard_normal((2, 3))
    d = cuda.to_device(x)
    assert isinstance(d, cp.ndarray)
    np.testing.assert_array_equal(cuda.to_host(d), x)
    np.testing.assert_array_equal(cuda.to_numpy(d), x)
    assert cuda.to_numpy(x) is x


# ------------------------------------------------------- no GPU needed
def test_cupy_arrays_dispatch_to_the_cuda_backend():
    FakeCupy = type("ndarray", (), {"__module__": "cupy._core.core"})
    assert get_backend(FakeCupy()) is cuda
    assert get_backend(FakeCupy(), None) is cuda
    with pytest.raises(TypeError, match="different devices"):
        get_backend(FakeCupy(), np.ones(2))


def test_without_cupy_asking_for_the_gpu_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    monkeypatch.setattr(cuda, "_cp", None)
    with pytest.raises(ImportError, match=r'pip install "convcore\[cuda\]"'):
        cuda.to_device(np.ones(3))
    with pytest.raises(ImportError, match="convcore\\[cuda\\]"):
        cuda.xp
    assert cuda.is_available() is False
    # the CPU path is untouched
    np.testing.assert_array_equal(cuda.to_numpy(np.ones(2)), np.ones(2))
