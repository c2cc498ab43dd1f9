"""Max, average and adaptive average pooling against independent references."""
import itertools

import numpy as np
import pytest

import convcore as cc
from convcore._ops import pool as pool_ops
from reference.pool import (adaptive_avg_backward_naive, adaptive_avg_naive,
                            avg_pool_backward_naive, avg_pool_naive, max_pool_backward_naive,
                            max_pool_naive, pool_out)

NOTES_PATCH = np.array([[200, 150, 150], [100, 50, 100], [25, 25, 10]], dtype=np.float64)
DTYPES = [np.float32, np.float64]


# ---------------------------------------------------------------- helpers
def layouts(a):
    """The same values in several memory layouts."""
    yield "contiguous", np.ascontiguousarray(a)
    yield "fortran", np.asfortranarray(a)
    yield "transposed", np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1] + 1,), a.dtype)
    big[..., 1::2] = a
    yield "sliced", big[..., 1::2]
    yield "reversed", np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    ro = np.array(a)
    ro.setflags(write=False)
    yield "read-only", ro


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def same_bits(a, b):
    """Identical arrays, NaN payloads and signed zeros included."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def avg_bound(x, k, s, p, ceil_mode, cip, div):
    """Sound float32 bound for a window sum of at most KH*KW terms, then a division."""
    terms = pair(k)[0] * pair(k)[1] + 1
    return terms * 2.0**-24 * avg_pool_naive(np.abs(x), pair(k), pair(s), pair(p), ceil_mode,
                                             cip, div) + 1e-30


@pytest.fixture
def restore_threads():
    n = cc.get_num_threads()
    yield
    cc.set_num_threads(n)


@pytest.fixture
def generic(monkeypatch):
    """Runs the C core's generic loops instead of its fast paths."""
    monkeypatch.setattr(pool_ops, "_FORCE_GENERIC", True)


# ---------------------------------------------------------------- the notes
def test_notes_max_over_the_patch_is_200():
    y, idx = cc.max_pool2d(NOTES_PATCH[None, None], 3, return_indices=True)
    assert y.shape == (1, 1, 1, 1) and y.item() == 200.0 and idx.item() == 0


def test_notes_average_over_the_patch_is_90():
    assert cc.avg_pool2d(NOTES_PATCH[None, None], 3).item() == 90.0
    assert cc.adaptive_avg_pool2d(NOTES_PATCH[None, None], 1).item() == 90.0


def test_pooling_has_no_parameters():
    # the functional API takes no weights: the output depends on x and the window alone
    x = NOTES_PATCH[None].astype(np.float32)
    assert cc.max_pool2d(x, 3).dtype == np.float32
    assert cc.max_pool2d(x, 3).item() == 200.0


# ---------------------------------------------------------------- max: exact references
MAX_GRID = [
    (k, s, p, d, ceil)
    for k in [1, 2, 3, (2, 3), (3, 1)]
    for s in [None, 1, 2, (3, 2)]
    for p in [0, 1, (1, 0)]
    for d in [1, 2, (1, 2)]
    for ceil in [False, True]
]


def valid_max(shape, k, s, p, d):
    k, p, d = pair(k), pair(p), pair(d)
    s = k if s is None else pair(s)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        return False
    return all(size + 2 * pp >= dd * (kk - 1) + 1
               for size, kk, pp, dd in zip(shape[2:], k, p, d))


def windows_hold_input(shape, k, s, p, d, ceil):
    k, p, d = pair(k), pair(p), pair(d)
    s = k if s is None else pair(s)
    for size, kk, ss, pp, dd in zip(shape[2:], k, s, p, d):
        for o in range(pool_out(size, kk, ss, pp, dd, ceil)):
            if not any(0 <= o * ss - pp + a * dd < size for a in range(kk)):
                return False
    return True


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_matches_reference_for_every_option(dtype, rng):
    shape = (1, 2, 7, 8)
    x = rng.standard_normal(shape).astype(dtype)
    ties = rng.integers(-2, 3, size=shape).astype(dtype)     # many ties
    checked = 0
    for k, s, p, d, ceil in MAX_GRID:
        if not valid_max(shape, k, s, p, d) or not windows_hold_input(shape, k, s, p, d, ceil):
            continue
        ss = pair(k) if s is None else pair(s)
        for data in (x, ties):
            y, idx = cc.max_pool2d(data, k, s, p, d, ceil, return_indices=True)
            ry, ridx = max_pool_naive(data, pair(k), ss, pair(p), pair(d), ceil)
            assert same_bits(y, ry), (k, s, p, d, ceil)
            assert np.array_equal(idx, ridx), (k, s, p, d, ceil)
            assert same_bits(cc.max_pool2d(data, k, s, p, d, ceil), ry)
            gy = rng.standard_normal(y.shape).astype(dtype)
            gx = cc.max_pool2d_backward(gy, idx, data.shape)
            assert same_bits(gx, max_pool_backward_naive(gy, ridx, data.shape))
        checked += 1
    assert checked > 250


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (2, 2, 1), (3, 2, 0), (3, 2, 1), ((2, 3), 2, 1),
                                   (3, 1, 1), (3, 1, 0), ((3, 2), 1, 1)])
@pytest.mark.parametrize("ceil", [False, True])
def test_max_pool_fast_paths_give_the_generic_bits(dtype, k, s, p, ceil, rng, monkeypatch):
    """2x2/2, 3x3/2 and 3x3/1 have fast paths; they must give the generic loop's bits,
    NaN, -inf and ties included, on sizes that exercise their border handling."""
    for H, W in [(9, 11), (10, 12), (5, 300), (300, 7)]:
        x = rng.integers(-3, 4, size=(2, 3, H, W)).astype(dtype)
        x[rng.random(x.shape) < 0.02] = np.nan
        x[rng.random(x.shape) < 0.05] = -np.inf
        x[rng.random(x.shape) < 0.05] = -0.0
        fast = cc.max_pool2d(x, k, s, p, ceil_mode=ceil, return_indices=True)
        fast_values = cc.max_pool2d(x, k, s, p, ceil_mode=ceil)
        monkeypatch.setattr(pool_ops, "_FORCE_GENERIC", True)
        slow = cc.max_pool2d(x, k, s, p, ceil_mode=ceil, return_indices=True)
        monkeypatch.setattr(pool_ops, "_FORCE_GENERIC", False)
        assert same_bits(fast[0], slow[0]) and same_bits(fast_values, slow[0])
        assert np.array_equal(fast[1], slow[1])
    ry, ridx = max_pool_naive(x[:1, :1], pair(k), pair(s), pair(p), (1, 1), ceil)
    assert same_bits(fast[0][:1, :1], ry) and np.array_equal(fast[1][:1, :1], ridx)


@pytest.mark.parametrize("k, s", [(2, 2), (3, 2), (3, 1)])
def test_max_pool_rows_of_many_small_planes(k, s, rng):
    """Without padding every window takes the row kernel, and the output rows
    of all planes are cut into tasks that cross plane boundaries (LeNet's
    16 x 10 x 10 maps at batch 64): against the loops, indices included."""
    x = rng.standard_normal((64, 16, 10, 10)).astype(np.float32)
    x[rng.random(x.shape) < 0.01] = np.nan
    y, idx = cc.max_pool2d(x, k, s, return_indices=True)
    ry, ridx = max_pool_naive(x, pair(k), pair(s), (0, 0), (1, 1), False)
    assert same_bits(y, ry) and np.array_equal(idx, ridx)
    assert same_bits(cc.max_pool2d(x, k, s), ry)


@pytest.mark.parametrize("k, s, p", [(3, 1, 1), (3, 2, 1), (2, 2, 1)])
@pytest.mark.parametrize("ceil", [False, True])
def test_max_pool_padded_planes_point_inside_when_a_window_is_all_minus_inf(k, s, p, ceil,
                                                                            monkeypatch):
    """Windows at the border run on a copy of the plane padded with -inf; a
    window whose real values are all -inf must still point at its first
    element inside the plane, as the generic loop does (and as PyTorch)."""
    x = np.full((2, 3, 7, 9), -np.inf, np.float32)
    x[0, 0, 3, 4] = 1.0
    x[1, 2, 0, 0] = np.nan
    x[1, 1, 6, 8] = -0.0
    fast = cc.max_pool2d(x, k, s, p, ceil_mode=ceil, return_indices=True)
    monkeypatch.setattr(pool_ops, "_FORCE_GENERIC", True)
    slow = cc.max_pool2d(x, k, s, p, ceil_mode=ceil, return_indices=True)
    assert same_bits(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])
    ry, ridx = max_pool_naive(x, pair(k), pair(s), pair(p), (1, 1), ceil)
    assert same_bits(fast[0], ry) and np.array_equal(fast[1], ridx)
    layer = cc.nn.MaxPool2d(k, s, p, ceil_mode=ceil)      # int32 indices, same values
    np.testing.assert_array_equal(layer(x), ry)
    g = layer.backward(np.ones(ry.shape, np.float32))
    np.testing.assert_array_equal(g, cc.max_pool2d_backward(np.ones(ry.shape, np.float32),
                                                            ridx, x.shape))


def test_max_pool_backward_matches_central_differences(rng):
    # distinct values, step far below a quarter of the smallest gap
    shape = (2, 3, 9, 8)
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64) * 0.01
    for k, s, p, d in [(2, 2, 0, 1), (3, 2, 1, 1), (3, 1, 1, 1), (2, 1, 1, 2)]:
        y, idx = cc.max_pool2d(x, k, s, p, d, return_indices=True)
        g = rng.standard_normal(y.shape)
        gx = cc.max_pool2d_backward(g, idx, x.shape)
        for _ in range(3):
            v = rng.standard_normal(shape)
            h = 1e-5
            fd = (np.vdot(cc.max_pool2d(x + h * v, k, s, p, d), g)
                  - np.vdot(cc.max_pool2d(x - h * v, k, s, p, d), g)) / (2 * h)
            assert abs(fd - np.vdot(gx, v)) <= 1e-7 * (1 + abs(fd))


def test_max_pool_backward_routes_ties_to_one_input():
    x = np.array([[[[1.0, 1.0], [1.0, 8.0]]]])
    y, idx = cc.max_pool2d(x, 2, 1, 1, return_indices=True)
    assert idx[0, 0].tolist() == [[0, 0, 1], [0, 3, 3], [2, 3, 3]]
    gx = cc.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    assert gx[0, 0].tolist() == [[3.0, 1.0], [1.0, 4.0]]
    assert gx.sum() == y.size          # each gradient reached exactly one input


# ---------------------------------------------------------------- the edge-case catalogue
@pytest.mark.parametrize("kwargs,match", [
    (dict(kernel_size=0), "kernel_size"), (dict(kernel_size=-1), "kernel_size"),
    (dict(kernel_size=(2, 0)), "kernel_size"), (dict(kernel_size=2, stride=0), "stride"),
    (dict(kernel_size=2, stride=(1, -1)), "stride"),
    (dict(kernel_size=2, dilation=0), "dilation"),
    (dict(kernel_size=2, padding=-1), "padding"), (dict(kernel_size=2, padding=(0, -1)), "padding"),
])
def test_bad_window_arguments_raise_value_error(kwargs, match):
    x = np.zeros((1, 1, 6, 6))
    with pytest.raises(ValueError, match=match):
        cc.max_pool2d(x, **kwargs)
    if "dilation" not in kwargs:            # average pooling has no dilation
        with pytest.raises(ValueError, match=match):
            cc.avg_pool2d(x, **kwargs)
        with pytest.raises(ValueError, match=match):
            cc.avg_pool2d_backward(np.zeros((1, 1, 3, 3)), x.shape, **kwargs)


@pytest.mark.parametrize("k,p", [(2, 2), (3, 2), ((3, 2), (1, 2)), (1, 1)])
def test_padding_over_half_the_kernel_raises(k, p):
    x = np.zeros((1, 1, 8, 8))
    with pytest.raises(ValueError, match="half the kernel"):
        cc.max_pool2d(x, k, padding=p)
    with pytest.raises(ValueError, match="half the kernel"):
        cc.avg_pool2d(x, k, padding=p)


def test_window_of_padding_only_raises_instead_of_a_bad_index():
    # k=2, d=5, p=1 on H=4: taps at -1 and 4 both miss the input
    with pytest.raises(ValueError, match="only padding"):
        cc.max_pool2d(np.zeros((1, 1, 4, 4)), 2, padding=1, dilation=5)


@pytest.mark.parametrize("call", [
    lambda x: cc.max_pool2d(x, 4), lambda x: cc.avg_pool2d(x, 4),
    lambda x: cc.max_pool2d(x, 3, dilation=2), lambda x: cc.adaptive_avg_pool2d(x, 0),
    lambda x: cc.adaptive_avg_pool2d(x, (2, 0)), lambda x: cc.adaptive_avg_pool2d(x, -1),
])
def test_output_size_not_positive_raises(call):
    with pytest.raises(ValueError):
        call(np.zeros((1, 1, 3, 3)))


def test_ceil_mode_no_window_starts_in_the_padding():
    assert cc.max_pool2d(np.zeros((1, 1, 6, 7)), 1, 2, ceil_mode=True).shape == (1, 1, 3, 4)
    assert cc.avg_pool2d(np.zeros((1, 1, 6, 7)), 1, 2, ceil_mode=True).shape == (1, 1, 3, 4)


def test_ceil_mode_width_5_kernel_2_stride_2_pad_1_gives_width_3():
    x = np.arange(5.0).reshape(1, 1, 1, 5)
    assert cc.max_pool2d(x, (1, 2), (1, 2), (0, 1), ceil_mode=True).shape[-1] == 3
    assert cc.avg_pool2d(x, (1, 2), (1, 2), (0, 1), ceil_mode=True).shape[-1] == 3
    assert cc.max_pool2d(x, (1, 2), (1, 2), (0, 1), ceil_mode=True).ravel().tolist() == [0, 2, 4]


def test_avg_ceil_overhang_is_not_in_the_divisor():
    x = np.arange(1.0, 6.0).reshape(1, 1, 1, 5)
    assert cc.avg_pool2d(x, (1, 2), (1, 2), ceil_mode=True).ravel().tolist() == [1.5, 3.5, 5.0]
    x = np.arange(49.0).reshape(1, 1, 7, 7)
    y = cc.avg_pool2d(x, 2, 3, ceil_mode=True)
    assert y[0, 0, -1].tolist() == [42.5, 45.5, 48.0]


@pytest.mark.parametrize("bad", [0, -3])
def test_divisor_override_must_be_positive(bad):
    with pytest.raises(ValueError, match="divisor_override"):
        cc.avg_pool2d(np.zeros((1, 1, 4, 4)), 2, divisor_override=bad)
    with pytest.raises(ValueError, match="divisor_override"):
        cc.avg_pool2d_backward(np.zeros((1, 1, 2, 2)), (1, 1, 4, 4), 2, divisor_override=bad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_wins_the_window_and_gets_the_gradient(dtype):
    x = np.array([1.0, np.nan, 5.0, 6.0], dtype).reshape(1, 1, 1, 4)
    y, idx = cc.max_pool2d(x, (1, 4), return_indices=True)
    assert np.isnan(y.item()) and idx.item() == 1
    assert cc.max_pool2d_backward(np.ones_like(y), idx, x.shape).ravel().tolist() == [0, 1, 0, 0]
    x = np.full((1, 1, 2, 2), np.nan, dtype)
    y, idx = cc.max_pool2d(x, 2, return_indices=True)
    # every element is NaN; a later NaN replaces an earlier one (PyTorch's rule)
    assert np.isnan(y.item()) and idx.item() == 3
    gx = cc.max_pool2d_backward(np.full_like(y, 2.0), idx, x.shape)
    assert gx.ravel().tolist() == [0, 0, 0, 2]
    assert np.isnan(cc.max_pool2d(x, 2).item())


@pytest.mark.parametrize("dtype", DTYPES)
def test_window_of_minus_inf_gives_minus_inf_and_an_index_inside_it(dtype):
    x = np.full((1, 1, 4, 4), -np.inf, dtype)
    y, idx = cc.max_pool2d(x, 2, padding=1, return_indices=True)
    assert np.all(y == -np.inf)
    assert idx[0, 0].tolist() == [[0, 1, 3], [4, 5, 7], [12, 13, 15]]
    gx = cc.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    assert gx.sum() == 9
    y, idx = cc.max_pool2d(x, 2, return_indices=True)
    assert idx[0, 0].tolist() == [[0, 2], [8, 10]]


@pytest.mark.parametrize("dtype", DTYPES)
def test_padding_acts_as_minus_inf_not_zero(dtype):
    x = np.full((1, 1, 2, 2), -1.0, dtype)
    y = cc.max_pool2d(x, 2, 2, 1)
    assert y.shape == (1, 1, 2, 2) and np.all(y == -1.0)
    y, idx = cc.max_pool2d(x, 2, 2, 1, return_indices=True)
    assert idx[0, 0].tolist() == [[0, 1], [2, 3]]


def test_empty_batch_gives_empty_outputs():
    x = np.zeros((0, 3, 8, 8), np.float32)
    y, idx = cc.max_pool2d(x, 2, return_indices=True)
    assert y.shape == (0, 3, 4, 4) and idx.shape == (0, 3, 4, 4) and idx.dtype == np.int64
    assert cc.max_pool2d_backward(y, idx, x.shape).shape == x.shape
    assert cc.avg_pool2d(x, 3, 2, 1).shape == (0, 3, 4, 4)
    assert cc.avg_pool2d_backward(np.zeros((0, 3, 4, 4), np.float32), x.shape, 3, 2, 1).shape \
        == x.shape
    assert cc.adaptive_avg_pool2d(x, (2, 3)).shape == (0, 3, 2, 3)
    assert cc.adaptive_avg_pool2d_backward(np.zeros((0, 3, 2, 3), np.float32), x.shape).shape \
        == x.shape


# ---------------------------------------------------------------- type and shape errors
@pytest.mark.parametrize("x", [np.zeros((1, 1, 4, 4), np.int64), np.zeros((1, 1, 4, 4), np.float16),
                               np.zeros((1, 1, 4, 4), np.complex128)])
def test_non_float_input_raises_type_error(x):
    for call in (lambda: cc.max_pool2d(x, 2), lambda: cc.avg_pool2d(x, 2),
                 lambda: cc.adaptive_avg_pool2d(x, 1)):
        with pytest.raises(TypeError, match="float32 or float64"):
            call()


def test_non_array_input_raises_type_error():
    with pytest.raises(TypeError):
        cc.max_pool2d([[[1.0]]], 1)


@pytest.mark.parametrize("shape", [(4, 4), (1, 1, 1, 4, 4), (1, 0, 4, 4), (1, 1, 0, 4)])
def test_bad_input_shape_raises_value_error(shape):
    x = np.zeros(shape)
    for call in (lambda: cc.max_pool2d(x, 1), lambda: cc.avg_pool2d(x, 1),
                 lambda: cc.adaptive_avg_pool2d(x, 1)):
        with pytest.raises(ValueError, match="x must"):
            call()


def test_bad_flags_and_kernel_types_raise_type_error():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(TypeError, match="kernel_size"):
        cc.max_pool2d(x, 2.5)
    with pytest.raises(TypeError, match="ceil_mode"):
        cc.max_pool2d(x, 2, ceil_mode="yes")
    with pytest.raises(TypeError, match="count_include_pad"):
        cc.avg_pool2d(x, 2, count_include_pad=None)
    with pytest.raises(TypeError, match="divisor_override"):
        cc.avg_pool2d(x, 2, divisor_override=2.0)


def test_max_pool_backward_rejects_bad_indices_and_shapes():
    x = np.zeros((1, 2, 4, 4))
    y, idx = cc.max_pool2d(x, 2, return_indices=True)
    g = np.ones_like(y)
    for bad in (16, -1, 2**40):
        broken = idx.copy()
        broken[0, 1, 1, 0] = bad
        with pytest.raises(ValueError, match="indices must lie in"):
            cc.max_pool2d_backward(g, broken, x.shape)
    with pytest.raises(TypeError, match="indices"):
        cc.max_pool2d_backward(g, idx.astype(np.float64), x.shape)
    with pytest.raises(ValueError, match="shape of grad_output"):
        cc.max_pool2d_backward(g, idx[..., :1], x.shape)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        cc.max_pool2d_backward(g, idx, (1, 3, 4, 4))
    with pytest.raises(ValueError, match="input_shape"):
        cc.max_pool2d_backward(g, idx, (2, 4, 4, 4, 1))
    with pytest.raises(TypeError, match="input_shape"):
        cc.max_pool2d_backward(g, idx, 16)


def test_avg_and_adaptive_backward_reject_a_wrong_grad_output_shape():
    with pytest.raises(ValueError, match="grad_output must have shape"):
        cc.avg_pool2d_backward(np.zeros((1, 1, 3, 3)), (1, 1, 4, 4), 2)
    with pytest.raises(ValueError, match="grad_output must be 4-D"):
        cc.avg_pool2d_backward(np.zeros((1, 2, 2)), (1, 1, 4, 4), 2)
    with pytest.raises(ValueError, match="grad_output must have"):
        cc.adaptive_avg_pool2d_backward(np.zeros((1, 2, 2, 2)), (1, 1, 4, 4))
    with pytest.raises(TypeError, match="float32 or float64"):
        cc.adaptive_avg_pool2d_backward(np.zeros((1, 1, 2, 2), np.int32), (1, 1, 4, 4))


# ---------------------------------------------------------------- average: references
AVG_GRID = [
    (k, s, p, ceil, cip, div)
    for k in [1, 2, 3, (2, 3)]
    for s in [None, 1, 2, (3, 2)]
    for p in [0, 1, (1, 0)]
    for ceil in [False, True]
    for cip in [True, False]
    for div in [None, 1, 5]
]


@pytest.mark.parametrize("dtype", DTYPES)
def test_avg_pool_matches_reference_for_every_option(dtype, rng):
    shape = (1, 2, 7, 8)
    x = rng.standard_normal(shape).astype(dtype)
    checked = 0
    for k, s, p, ceil, cip, div in AVG_GRID:
        if not valid_max(shape, k, s, p, 1):
            continue
        ss = pair(k) if s is None else pair(s)
        y = cc.avg_pool2d(x, k, s, p, ceil, cip, div)
        ref = avg_pool_naive(x, pair(k), ss, pair(p), ceil, cip, div)
        assert y.dtype == dtype and y.shape == ref.shape
        if dtype == np.float64:
            np.testing.assert_allclose(y, ref, rtol=1e-13, atol=1e-15)
        else:
            assert np.all(np.abs(y - ref) <= avg_bound(x, k, ss, p, ceil, cip, div))
        g = rng.standard_normal(y.shape).astype(dtype)
        gx = cc.avg_pool2d_backward(g, x.shape, k, s, p, ceil, cip, div)
        gref = avg_pool_backward_naive(g, x.shape, pair(k), ss, pair(p), ceil, cip, div)
        tol = 1e-13 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(gx, gref, rtol=tol, atol=tol)
        checked += 1
    assert checked > 300


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ceil", [False, True])
@pytest.mark.parametrize("div", [None, 3])
def test_avg_pool_fast_path_gives_the_generic_bits(dtype, ceil, div, rng, monkeypatch):
    for H, W in [(9, 11), (10, 12), (4, 301)]:
        for p in (0, 1):
            x = rng.standard_normal((2, 3, H, W)).astype(dtype)
            y = cc.avg_pool2d(x, 2, 2, p, ceil, True, div)
            g = rng.standard_normal(y.shape).astype(dtype)
            gx = cc.avg_pool2d_backward(g, x.shape, 2, 2, p, ceil, True, div)
            monkeypatch.setattr(pool_ops, "_FORCE_GENERIC", True)
            assert same_bits(y, cc.avg_pool2d(x, 2, 2, p, ceil, True, div))
            assert same_bits(gx, cc.avg_pool2d_backward(g, x.shape, 2, 2, p, ceil, True, div))
            monkeypatch.setattr(pool_ops, "_FORCE_GENERIC", False)


@pytest.mark.parametrize("case", [(2, 2, 0, False, True, None), (3, 2, 1, True, False, None),
                                  (3, 1, 1, False, True, 4), ((2, 3), (1, 2), (1, 1), True, True, None)])
def test_avg_pool_backward_adjoint_and_central_differences(case, rng):
    k, s, p, ceil, cip, div = case
    x = rng.standard_normal((2, 3, 9, 10))
    y = cc.avg_pool2d(x, k, s, p, ceil, cip, div)
    g = rng.standard_normal(y.shape)
    gx = cc.avg_pool2d_backward(g, x.shape, k, s, p, ceil, cip, div)
    lhs, rhs = np.vdot(y, g), np.vdot(x, gx)
    assert abs(lhs - rhs) <= 1e-12 * (abs(lhs) + np.abs(y).sum())
    v = rng.standard_normal(x.shape)
    h = 1e-3
    fd = (np.vdot(cc.avg_pool2d(x + h * v, k, s, p, ceil, cip, div), g)
          - np.vdot(cc.avg_pool2d(x - h * v, k, s, p, ceil, cip, div), g)) / (2 * h)
    assert abs(fd - np.vdot(gx, v)) <= 1e-9 * (1 + abs(fd))


# ---------------------------------------------------------------- adaptive
@pytest.mark.parametrize("dtype", DTYPES)
def test_adaptive_avg_pool_matches_reference(dtype, rng):
    for H, W, OH, OW in [(7, 8, 3, 5), (5, 5, 5, 5), (4, 6, 7, 9), (9, 7, 1, 1), (6, 6, 2, 3),
                         (1, 10, 1, 3), (13, 11, 4, 4)]:
        x = rng.standard_normal((2, 3, H, W)).astype(dtype)
        y = cc.adaptive_avg_pool2d(x, (OH, OW))
        ref = adaptive_avg_naive(x, OH, OW)
        g = rng.standard_normal(y.shape).astype(dtype)
        gx = cc.adaptive_avg_pool2d_backward(g, x.shape)
        gref = adaptive_avg_backward_naive(g, x.shape)
        if dtype == np.float64:
            np.testing.assert_allclose(y, ref, rtol=1e-13, atol=1e-14)
            np.testing.assert_allclose(gx, gref, rtol=1e-13, atol=1e-14)
        else:
            terms = (-(-H // OH) + 1) * (-(-W // OW) + 1) + 1
            bound = terms * 2.0**-24 * adaptive_avg_naive(np.abs(x), OH, OW) + 1e-30
            assert np.all(np.abs(y - ref) <= bound)
            np.testing.assert_allclose(gx, gref, rtol=1e-5, atol=1e-6)


def test_adaptive_output_size_none_keeps_the_input_size(rng):
    x = rng.standard_normal((2, 5, 6))
    assert cc.adaptive_avg_pool2d(x, (None, 3)).shape == (2, 5, 3)
    assert cc.adaptive_avg_pool2d(x, (2, None)).shape == (2, 2, 6)
    np.testing.assert_allclose(cc.adaptive_avg_pool2d(x, (None, None)), x, rtol=0, atol=0)


def test_global_average_is_the_plane_mean(rng):
    for H, W in [(7, 7), (1, 1), (3, 17), (32, 33)]:
        x = rng.standard_normal((3, 4, H, W))
        np.testing.assert_allclose(cc.adaptive_avg_pool2d(x, 1)[..., 0, 0], x.mean(axis=(2, 3)),
                                   rtol=1e-13, atol=1e-15)
        g = rng.standard_normal((3, 4, 1, 1))
        np.testing.assert_array_equal(cc.adaptive_avg_pool2d_backward(g, x.shape),
                                      np.broadcast_to(g / (H * W), x.shape))


@pytest.mark.parametrize("sizes", [(7, 8, 3, 5), (4, 6, 7, 9), (9, 9, 1, 1), (10, 7, 4, 3)])
def test_adaptive_backward_adjoint_and_central_differences(sizes, rng):
    H, W, OH, OW = sizes
    x = rng.standard_normal((2, 3, H, W))
    y = cc.adaptive_avg_pool2d(x, (OH, OW))
    g = rng.standard_normal(y.shape)
    gx = cc.adaptive_avg_pool2d_backward(g, x.shape)
    assert abs(np.vdot(y, g) - np.vdot(x, gx)) <= 1e-12 * (1 + np.abs(y).sum())
    v = rng.standard_normal(x.shape)
    h = 1e-3
    fd = (np.vdot(cc.adaptive_avg_pool2d(x + h * v, (OH, OW)), g)
          - np.vdot(cc.adaptive_avg_pool2d(x - h * v, (OH, OW)), g)) / (2 * h)
    assert abs(fd - np.vdot(gx, v)) <= 1e-9 * (1 + abs(fd))


# ---------------------------------------------------------------- layouts, unbatched, threads
ALL_FORWARD = [
    lambda x: cc.max_pool2d(x, 3, 2, 1, return_indices=True),
    lambda x: cc.max_pool2d(x, 2),
    lambda x: cc.max_pool2d(x, (2, 3), 1, (1, 0), 2, True),
    lambda x: cc.avg_pool2d(x, 3, 2, 1, True, False),
    lambda x: cc.avg_pool2d(x, 2),
    lambda x: cc.adaptive_avg_pool2d(x, (3, 4)),
    lambda x: cc.adaptive_avg_pool2d(x, 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
def test_any_layout_gives_identical_results(dtype, rng):
    x = rng.standard_normal((2, 3, 9, 10)).astype(dtype)
    for fwd in ALL_FORWARD:
        ref = fwd(np.ascontiguousarray(x))
        for name, xl in layouts(x):
            out = fwd(xl)
            for a, b in zip(ref if isinstance(ref, tuple) else (ref,),
                            out if isinstance(out, tuple) else (out,)):
                assert same_bits(a, b), name
    bx = np.broadcast_to(x[:1], x.shape)           # read-only, stride 0
    assert same_bits(cc.max_pool2d(bx, 2), cc.max_pool2d(np.ascontiguousarray(bx), 2))
    y, idx = cc.max_pool2d(x, 2, return_indices=True)
    g = rng.standard_normal(y.shape).astype(dtype)
    ref = cc.max_pool2d_backward(g, idx, x.shape)
    for (_, gl), (_, il) in zip(layouts(g), layouts(idx)):
        assert same_bits(cc.max_pool2d_backward(gl, il, x.shape), ref)
        assert same_bits(cc.avg_pool2d_backward(gl, x.shape, 2),
                         cc.avg_pool2d_backward(g, x.shape, 2))
        assert same_bits(cc.adaptive_avg_pool2d_backward(gl, x.shape),
                         cc.adaptive_avg_pool2d_backward(g, x.shape))


def test_unbatched_input_matches_batched(rng):
    x = rng.standard_normal((3, 9, 10))
    for fwd in ALL_FORWARD:
        a, b = fwd(x), fwd(x[None])
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert same_bits(u, v[0])
    y, idx = cc.max_pool2d(x, 2, return_indices=True)
    assert same_bits(cc.max_pool2d_backward(y, idx, x.shape),
                     cc.max_pool2d_backward(y[None], idx[None], (1,) + x.shape)[0])
    assert same_bits(cc.avg_pool2d_backward(y, x.shape, 2),
                     cc.avg_pool2d_backward(y[None], (1,) + x.shape, 2)[0])
    assert same_bits(cc.adaptive_avg_pool2d_backward(y, x.shape),
                     cc.adaptive_avg_pool2d_backward(y[None], (1,) + x.shape)[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_results_identical_for_every_thread_count(dtype, rng, restore_threads):
    # large enough (> 4 MiB moved) that the C core really uses a team of threads
    x = rng.standard_normal((4, 16, 129, 131)).astype(dtype)
    x[rng.random(x.shape) < 0.01] = np.nan
    cases = [dict(k=3, s=2, p=1), dict(k=2, s=2, p=0), dict(k=3, s=1, p=1),
             dict(k=2, s=1, p=1)]
    results = []
    for n in (1, 2, 3, 1, 2):
        cc.set_num_threads(n)
        out = []
        for c in cases:
            y, idx = cc.max_pool2d(x, c["k"], c["s"], c["p"], return_indices=True)
            out += [y, idx, cc.max_pool2d_backward(y + 1, idx, x.shape)]
            a = cc.avg_pool2d(x, c["k"], c["s"], c["p"], True, False)
            out += [a, cc.avg_pool2d_backward(a, x.shape, c["k"], c["s"], c["p"], True, False)]
        for os_ in [(5, 7), 1, (30, 40)]:
            a = cc.adaptive_avg_pool2d(x, os_)
            out += [a, cc.adaptive_avg_pool2d_backward(a, x.shape)]
        results.append(out)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert same_bits(a, b)


# ---------------------------------------------------------------- torch parity
def random_pool_configs(rng, count):
    out = []
    while len(out) < count:
        k = tuple(int(v) for v in rng.integers(1, 5, size=2))
        s = None if rng.random() < 0.3 else tuple(int(v) for v in rng.integers(1, 4, size=2))
        p = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)
        d = tuple(int(v) for v in rng.integers(1, 3, size=2))
        ceil = bool(rng.random() < 0.5)
        H, W = (int(v) for v in rng.integers(1, 13, size=2))
        shape = (int(rng.integers(0, 3)), int(rng.integers(1, 4)), H, W)
        if not valid_max(shape, k, s, p, d) or not windows_hold_input(shape, k, s, p, d, ceil):
            continue
        out.append((shape, k, s, p, d, ceil))
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_and_gradient_match_torch(dtype):
    torch = pytest.importorskip("torch", reason="torch not installed: parity skipped")
    F = torch.nn.functional
    rng = np.random.default_rng(11)
    for shape, k, s, p, d, ceil in random_pool_configs(rng, 80):
        x = rng.integers(-4, 5, size=shape).astype(dtype)      # ties on purpose
        if rng.random() < 0.3:
            x[rng.random(shape) < 0.1] = np.nan
        tx = torch.tensor(x, requires_grad=True)
        ty, tidx = F.max_pool2d(tx, k, s, p, d, ceil, return_indices=True)
        y, idx = cc.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
        assert same_bits(y, ty.detach().numpy())
        assert np.array_equal(idx, tidx.numpy())
        g = rng.standard_normal(y.shape).astype(dtype)
        ty.backward(torch.from_numpy(g))
        gx = cc.max_pool2d_backward(g, idx, x.shape)
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-6 if dtype == np.float32 else 1e-14,
                                   atol=1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_avg_pool_and_gradient_match_torch(dtype):
    torch = pytest.importorskip("torch", reason="torch not installed: parity skipped")
    F = torch.nn.functional
    rng = np.random.default_rng(12)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-14)
    for shape, k, s, p, _, ceil in random_pool_configs(rng, 80):
        cip = bool(rng.random() < 0.5)
        div = None if rng.random() < 0.6 else int(rng.integers(1, 7))
        x = rng.standard_normal(shape).astype(dtype)
        tx = torch.tensor(x, requires_grad=True)
        ty = F.avg_pool2d(tx, k, s, p, ceil, cip, div)
        y = cc.avg_pool2d(x, k, s, p, ceil, cip, div)
        np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
        g = rng.standard_normal(y.shape).astype(dtype)
        ty.backward(torch.from_numpy(g))
        gx = cc.avg_pool2d_backward(g, x.shape, k, s, p, ceil, cip, div)
        np.testing.assert_allclose(gx, tx.grad.numpy(), **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adaptive_avg_pool_and_gradient_match_torch(dtype):
    torch = pytest.importorskip("torch", reason="torch not installed: parity skipped")
    F = torch.nn.functional
    rng = np.random.default_rng(13)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-14)
    for _ in range(60):
        shape = (int(rng.integers(0, 3)), int(rng.integers(1, 4))) + \
            tuple(int(v) for v in rng.integers(1, 15, size=2))
        os_ = tuple(int(v) for v in rng.integers(1, 9, size=2))
        x = rng.standard_normal(shape).astype(dtype)
        tx = torch.tensor(x, requires_grad=True)
        ty = F.adaptive_avg_pool2d(tx, os_)
        y = cc.adaptive_avg_pool2d(x, os_)
        np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
        g = rng.standard_normal(y.shape).astype(dtype)
        ty.backward(torch.from_numpy(g))
        np.testing.assert_allclose(cc.adaptive_avg_pool2d_backward(g, x.shape),
                                   tx.grad.numpy(), **tol)


def test_network_sized_pools_match_torch():
    torch = pytest.importorskip("torch", reason="torch not installed: parity skipped")
    F = torch.nn.functional
    rng = np.random.default_rng(14)
    for shape, k, s, p in [((2, 16, 56, 56), 2, 2, 0), ((2, 24, 55, 55), 3, 2, 0),
                           ((2, 8, 112, 112), 3, 2, 1), ((1, 32, 28, 28), 3, 1, 1)]:
        x = rng.standard_normal(shape).astype(np.float32)
        tx = torch.from_numpy(x)
        y, idx = cc.max_pool2d(x, k, s, p, return_indices=True)
        ty, tidx = F.max_pool2d(tx, k, s, p, return_indices=True)
        assert same_bits(y, ty.numpy()) and np.array_equal(idx, tidx.numpy())
        np.testing.assert_allclose(cc.avg_pool2d(x, k, s, p), F.avg_pool2d(tx, k, s, p).numpy(),
                                   rtol=1e-6, atol=1e-6)
    x = rng.standard_normal((4, 64, 7, 7)).astype(np.float32)
    np.testing.assert_allclose(cc.adaptive_avg_pool2d(x, 1),
                               F.adaptive_avg_pool2d(torch.from_numpy(x), 1).numpy(),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adaptive_pool_of_a_one_by_one_plane_matches_torch(dtype, rng):
    """A 1x1 plane pooled to 7x7 (VGG's classifier input on 32x32 images) and
    to uneven sizes: every window is the one element (-0 becomes +0, NaN and
    Inf pass through); its gradient sums the output's in order."""
    torch = pytest.importorskip("torch", reason="torch not installed: parity skipped")
    F = torch.nn.functional
    for shape, os_ in [((4, 37, 1, 1), (7, 7)), ((2, 3, 1, 1), (2, 5)), ((3, 1, 1), (1, 4))]:
        x = rng.standard_normal(shape).astype(dtype)
        flat = x.reshape(-1)
        flat[0], flat[1], flat[-1] = -0.0, np.nan, np.inf
        y = cc.adaptive_avg_pool2d(x, os_)
        ty = F.adaptive_avg_pool2d(torch.from_numpy(x), os_).numpy()
        np.testing.assert_array_equal(y, ty)
        np.testing.assert_array_equal(y, np.broadcast_to(x + 0, y.shape))
        assert not np.signbit(y.reshape(-1)[:os_[0] * os_[1]]).any()
        g = rng.standard_normal(y.shape).astype(dtype)
        gx = cc.adaptive_avg_pool2d_backward(g, x.shape)
        tx = torch.tensor(np.nan_to_num(x), requires_grad=True)
        F.adaptive_avg_pool2d(tx, os_).backward(torch.from_numpy(g))
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(gx, tx.grad.numpy(), **tol)
        shape4 = x.shape if x.ndim == 4 else (1,) + x.shape
        np.testing.assert_allclose(gx, adaptive_avg_backward_naive(g.reshape(shape4[:2] + os_),
                                                                   shape4).reshape(x.shape),
                                   **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adaptive_pool_to_the_input_size_is_the_identity_with_positive_zero(dtype, rng):
    """One element per window: the average is that element, as a sum started
    from +0 gives it (-0 becomes +0; NaN and Inf pass through)."""
    x = rng.standard_normal((2, 3, 5, 4)).astype(dtype)
    x[0, 0, 0, 0], x[0, 1, 2, 3], x[1, 2, 4, 0] = -0.0, np.nan, -np.inf
    y = cc.adaptive_avg_pool2d(x, (5, 4))
    np.testing.assert_array_equal(y, x)
    assert not np.signbit(y[0, 0, 0, 0])
    g = rng.standard_normal(x.shape).astype(dtype)
    g[1, 1, 1, 1] = -0.0
    gx = cc.adaptive_avg_pool2d_backward(g, x.shape)
    np.testing.assert_array_equal(gx, g)
    assert not np.signbit(gx[1, 1, 1, 1])
