"""Shared checks of the strategies made for small maps (REGIONS, UNROLLED):
geometries given as ``(N, C, H, W, K, (KH, KW), stride, padding, dilation)``,
checked with the strategy forced by the caller (CONVCORE_CONV_STRATEGY)
against the independent loops of tests/reference/conv.py and PyTorch."""
import numpy as np

import convcore as cc
from reference.conv import conv2d_backward_naive, conv2d_naive


def args(case):
    N, C, H, W, K, (kh, kw), s, p, d = case
    p = p if isinstance(p, tuple) else (p, p)
    return N, C, H, W, K, kh, kw, (s, s), p, (d, d)


def geom(case):
    """The case as the planner's 16-tuple (groups 1)."""
    N, C, H, W, K, kh, kw, s, p, d = args(case)
    OH = (H + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0] + 1
    OW = (W + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1] + 1
    return (N, C, H, W, K, kh, kw, s[0], s[1], p[0], p[1], d[0], d[1], OH, OW, 1)


def data(case, dtype, rng):
    N, C, H, W, K, kh, kw, s, p, d = args(case)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, kh, kw)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b


def check_float64_against_the_loops(case, rng):
    N, C, H, W, K, kh, kw, s, p, d = args(case)
    x, w, b = data(case, np.float64, rng)
    y = cc.conv2d(x, w, b, stride=s, padding=p, dilation=d)
    np.testing.assert_allclose(y, conv2d_naive(x, w, b, s, p, d), rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = cc.conv2d_backward(dy, x, w, stride=s, padding=p, dilation=d)
    dx_ref, dw_ref, db_ref = conv2d_backward_naive(dy, x, w, s, p, d)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, db_ref, rtol=1e-12, atol=1e-12)


def check_against_pytorch(case, dtype, rng, torch):
    N, C, H, W, K, kh, kw, s, p, d = args(case)
    x, w, b = data(case, dtype, rng)
    y = cc.conv2d(x, w, b, stride=s, padding=p, dilation=d)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = cc.conv2d_backward(dy, x, w, stride=s, padding=p, dilation=d)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, torch.tensor(b, dtype=torch.float64),
                                    stride=s, padding=p, dilation=d)
    yt.backward(torch.tensor(dy, dtype=torch.float64))
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for got, ref in ((y, yt), (dx, xt.grad), (dw, wt.grad)):
        assert got.dtype == dtype
        ref = ref.detach().numpy()
        err = np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30)
        assert err < tol, f"relative error {err:.3g}"


def check_bias_where_no_tap_is_seen(case, rng):
    """`case` must be a 3x3 map with padding 3 (a 7x7 output whose outer
    ring sees no tap): those positions hold the bias exactly."""
    N, C, H, W, K, kh, kw, s, p, d = args(case)
    x, w, b = data(case, np.float64, rng)
    y = cc.conv2d(x, w, b, stride=s, padding=p)
    np.testing.assert_array_equal(y[:, :, 0, :], np.broadcast_to(b[:, None], (N, K, 7)))
    np.testing.assert_array_equal(y[:, :, :, -1], np.broadcast_to(b[:, None], (N, K, 7)))


def check_identical_for_thread_counts(case, rng, counts):
    """Forward and backward (padding 1) bit-identical on every thread count."""
    N, C, H, W, K, kh, kw, s, p, d = args(case)
    x, w, b = data(case, np.float32, rng)
    dy = rng.standard_normal((N, K, H, W)).astype(np.float32)
    old = cc.get_num_threads()
    out = []
    try:
        for n in counts:
            cc.set_num_threads(n)
            y = cc.conv2d(x, w, b, padding=1)
            out.append((y,) + tuple(cc.conv2d_backward(dy, x, w, padding=1)))
    finally:
        cc.set_num_threads(old)
    for other in out[1:]:
        for a, c in zip(out[0], other):
            np.testing.assert_array_equal(a, c)
