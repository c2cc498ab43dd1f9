"""The edge-case catalogue (docs/contributing.rst), row by row: inputs that
broke other conv/pool libraries.

Each test names the row it covers and checks the exact behaviour the catalog
asks for (VE = ValueError, TE = TypeError, messages naming expected and given).
"""
import ctypes
import os
import ctypes.util
import platform
import sys

import numpy as np
import pytest

import convcore as cc
from convcore.backends import cpu as cpu_backend
from reference.conv import conv2d_backward_naive, conv2d_naive

X = np.ones((1, 3, 5, 5))
W = np.ones((2, 3, 3, 3))


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if the backend is asked to allocate or compute anything."""
    def refuse(*args, **kwargs):
        raise AssertionError("the backend was called before validation finished")
    for name in ("empty", "zeros", "conv2d_forward", "conv2d_backward", "im2col", "col2im"):
        monkeypatch.setattr(cpu_backend, name, refuse)


# ---- Convolution ------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(), (5,), (5, 5), (1, 1, 3, 5, 5)])
def test_conv_row_x_ndim_not_3_or_4_is_value_error(shape, no_work):
    with pytest.raises(ValueError, match=r"x must be 3-D .* or 4-D .*got shape"):
        cc.conv2d(np.ones(shape), W)
    with pytest.raises(ValueError, match=r"x must be 3-D .* or 4-D .*got shape"):
        cc.im2col(np.ones(shape), 1)


def test_conv_row_channel_mismatch_is_value_error_before_any_work(no_work):
    with pytest.raises(ValueError, match=r"weight expects 3 input channels.*x has 4"):
        cc.conv2d(np.ones((1, 4, 5, 5)), np.ones((3, 3, 3, 3)))
    with pytest.raises(ValueError, match=r"weight expects 3 input channels.*x has 4"):
        cc.conv2d_backward(np.ones((1, 3, 3, 3)), np.ones((1, 4, 5, 5)),
                           np.ones((3, 3, 3, 3)))


@pytest.mark.parametrize("groups, x_shape, w_shape, msg", [
    (0, (1, 4, 5, 5), (2, 4, 3, 3), "groups must be >= 1, got 0"),
    (-2, (1, 4, 5, 5), (2, 4, 3, 3), "groups must be >= 1, got -2"),
    (3, (1, 4, 5, 5), (3, 1, 3, 3), r"in_channels \(4\) must be divisible by groups \(3\)"),
    (2, (1, 4, 5, 5), (3, 2, 3, 3), r"out_channels \(3\) must be divisible by groups \(2\)"),
    (2, (1, 4, 5, 5), (2, 4, 3, 3), r"weight expects 8 input channels"),
])
def test_conv_row_bad_groups_is_value_error(groups, x_shape, w_shape, msg, no_work):
    with pytest.raises(ValueError, match=msg):
        cc.conv2d(np.ones(x_shape), np.ones(w_shape), groups=groups)


@pytest.mark.parametrize("opt, value, msg", [
    ("stride", 0, "stride must be >= 1, got 0"),
    ("stride", -1, "stride must be >= 1, got -1"),
    ("stride", (1, 0), "stride must be >= 1, got 0"),
    ("dilation", 0, "dilation must be >= 1, got 0"),
    ("dilation", (0, 1), "dilation must be >= 1, got 0"),
    ("padding", -1, "padding must be >= 0, got -1"),
    ("padding", (0, -3), "padding must be >= 0, got -3"),
])
def test_conv_row_nonpositive_stride_dilation_negative_padding_is_value_error(
        opt, value, msg, no_work):
    """Raised in Python before any division: a stride of 0 in C is a SIGFPE."""
    with pytest.raises(ValueError, match=msg):
        cc.conv2d(X, W, **{opt: value})
    with pytest.raises(ValueError, match=msg):
        cc.conv2d_backward(np.ones((1, 2, 3, 3)), X, W, **{opt: value})
    with pytest.raises(ValueError, match=msg):
        cc.im2col(X, 3, **{opt: value})
    with pytest.raises(ValueError, match=msg):
        cc.col2im(np.ones((1, 27, 9)), 5, 3, **{opt: value})


@pytest.mark.parametrize("x_shape, w_shape, opts", [
    ((1, 3, 5, 5), (2, 3, 7, 7), {}),
    ((1, 3, 5, 5), (2, 3, 6, 1), {}),
    ((1, 3, 5, 5), (2, 3, 3, 3), {"dilation": 3}),        # effective kernel 7
    ((1, 3, 5, 5), (2, 3, 8, 8), {"padding": 1}),         # padded input 7
    ((1, 3, 1, 1), (2, 3, 2, 2), {}),
])
def test_conv_row_effective_kernel_larger_than_padded_input_is_value_error(
        x_shape, w_shape, opts, no_work):
    with pytest.raises(ValueError, match=r"effective kernel size \d+ .* is larger than the "
                                         r"padded input size"):
        cc.conv2d(np.ones(x_shape), np.ones(w_shape), **opts)
    with pytest.raises(ValueError, match="effective kernel size"):
        cc.im2col(np.ones(x_shape), w_shape[2:], **opts)


@pytest.mark.parametrize("bias_shape", [(3,), (1,), (0,), (2, 1), ()])
def test_conv_row_bias_of_wrong_length_is_value_error(bias_shape, no_work):
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\), got"):
        cc.conv2d(X, W, np.ones(bias_shape))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float16, np.complex64,
                                   np.complex128, np.bool_, object])
def test_conv_row_int_half_complex_input_is_type_error(dtype, no_work):
    with pytest.raises(TypeError, match=r"x must be float32 or float64, got"):
        cc.conv2d(X.astype(dtype), W.astype(dtype))
    with pytest.raises(TypeError, match=r"x must be float32 or float64, got"):
        cc.im2col(X.astype(dtype), 3)
    with pytest.raises(TypeError, match=r"cols must be float32 or float64, got"):
        cc.col2im(np.ones((1, 27, 9), dtype=dtype), 5, 3)


@pytest.mark.parametrize("xd, wd, bd, gd", [
    (np.float32, np.float64, None, None),
    (np.float64, np.float32, None, None),
    (np.float32, np.float32, np.float64, None),
    (np.float64, np.float64, None, np.float32),
])
def test_conv_row_mixed_float_dtypes_is_type_error(xd, wd, bd, gd, no_work):
    b = None if bd is None else np.ones(2, bd)
    with pytest.raises(TypeError, match=r"must have the dtype of x \(float\d\d\), got float"):
        if gd is None:
            cc.conv2d(X.astype(xd), W.astype(wd), b)
        else:
            cc.conv2d_backward(np.ones((1, 2, 3, 3), gd), X.astype(xd), W.astype(wd))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_row_empty_batch_gives_empty_output_and_zero_weight_gradient(dtype, rng):
    x = np.ones((0, 3, 6, 5), dtype)
    w = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    b = np.ones(4, dtype)
    y = cc.conv2d(x, w, b, stride=(2, 1), padding=1)
    assert y.shape == (0, 4, 3, 6) and y.dtype == dtype
    gx, gw, gb = cc.conv2d_backward(np.ones((0, 4, 3, 6), dtype), x, w, stride=(2, 1),
                                    padding=1)
    assert gx.shape == (0, 3, 6, 5) and gx.dtype == dtype
    assert gw.shape == w.shape and gw.dtype == dtype
    np.testing.assert_array_equal(gw, 0)
    np.testing.assert_array_equal(gb, np.zeros(4))
    assert cc.im2col(x, (3, 2), padding=1).shape == (0, 3 * 3 * 2, 6 * 6)
    assert cc.col2im(np.ones((0, 18, 36), dtype), (6, 5), (3, 2), padding=1).shape == \
        (0, 3, 6, 5)
    # and a 1x1 / stride 1 kernel (the GEMM-only path) on an empty batch
    gx, gw, gb = cc.conv2d_backward(np.ones((0, 4, 6, 5), dtype), x, w[:, :, :1, :1])
    np.testing.assert_array_equal(gw, 0)


def _views(a):
    """(name, non-contiguous view with the values of a)."""
    yield "reversed", np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    yield "fortran", np.asfortranarray(a)
    yield "transposed", np.ascontiguousarray(a.swapaxes(-1, -2)).swapaxes(-1, -2)
    big = np.zeros(a.shape[:-2] + (a.shape[-2] + 3, 2 * a.shape[-1] + 1), a.dtype)
    big[..., 2:-1, 1::2] = a
    yield "sliced", big[..., 2:-1, 1::2]
    yield "batch-permuted", np.ascontiguousarray(np.moveaxis(a, 0, -1)).transpose(
        (a.ndim - 1,) + tuple(range(a.ndim - 1)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_row_non_contiguous_views_give_identical_result(dtype, rng):
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    opts = dict(stride=(2, 1), padding=1, dilation=(1, 2))
    y = cc.conv2d(x, w, **opts)
    dy = rng.standard_normal(y.shape).astype(dtype)
    grads = cc.conv2d_backward(dy, x, w, **opts)
    cols = cc.im2col(x, 3, **opts)
    back = cc.col2im(cols, (7, 6), 3, **opts)
    for (name, xv), (_, wv), (_, dyv), (_, cv) in zip(_views(x), _views(w), _views(dy),
                                                      _views(cols)):
        assert not xv.flags.c_contiguous, name
        np.testing.assert_array_equal(cc.conv2d(xv, wv, **opts), y, err_msg=name)
        for got, want in zip(cc.conv2d_backward(dyv, xv, wv, **opts), grads):
            np.testing.assert_array_equal(got, want, err_msg=name)
        np.testing.assert_array_equal(cc.im2col(xv, 3, **opts), cols, err_msg=name)
        np.testing.assert_array_equal(cc.col2im(cv, (7, 6), 3, **opts), back, err_msg=name)


def test_conv_row_read_only_broadcast_input_is_accepted(rng):
    x = np.broadcast_to(rng.standard_normal((1, 3, 5, 5)), (4, 3, 5, 5))
    w = rng.standard_normal((2, 3, 3, 3))
    w.setflags(write=False)
    b = np.broadcast_to(np.float64(0.5), (2,))
    assert not x.flags.writeable
    y = cc.conv2d(x, w, b)
    np.testing.assert_allclose(y, conv2d_naive(x, w, b), rtol=1e-12, atol=1e-12)
    dy = np.broadcast_to(np.ones((1, 1, 1, 1)), y.shape)
    gx, gw, gb = cc.conv2d_backward(dy, x, w)
    rx, rw, rb = conv2d_backward_naive(dy, x, w)
    np.testing.assert_allclose(gx, rx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, rw, rtol=1e-12, atol=1e-12)
    cols = cc.im2col(x, 3)
    cc.col2im(np.broadcast_to(np.ones(1), cols.shape), 5, 3)


def _huge(shape, dtype=np.float32):
    """A read-only array of any size that owns one element of memory."""
    return np.broadcast_to(np.ones(1, dtype), shape)


@pytest.mark.parametrize("call, what", [
    # one plane of 50000 x 50000 = 2.5e9 > 2**31 - 1 positions
    (lambda: cc.conv2d(_huge((1, 1, 50000, 50000)), _huge((1, 1, 1, 1))), "H*W"),
    (lambda: cc.im2col(_huge((1, 1, 50000, 50000)), 1), "H*W"),
    (lambda: cc.col2im(_huge((1, 1, 50000 * 50000)), 50000, 1), "H*W"),
    # column matrix rows C*KH*KW = 2**16 * 2**8 * 2**8 = 2**32
    (lambda: cc.conv2d(_huge((1, 2**16, 256, 256)), _huge((1, 2**16, 256, 256))), "C\\*KH\\*KW"),
    (lambda: cc.im2col(_huge((1, 2**16, 256, 256)), 256), "C\\*KH\\*KW"),
    # N*K*OH*OW = 2**60 elements: beyond any 64-bit byte count
    (lambda: cc.conv2d(_huge((2**20, 1, 2**15, 2**15)), _huge((1024, 1, 1, 1))), "elements"),
])
def test_conv_row_sizes_overflowing_32_bits_refused_before_allocating(call, what, no_work):
    with pytest.raises((ValueError, MemoryError), match=what):
        call()


INT64_NEAR = [2**63 - 1, 2**63, 2**64 + 5, -(2**63), 2**62, 2**32, 2**31,
              np.int64(2**63 - 1), np.uint64(2**64 - 1)]


@pytest.mark.parametrize("value", INT64_NEAR, ids=[f"{type(v).__name__}({v})"
                                                   for v in INT64_NEAR])
@pytest.mark.parametrize("opt", ["stride", "padding", "dilation"])
def test_conv_row_pad_stride_kernel_near_2_63_is_value_or_overflow_error(opt, value, no_work):
    calls = [lambda: cc.conv2d(X, W, **{opt: value}),
             lambda: cc.conv2d(X, W, **{opt: (1, value)}),
             lambda: cc.conv2d_backward(np.ones((1, 2, 3, 3)), X, W, **{opt: value}),
             lambda: cc.im2col(X, 3, **{opt: value}),
             lambda: cc.im2col(X, value, **{opt: 1}),             # kernel near 2**63
             lambda: cc.im2col(X, (1, value)),
             lambda: cc.col2im(np.ones((1, 27, 9)), 5, 3, **{opt: value}),
             lambda: cc.col2im(np.ones((1, 27, 9)), value, 3),     # output size
             lambda: cc.col2im(np.ones((1, 27, 9)), 5, value)]
    for call in calls:
        with pytest.raises((ValueError, OverflowError)):
            call()


def _reference_pattern_check(y, ref):
    y = np.asarray(y, np.float64)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(ref))
    np.testing.assert_array_equal(np.isneginf(y), np.isneginf(ref))


@pytest.mark.parametrize("strategy", ["", "tiles", "batched", "winograd", "direct"])
@pytest.mark.parametrize("groups", [1, 3])          # 3: depthwise, its own C path
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("where", ["x", "w", "both"])
def test_conv_row_nan_inf_give_the_float64_reference_pattern(dtype, where, groups, strategy,
                                                             rng, monkeypatch):
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", strategy)
    x = rng.standard_normal((2, 3, 9, 8))
    w = rng.standard_normal((6, 3 // groups, 3, 3))
    if where in ("x", "both"):
        x[0, 0, 2, 3] = np.nan
        x[0, 1, 6, 1] = np.inf
        x[1, 2, 4, 4] = -np.inf
        x[1, 0, 0, 0] = np.inf      # in a corner: also seen through the padding
    if where in ("w", "both"):
        w[1, 0, 1, 1] = np.inf
        w[2, -1, 0, 2] = np.nan     # an edge tap: meets the zero padding
        w[5, 0, 2, 0] = -np.inf
    x, w = x.astype(dtype), w.astype(dtype)
    for opts in (dict(padding=1), dict(stride=2, dilation=2, padding=2), dict()):
        y = cc.conv2d(x, w, groups=groups, **opts)
        with np.errstate(invalid="ignore"):      # inf - inf in the reference itself
            ref = conv2d_naive(x, w, None, groups=groups,
                               **{k: (v, v) for k, v in opts.items()})
        _reference_pattern_check(y, ref)
        fin = np.isfinite(ref)
        assert fin.any()
        np.testing.assert_allclose(y[fin], ref[fin], rtol=1e-4, atol=1e-4)
    # 1x1 (the GEMM-only path), im2col copies them exactly
    y = cc.conv2d(x, w[:, :, :1, :1], groups=groups)
    with np.errstate(invalid="ignore"):
        _reference_pattern_check(y, conv2d_naive(x, w[:, :, :1, :1], groups=groups))
    cols = cc.im2col(x, 3, padding=1)
    np.testing.assert_array_equal(np.isnan(cols[:, :, :]), np.isnan(
        np.lib.stride_tricks.sliding_window_view(
            np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3)
        ).transpose(0, 1, 4, 5, 2, 3).reshape(2, 27, 72)))


class _FPEnv:
    """x86-64 glibc: the x87 control word and MXCSR control bits, via fegetenv."""

    def __init__(self):
        self.libm = None
        if sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64"):
            name = ctypes.util.find_library("m")
            if name:
                self.libm = ctypes.CDLL(name)

    def control(self):
        if self.libm is None:
            return None
        buf = (ctypes.c_uint8 * 64)()
        assert self.libm.fegetenv(buf) == 0
        raw = bytes(buf)
        cw = int.from_bytes(raw[0:2], "little")
        mxcsr = int.from_bytes(raw[28:32], "little")
        return cw, mxcsr & ~0x3F    # drop the sticky exception flags (bits 0-5)


def _fp_behaviour():
    """Denormal handling and rounding as NumPy sees them (FTZ/DAZ/rounding probe)."""
    t32 = np.array([1e-39, 3e-42], np.float32)
    t64 = np.array([1e-310, 5e-320])
    return ((t32 * np.float32(0.5)).tolist(), (t32 + np.float32(0)).tolist(),
            (t64 * 0.5).tolist(), (t64 / 3).tolist(),
            (np.float64(1) + np.float64(2.0**-53) * 1.5).item(),
            (np.float32(1) / np.float32(3)).item())


@pytest.mark.parametrize("dtype, tiny", [(np.float32, 1e-40), (np.float64, 1e-310)])
def test_conv_row_denormal_weights_leave_fpu_flags_as_found(dtype, tiny, rng):
    env = _FPEnv()
    before_env, before = env.control(), _fp_behaviour()
    x = rng.standard_normal((2, 4, 16, 16)).astype(dtype)
    w = (rng.standard_normal((8, 4, 3, 3)) * tiny).astype(dtype)
    assert np.all(np.abs(w[w != 0]) < np.finfo(dtype).tiny)     # really subnormal
    y = cc.conv2d(x, w, padding=1)
    dy = rng.standard_normal(y.shape).astype(dtype)
    cc.conv2d_backward(dy, x, w, padding=1)
    cc.col2im(cc.im2col(w, 2), (3, 3), 2)
    assert env.control() == before_env
    assert _fp_behaviour() == before
    # denormals were computed, not flushed: the result is the (tiny, non-zero) reference
    ref = conv2d_naive(x, w, None, padding=(1, 1))
    assert np.count_nonzero(y) > 0.9 * y.size
    bound = conv2d_naive(np.abs(x), np.abs(w), None, padding=(1, 1))
    ulp = np.finfo(dtype).smallest_subnormal
    assert np.all(np.abs(y - ref) <= 2 * 37 * (np.finfo(dtype).eps * bound + ulp))


def test_fp_probe_detects_a_changed_rounding_mode():
    """The probe above can fail: switching the rounding mode changes what it sees."""
    env = _FPEnv()
    if env.libm is None:
        pytest.skip("fegetenv probe needs x86-64 Linux")
    before, before_b = env.control(), _fp_behaviour()
    FE_UPWARD = 0x800
    old = env.libm.fegetround()
    env.libm.fesetround(FE_UPWARD)
    try:
        changed, changed_b = env.control(), _fp_behaviour()
    finally:
        env.libm.fesetround(old)
    assert changed != before and changed_b != before_b
    assert env.control() == before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_row_backward_with_overlapping_windows_identical_for_every_thread_count(
        dtype, rng):
    x = rng.standard_normal((5, 6, 23, 19)).astype(dtype)
    w = rng.standard_normal((8, 3, 5, 4)).astype(dtype)
    opts = dict(stride=1, padding=2, dilation=(2, 1), groups=2)
    dy = rng.standard_normal(cc.conv2d(x, w, **opts).shape).astype(dtype)
    saved = cc.get_num_threads()
    try:
        cc.set_num_threads(1)
        want = cc.conv2d_backward(dy, x, w, **opts)
        for n in (1, 2, 3, 4, 7):
            cc.set_num_threads(n)
            for _ in range(3):
                for got, ref in zip(cc.conv2d_backward(dy, x, w, **opts), want):
                    np.testing.assert_array_equal(got, ref, err_msg=f"{n} threads")
    finally:
        cc.set_num_threads(saved)


@pytest.mark.parametrize("dy_shape", [(1, 2, 3, 4), (1, 3, 3, 3), (2, 2, 3, 3), (2, 3, 3),
                                      (1, 2, 3, 3, 1), (18,), ()])
def test_conv_row_grad_output_of_wrong_shape_is_value_error(dy_shape, no_work):
    with pytest.raises(ValueError, match=r"grad_output must have shape \(1, 2, 3, 3\) "
                                         r"\(the conv2d output\), got"):
        cc.conv2d_backward(np.ones(dy_shape), X, W)
    with pytest.raises(ValueError, match=r"grad_output must have shape \(2, 3, 3\)"):
        cc.conv2d_backward(np.ones((1, 2, 3, 3)), X[0], W)


# ---- Pooling ----------------------------------------------------------------------

from reference.pool import avg_pool_naive, max_pool_naive  # noqa: E402

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


# ---- Layers, weights and data files ------------------------------------------------

@pytest.fixture
def nn():
    return pytest.importorskip("convcore.nn")


@pytest.fixture
def data():
    return pytest.importorskip("convcore.data")


@pytest.mark.parametrize("kwargs, exc", [
    (dict(out_channels=0), ValueError), (dict(out_channels=-2), ValueError),
    (dict(in_channels=0), ValueError),
    (dict(kernel_size=0), ValueError), (dict(kernel_size=-1), ValueError),
    (dict(kernel_size=2.5), TypeError), (dict(kernel_size=True), TypeError),
    (dict(kernel_size=(3, 3, 3)), ValueError), (dict(kernel_size="3"), TypeError),
    (dict(stride=0), ValueError), (dict(padding=-1), ValueError),
    (dict(groups=2), ValueError), (dict(out_channels=2.0), TypeError),
])
def test_layers_row_conv2d_constructor_refuses_bad_arguments(nn, kwargs, exc):
    args = dict(in_channels=3, out_channels=4, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(exc):
        nn.Conv2d(**args)


def test_layers_row_numpy_integers_are_accepted(nn):
    conv = nn.Conv2d(np.int64(3), np.int32(4), (np.int16(3), np.uint8(2)), stride=np.int64(2),
                     padding=np.int64(1))
    assert conv.weight.data.shape == (4, 3, 3, 2)
    assert conv(np.zeros((1, 3, 6, 6), np.float32)).shape == (1, 4, 3, 4)


def _module_cases(nn):
    yield "Conv2d", nn.Conv2d(3, 4, 3, padding=1, rng=0), (2, 3, 6, 6)
    yield "Linear", nn.Linear(5, 3, rng=0), (2, 5)
    yield "MaxPool2d", nn.MaxPool2d(2), (2, 3, 6, 6)
    yield "AvgPool2d", nn.AvgPool2d(3, 2, 1), (2, 3, 6, 6)
    yield "AdaptiveAvgPool2d", nn.AdaptiveAvgPool2d(2), (2, 3, 6, 6)
    yield "ReLU", nn.ReLU(), (2, 3, 4)
    yield "BatchNorm2d", nn.BatchNorm2d(3), (2, 3, 4, 4)
    yield "Sequential", nn.Sequential(nn.Conv2d(3, 4, 3, rng=1), nn.ReLU(), nn.Flatten(),
                                      nn.Linear(4 * 4 * 4, 2, rng=2)), (2, 3, 6, 6)


def test_layers_row_backward_before_forward_is_runtime_error(nn):
    for name, module, shape in _module_cases(nn):
        with pytest.raises(RuntimeError, match="before forward"):
            module.backward(np.ones(shape, np.float32))


def test_layers_row_backward_twice_after_one_forward_gives_identical_results(nn):
    rng = np.random.default_rng(0)
    for name, module, shape in _module_cases(nn):
        x = rng.standard_normal(shape).astype(np.float32)
        y = module(x)
        g = rng.standard_normal(y.shape).astype(np.float32)
        grads0 = {k: p.grad.copy() for k, p in module.named_parameters()}
        g1 = module.backward(g)
        grads1 = {k: p.grad.copy() for k, p in module.named_parameters()}
        g2 = module.backward(g)
        np.testing.assert_array_equal(g1, g2, err_msg=name)
        for k, p in module.named_parameters():   # the same increment, accumulated (+=)
            np.testing.assert_array_equal(p.grad - grads1[k], grads1[k] - grads0[k],
                                          err_msg=f"{name}.{k}")


class _Boom:
    """Unpickling this would run code: it writes a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_weights_row_object_array_is_value_error_and_never_unpickled(nn, tmp_path):
    marker = tmp_path / "ran"
    path = str(tmp_path / "evil.npz")
    obj = np.empty(1, dtype=object)
    obj[0] = _Boom(str(marker))
    np.savez(path, weight=obj)              # the plain writer pickles object arrays
    with pytest.raises(ValueError, match="object array"):
        nn.load_state_dict_file(path, {"weight": np.zeros(1)})
    with pytest.raises(ValueError):
        nn.save_state_dict({"weight": obj}, str(tmp_path / "out.npz"))
    assert not marker.exists()


def _npz_with_header(path, key, shape, dtype="<f4", payload=b"\0" * 64):
    """An .npz whose member's header claims `shape`, followed by `payload` bytes."""
    import zipfile
    header = {"descr": dtype, "fortran_order": False, "shape": tuple(shape)}
    from numpy.lib import format as npformat
    import io
    buf = io.BytesIO()
    npformat.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(key + ".npy", buf.getvalue() + payload)


@pytest.mark.parametrize("shape", [(2**40, 2**20), (2**31, 8), (4, 2**62), (3, 3, 3, 3)])
def test_weights_row_header_claiming_a_huge_shape_is_value_error_before_allocating(
        nn, tmp_path, shape):
    import tracemalloc
    path = str(tmp_path / "huge.npz")
    _npz_with_header(path, "weight", shape)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="weight"):
            nn.load_state_dict_file(path, {"weight": np.zeros((8, 3, 3, 3), np.float32)})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20


def test_weights_row_header_matching_but_member_short_is_value_error(nn, tmp_path):
    path = str(tmp_path / "short.npz")
    _npz_with_header(path, "weight", (8, 3, 3, 3), payload=b"\0" * 100)   # needs 864
    with pytest.raises(ValueError, match="truncated"):
        nn.load_state_dict_file(path, {"weight": np.zeros((8, 3, 3, 3), np.float32)})


def test_weights_row_truncated_file_is_value_error_naming_the_file(nn, tmp_path):
    conv = nn.Conv2d(3, 8, 3, rng=0)
    path = str(tmp_path / "w.npz")
    nn.save_state_dict(conv.state_dict(), path)
    raw = open(path, "rb").read()
    for cut in (0, 10, len(raw) // 3, len(raw) // 2, len(raw) - 30, len(raw) - 1):
        bad = str(tmp_path / f"cut{cut}.npz")
        with open(bad, "wb") as f:
            f.write(raw[:cut])
        with pytest.raises(ValueError, match=f"cut{cut}.npz"):
            nn.load_state_dict_file(bad, conv.state_dict())


def test_weights_row_missing_extra_wrong_keys_listed_in_one_value_error(nn, tmp_path):
    conv = nn.Conv2d(3, 8, 3, rng=0)
    expected = conv.state_dict()
    path = str(tmp_path / "mixed.npz")
    nn.save_state_dict({"weight": np.zeros((8, 3, 5, 5), np.float32),       # wrong shape
                        "extra.thing": np.zeros(2, np.float32)}, path)      # extra; bias missing
    with pytest.raises(ValueError) as err:
        nn.load_state_dict_file(path, expected)
    msg = str(err.value)
    assert "weight" in msg and "bias" in msg and "extra.thing" in msg
    nn.save_state_dict({"weight": expected["weight"].astype(np.float64),
                        "bias": expected["bias"].astype(np.float64)}, path)
    with pytest.raises(ValueError) as err:
        nn.load_state_dict_file(path, expected)
    assert "weight" in str(err.value) and "bias" in str(err.value)
    with pytest.raises(ValueError) as err:
        conv.load_state_dict({"weight": np.zeros((8, 3, 3, 3), np.float64)})
    assert "weight" in str(err.value) and "bias" in str(err.value)


def _idx(arr, magic_type=0x08):
    import struct
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return bytes([0, 0, magic_type, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) \
        + arr.tobytes()


def _write(path, payload, gz=False):
    import gzip
    with open(path, "wb") as f:
        f.write(gzip.compress(payload, mtime=0) if gz else payload)
    return str(path)


@pytest.fixture
def idx_pair(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 4, 5)).astype(np.uint8)
    labels = np.array([0, 3, 9, 1, 1, 2], np.uint8)
    return images, labels


def test_data_row_idx_wrong_magic_is_value_error_even_under_python_O(data, tmp_path, idx_pair):
    images, labels = idx_pair
    lab = _write(tmp_path / "l", _idx(labels))
    cases = {
        "twice-gzipped": _write(tmp_path / "a.gz", __import__("gzip").compress(
            __import__("gzip").compress(_idx(images))), gz=False),
        "bad magic": _write(tmp_path / "b", b"\x12\x34" + _idx(images)[2:]),
        "labels as images": lab,
        "wrong element type": _write(tmp_path / "c", _idx(images, 0x0D)),
    }
    for name, path in cases.items():
        with pytest.raises(ValueError, match=os.path.basename(path)):
            data.read_idx_pair(path, lab)
    with pytest.raises(ValueError):                       # images given as labels
        data.read_idx_pair(_write(tmp_path / "i", _idx(images)),
                           _write(tmp_path / "i2", _idx(images)))
    # plain `if`, not `assert`: the same checks hold with python -O
    code = ("import sys\nfrom convcore.data import read_idx_pair\n"
            "for p in sys.argv[2:]:\n"
            "    try:\n        read_idx_pair(p, sys.argv[1])\n"
            "    except ValueError:\n        continue\n"
            "    sys.exit('accepted ' + p)\n")
    import subprocess
    # (conftest points the children's PYTHONPATH at the convcore under test:
    # the installed one in CI, the in-place build in a checkout)
    res = subprocess.run([sys.executable, "-O", "-c", code, lab] + list(cases.values()),
                         capture_output=True, text=True, env=dict(os.environ))
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("gz", [False, True])
def test_data_row_idx_payload_short_count_mismatch_label_range_are_value_errors(
        data, tmp_path, idx_pair, gz):
    import tracemalloc
    images, labels = idx_pair
    img, lab = _idx(images), _idx(labels)
    ok_i, ok_l = _write(tmp_path / "i", img, gz), _write(tmp_path / "l", lab, gz)
    x, y = data.read_idx_pair(ok_i, ok_l)
    np.testing.assert_array_equal(x.reshape(images.shape), images)
    short = _write(tmp_path / "short", img[:-7], gz)
    with pytest.raises(ValueError, match="short"):
        data.read_idx_pair(short, ok_l)
    fewer = _write(tmp_path / "fewer", _idx(labels[:-1]), gz)
    with pytest.raises(ValueError, match="fewer"):
        data.read_idx_pair(ok_i, fewer)
    bad = labels.copy()
    bad[3] = 10
    with pytest.raises(ValueError, match="out of range"):
        data.read_idx_pair(ok_i, _write(tmp_path / "range", _idx(bad), gz))
    # a header claiming 4e9 images: refused against the file size, nothing allocated
    import struct
    huge = _write(tmp_path / "huge", bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**32 - 1, 28,
                                                                      28) + b"\0" * 100, gz)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="huge"):
            data.read_idx_pair(huge, ok_l)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20


def test_data_row_truncated_gz_is_value_error_naming_the_file(data, tmp_path, idx_pair):
    import gzip
    images, labels = idx_pair
    lab = _write(tmp_path / "l.gz", _idx(labels), gz=True)
    raw = gzip.compress(_idx(images), mtime=0)
    for cut in (5, 12, len(raw) // 2, len(raw) - 9, len(raw) - 1):
        p = _write(tmp_path / f"t{cut}.gz", raw[:cut])
        with pytest.raises(ValueError, match=f"t{cut}.gz"):
            data.read_idx_pair(p, lab)


def test_data_row_malicious_cifar_pickle_is_refused_and_not_run(data, tmp_path):
    import pickle
    marker = tmp_path / "ran"
    evil = {b"data": _Boom(str(marker)), b"labels": [1]}
    for protocol in (2, 4):
        p = str(tmp_path / f"batch{protocol}")
        with open(p, "wb") as f:
            pickle.dump(evil, f, protocol=protocol)
        with pytest.raises(ValueError):
            data.read_cifar_python(p)
    assert not marker.exists()
    # well-formed pickles with unexpected shapes/types: ValueError
    for obj in ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]},
                {b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]},
                {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]},
                {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 11]},
                [1, 2, 3], {b"labels": [0]}):
        p = str(tmp_path / "odd")
        with open(p, "wb") as f:
            pickle.dump(obj, f, protocol=2)
        with pytest.raises(ValueError):
            data.read_cifar_python(p)


def test_data_row_tar_with_parent_paths_is_refused_or_contained(data, tmp_path):
    import io
    import tarfile
    archive = str(tmp_path / "evil.tar.gz")
    with tarfile.open(archive, "w:gz") as tf:
        for name in ("../escaped.txt", "ok/../../escaped2.txt", "/abs_escaped.txt"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tf.addfile(info, io.BytesIO(b"bad"))
    dest = tmp_path / "dest"
    dest.mkdir()
    try:
        data.extract_tar(archive, str(dest))
    except (ValueError, RuntimeError, tarfile.TarError):
        pass
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "escaped2.txt").exists()
    assert not os.path.exists("/abs_escaped.txt")
