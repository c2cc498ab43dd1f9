"""The edge-case catalogue (docs/contributing.rst), convolution rows: inputs that
broke other convolution libraries.

Each test names the row it covers and checks the exact behaviour the catalog
asks for (VE = ValueError, TE = TypeError, messages naming expected and given).
"""
import ctypes
import ctypes.util
import platform
import sys

import numpy as np
import pytest

import convcore as cc
from reference.conv import conv2d_backward_naive, conv2d_naive

X = np.ones((1, 3, 5, 5))
W = np.ones((2, 3, 3, 3))


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


@pytest.mark.parametrize("strategy", ["", "tiles", "batched", "winograd", "direct", "regions"])
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
