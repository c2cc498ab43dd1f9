"""Batch norm and ReLU in the C core (src_c/norm.c) against naive float64
loops per channel written here, central differences, and themselves under
other thread counts."""
import math

import numpy as np
import pytest

import convcore as cc
from convcore._core import _norm

EPS32 = 2.0 ** -24
DTYPES = [np.float64, np.float32]

# (N, C, ...) shapes: N = 1, H = W = 1, C = 1, 2-D, 3-D, odd sizes, planes on
# both sides of the short-plane limit (32) and the chunk length (2048), more
# rows than one chunk holds, channel counts around the group size (16).
SHAPES = [
    (2, 3, 4, 5), (1, 3, 5, 7), (7, 4, 1, 1), (5, 1, 3, 3), (9, 6), (1000, 3), (4, 17, 31),
    (3, 5, 32), (2, 2, 2047), (2, 2, 2048), (3, 2, 2049), (1, 2, 100, 50), (130, 3, 7, 7),
    (70, 35, 33), (4, 33, 3, 5),
]


@pytest.fixture(autouse=True)
def _threads():
    n = cc.get_num_threads()
    yield
    cc.set_num_threads(n)


# ------------------------------------------------------------ references
def bn_forward_ref(x, w, b, rm, rv, training, eps):
    """y (float64), the statistics used and the per-element error scale
    |xhat w| + |b|, channel by channel."""
    x = np.asarray(x, dtype=np.float64)
    N, C = x.shape[:2]
    xr = x.reshape(N, C, -1)
    y, scale = np.empty_like(xr), np.empty_like(xr)
    means, varis = np.empty(C), np.empty(C)
    for c in range(C):
        vals = xr[:, c, :].ravel()
        if training:
            m = math.fsum(vals) / vals.size
            v = math.fsum((vals - m) ** 2) / vals.size
        else:
            m, v = float(rm[c]), float(rv[c])
        wc = 1.0 if w is None else float(w[c])
        bc = 0.0 if b is None else float(b[c])
        y[:, c, :] = (xr[:, c, :] - m) / math.sqrt(v + eps) * wc + bc
        scale[:, c, :] = np.abs((xr[:, c, :] - m) / math.sqrt(v + eps) * wc) + abs(bc)
        means[c], varis[c] = m, v
    return y.reshape(x.shape), means, varis, scale.reshape(x.shape)


def bn_backward_ref(dy, x, w, rm, rv, training, eps):
    """(dx, dw, db) in float64 and the per-element error scale of dx."""
    x = np.asarray(x, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    N, C = x.shape[:2]
    xr, gr = x.reshape(N, C, -1), dy.reshape(N, C, -1)
    dx, scale = np.empty_like(xr), np.empty_like(xr)
    dw, db = np.empty(C), np.empty(C)
    for c in range(C):
        vals, g = xr[:, c, :], gr[:, c, :]
        M = vals.size
        if training:
            m = math.fsum(vals.ravel()) / M
            v = math.fsum(((vals - m) ** 2).ravel()) / M
        else:
            m, v = float(rm[c]), float(rv[c])
        inv = 1.0 / math.sqrt(v + eps)
        xhat = (vals - m) * inv
        wc = 1.0 if w is None else float(w[c])
        db[c] = math.fsum(g.ravel())
        dw[c] = math.fsum((g * xhat).ravel())
        if training:
            dx[:, c, :] = wc * inv * (g - db[c] / M - xhat * dw[c] / M)
            scale[:, c, :] = abs(wc * inv) * (np.abs(g) + abs(db[c] / M)
                                              + np.abs(xhat * dw[c] / M))
        else:
            dx[:, c, :] = wc * inv * g
            scale[:, c, :] = abs(wc * inv * g)
    return dx.reshape(x.shape), dw, db, scale.reshape(x.shape)


def _inputs(rng, shape, dtype, offset=1.5):
    C = shape[1]
    x = (rng.standard_normal(shape) * 2 + offset).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    w = (rng.standard_normal(C) + 0.5).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    rm = rng.standard_normal(C).astype(dtype)
    rv = (rng.random(C) + 0.5).astype(dtype)
    return x, dy, w, b, rm, rv


def _check_close(got, ref, scale, dtype, k=8):
    """|got - ref| <= k ulp of the terms' magnitude (float32), or 1e-12 of it."""
    unit = k * EPS32 if dtype == np.float32 else 1e-12
    bound = unit * (np.abs(scale) + np.abs(ref).max() * 1e-3 + 1e-30)
    err = np.abs(np.asarray(got, dtype=np.float64) - ref)
    assert np.all(err <= bound), f"max excess {np.max(err - bound)}, max err {err.max()}"


# --------------------------------------------------------- batch norm forward
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_forward_matches_naive_loops(rng, dtype, shape, training, affine):
    x, _, w, b, rm, rv = _inputs(rng, shape, dtype)
    if not affine:
        w = b = None
    rm0, rv0 = rm.copy(), rv.copy()
    y = cc.batch_norm(x, rm, rv, w, b, training=training, momentum=0.1, eps=1e-5)
    assert y.dtype == dtype and y.shape == x.shape and y.flags.c_contiguous
    ref, mean, var, scale = bn_forward_ref(x, w, b, rm0, rv0, training, 1e-5)
    _check_close(y, ref, scale, dtype)
    if training:
        # the running statistics: the same update as before, in x's dtype
        M = x.size // shape[1]
        unit = 8 * EPS32 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(rm, 0.9 * rm0 + 0.1 * mean, rtol=unit, atol=unit)
        np.testing.assert_allclose(rv, 0.9 * rv0 + 0.1 * var * M / (M - 1), rtol=unit,
                                   atol=unit)
        assert rm.dtype == dtype and rv.dtype == dtype
    else:
        np.testing.assert_array_equal(rm, rm0)
        np.testing.assert_array_equal(rv, rv0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_forward_without_running_stats_in_training(rng, dtype):
    x, _, w, b, _, _ = _inputs(rng, (6, 5, 4, 3), dtype)
    y = cc.batch_norm(x, None, None, w, b, training=True)
    ref, _, _, scale = bn_forward_ref(x, w, b, None, None, True, 1e-5)
    _check_close(y, ref, scale, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_statistics_survive_a_large_mean(rng, dtype):
    # mean / std = 1e4: a one-pass sum of squares in float32 would lose every digit
    x = (rng.standard_normal((64, 3, 9, 9)) + 1e4).astype(dtype)
    rm, rv = np.zeros(3, dtype), np.ones(3, dtype)
    y = cc.batch_norm(x, rm, rv, training=True, momentum=1.0, eps=0.0)
    ref, mean, var, scale = bn_forward_ref(x, None, None, None, None, True, 0.0)
    M = x.size // 3
    np.testing.assert_allclose(rm, mean, rtol=4 * EPS32 if dtype == np.float32 else 1e-14)
    np.testing.assert_allclose(rv, var * M / (M - 1), rtol=1e-5 if dtype == np.float32
                               else 1e-10)
    # float32: the mean (in double) and its rounding (folded into the shift)
    # cost nothing, y is good to a few ulp of |y|; float64: the mean itself is
    # known to a few ulp of |x| = 1e4 std
    err = np.abs(y - ref)
    if dtype == np.float32:
        assert np.all(err <= 8 * EPS32 * scale)
    else:
        assert np.all(err <= 16 * 2.0 ** -53 * (scale + np.abs(x) / np.sqrt(var.max())))


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_accepts_views_and_read_only_input(rng, dtype):
    x, _, w, b, rm, rv = _inputs(rng, (5, 6, 7, 4), dtype)
    base = cc.batch_norm(np.ascontiguousarray(x), None, None, w, b, training=True)
    for view in (x[:, :, :, ::-1], np.asfortranarray(x), x.transpose(0, 1, 3, 2)):
        got = cc.batch_norm(view, None, None, w, b, training=True)
        ref = cc.batch_norm(np.ascontiguousarray(view), None, None, w, b, training=True)
        np.testing.assert_array_equal(got, ref)
    ro = x.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(cc.batch_norm(ro, None, None, w, b, training=True), base)
    np.testing.assert_array_equal(
        cc.batch_norm(x, rm[::1], rv, w[::-1][::-1], b, training=False),
        cc.batch_norm(x, rm.copy(), rv.copy(), w.copy(), b.copy(), training=False))


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_eval_on_an_empty_batch(dtype):
    x = np.empty((0, 3, 4, 4), dtype)
    rm, rv = np.zeros(3, dtype), np.ones(3, dtype)
    y = cc.batch_norm(x, rm, rv, training=False)
    assert y.shape == x.shape and y.dtype == dtype
    gx, gw, gb = cc.batch_norm_backward(np.empty_like(x), x, rm, rv, training=False)
    assert gx.shape == x.shape
    np.testing.assert_array_equal(gw, np.zeros(3, dtype))
    np.testing.assert_array_equal(gb, np.zeros(3, dtype))
    # no channels at all
    z = np.empty(0, dtype)
    x0 = np.ones((2, 0, 3), dtype)
    assert cc.batch_norm(x0, z, z, training=False).shape == (2, 0, 3)
    assert [a.shape for a in cc.batch_norm_backward(x0, x0, z, z, training=False)] == [
        (2, 0, 3), (0,), (0,)]


# -------------------------------------------------------- batch norm backward
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_backward_matches_naive_loops(rng, dtype, shape, training, affine):
    x, dy, w, _, rm, rv = _inputs(rng, shape, dtype)
    if not affine:
        w = None
    gx, gw, gb = cc.batch_norm_backward(dy, x, rm, rv, w, training=training, eps=1e-5)
    assert gx.dtype == gw.dtype == gb.dtype == dtype
    assert gx.shape == x.shape and gw.shape == gb.shape == (shape[1],)
    rdx, rdw, rdb, scale = bn_backward_ref(dy, x, w, rm, rv, training, 1e-5)
    _check_close(gx, rdx, scale, dtype)
    M = x.size // shape[1]
    sums = np.abs(np.asarray(dy, np.float64)).reshape(shape[0], shape[1], -1)
    sums = sums.sum(axis=(0, 2))
    xh = np.abs(bn_forward_ref(x, None, None, rm, rv, training, 1e-5)[0])
    xsums = (np.abs(np.asarray(dy, np.float64)) * xh).reshape(shape[0], shape[1], -1)
    xsums = xsums.sum(axis=(0, 2))
    unit = 4 * EPS32 if dtype == np.float32 else 1e-13
    assert np.all(np.abs(gb - rdb) <= unit * sums + M * 1e-16 * sums)
    assert np.all(np.abs(gw - rdw) <= 2 * unit * xsums + M * 1e-16 * xsums + 1e-30)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(3, 2, 2, 3), (5, 3), (2, 2, 40)])
def test_batch_norm_backward_matches_central_differences(rng, training, affine, shape):
    x, g, w, b, rm, rv = _inputs(rng, shape, np.float64)
    if not affine:
        w = b = None

    def loss():
        return float(np.sum(cc.batch_norm(x, rm.copy(), rv.copy(), w, b,
                                          training=training) * g))

    def numeric(a, idx):
        flat = a.reshape(-1)
        out = []
        for i in idx:
            old = flat[i]
            flat[i] = old + 1e-6
            fp = loss()
            flat[i] = old - 1e-6
            fm = loss()
            flat[i] = old
            out.append((fp - fm) / 2e-6)
        return np.array(out)

    gx, gw, gb = cc.batch_norm_backward(g, x, rm, rv, w, training=training)
    idx = rng.choice(x.size, size=min(x.size, 25), replace=False)
    np.testing.assert_allclose(gx.reshape(-1)[idx], numeric(x, idx), atol=1e-6)
    if affine:
        np.testing.assert_allclose(gw, numeric(w, range(w.size)), atol=1e-6)
        np.testing.assert_allclose(gb, numeric(b, range(b.size)), atol=1e-6)
    else:
        # without affine parameters: the gradients of an affine (1, 0)
        grads = cc.batch_norm_backward(g, x, rm, rv, np.ones(shape[1]), training=training)
        for a, b1 in zip((gx, gw, gb), grads):
            np.testing.assert_array_equal(a, b1)


# ------------------------------------------------------------ thread counts
# Big enough that the kernels start a team (they stay on one thread below a
# couple of MiB moved): the chunked reductions must not notice.
THREAD_SHAPES = [(96, 40, 9, 9), (3, 5, 150, 150), (20000, 24), (200, 3, 30, 30)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", THREAD_SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_is_identical_for_every_thread_count(rng, dtype, shape, training):
    x, dy, w, b, rm, rv = _inputs(rng, shape, dtype)
    out = []
    for n in (1, 2):
        cc.set_num_threads(n)
        r1, v1 = rm.copy(), rv.copy()
        y = cc.batch_norm(x, r1, v1, w, b, training=training)
        grads = cc.batch_norm_backward(dy, x, rm, rv, w, training=training)
        out.append((y, r1, v1) + tuple(grads))
    for a, b2 in zip(*out):
        np.testing.assert_array_equal(a, b2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_is_identical_for_every_thread_count(rng, dtype):
    x = rng.standard_normal((3, 5, 211, 211)).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    out = []
    for n in (1, 2):
        cc.set_num_threads(n)
        out.append((cc.relu(x), cc.relu_backward(g, x)))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])
    np.testing.assert_array_equal(out[0][0], np.where(x > 0, x, 0))
    np.testing.assert_array_equal(out[0][1], np.where(x > 0, g, 0))


# --------------------------------------------------------------------- relu
SPECIAL = [np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, 1.5, -1.5, 5e-324, -5e-324]


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_propagates_nan_like_maximum(dtype):
    x = np.array(SPECIAL * 7, dtype=dtype).reshape(7, len(SPECIAL))
    y = cc.relu(x)
    ref = np.maximum(x, np.zeros((), dtype))
    assert y.dtype == dtype
    # same values, same NaN payloads and signs, zeros are +0
    np.testing.assert_array_equal(y.view(np.uint8), ref.view(np.uint8))
    assert not np.signbit(y[y == 0]).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_backward_is_exactly_zero_where_x_is_not_positive(dtype):
    x = np.array(SPECIAL, dtype=dtype)
    xs = np.repeat(x, len(SPECIAL))
    gs = np.tile(np.array(SPECIAL, dtype=dtype), len(SPECIAL))
    gx = cc.relu_backward(gs, xs)
    pos = xs > 0          # NaN > 0 is false: a NaN input gets a zero gradient
    np.testing.assert_array_equal(gx[~pos], np.zeros((~pos).sum(), dtype))
    assert not np.signbit(gx[~pos]).any()
    np.testing.assert_array_equal(gx[pos].view(np.uint8), gs[pos].view(np.uint8))


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_views_scalars_and_empty_arrays_keep_their_behaviour(rng, dtype):
    x = rng.standard_normal((4, 6, 5)).astype(dtype)
    g = rng.standard_normal((4, 6, 5)).astype(dtype)
    for xv, gv in ((x[:, ::2], g[:, ::2]), (x.T, g.T), (x, g.T.copy().T)):
        np.testing.assert_array_equal(cc.relu(xv), np.maximum(xv, 0))
        np.testing.assert_array_equal(cc.relu_backward(gv, xv), np.where(xv > 0, gv, 0))
    s = np.array(-2.0, dtype)
    assert cc.relu(s) == 0 and type(cc.relu(s)) is type(np.maximum(s, np.zeros((), dtype)))
    e = np.empty((0, 3), dtype)
    assert cc.relu(e).shape == (0, 3) and cc.relu_backward(e, e).shape == (0, 3)
    ro = x.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(cc.relu(ro), np.maximum(x, 0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [7, 2048, 2049, 3 * 4096 + 5])   # NumPy path and C core
@pytest.mark.parametrize("inplace", [False, True])
def test_relu_mask_pair_against_the_definition(rng, dtype, size, inplace):
    from convcore.backends import cpu
    x = rng.standard_normal(size).astype(dtype)
    x[: 3 * len(SPECIAL)] = np.array(SPECIAL * 3, dtype)[: min(size, 3 * len(SPECIAL))]
    a = x.copy()
    y, mask = cpu.relu_mask(a, inplace)
    assert (y is a) == inplace and mask.dtype == np.bool_ and mask.shape == x.shape
    ref = np.where((x > 0) | np.isnan(x), x, np.zeros((), dtype))
    np.testing.assert_array_equal(y.view(np.uint8), ref.view(np.uint8))
    np.testing.assert_array_equal(mask, x > 0)            # a NaN input is not positive
    if not inplace:
        np.testing.assert_array_equal(a.view(np.uint8), x.view(np.uint8))
    g = np.tile(np.array(SPECIAL, dtype), size // len(SPECIAL) + 1)[:size]
    g0 = g.copy()
    gx = cpu.relu_backward_mask(g, mask)
    np.testing.assert_array_equal(gx[~mask], np.zeros((~mask).sum(), dtype))
    assert not np.signbit(gx[~mask]).any()
    np.testing.assert_array_equal(gx[mask].view(np.uint8), g[mask].view(np.uint8))
    np.testing.assert_array_equal(g.view(np.uint8), g0.view(np.uint8))     # dy untouched
    # the pair agrees with relu / relu_backward on the same input
    np.testing.assert_array_equal(gx.view(np.uint8), cc.relu_backward(g, x).view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [7, 5000, 70001])
def test_relu_in_place_against_the_definition(rng, dtype, size):
    from convcore.backends import cpu
    x = rng.standard_normal(size).astype(dtype)
    x[: 3 * len(SPECIAL)] = np.array(SPECIAL * 3, dtype)[: min(size, 3 * len(SPECIAL))]
    ref = np.where((x > 0) | np.isnan(x), x, np.zeros((), dtype))
    a = x.copy()
    assert cpu.relu_inplace(a) is a
    np.testing.assert_array_equal(a.view(np.uint8), ref.view(np.uint8))   # -0 -> +0, NaN kept
    b = x.copy().reshape(-1, 1)[::2]                   # not contiguous: NumPy's maximum
    assert cpu.relu_inplace(b) is b
    np.testing.assert_array_equal(b.ravel(), ref[::2])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [7, 5000, 70001])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_residual_sum_in_place_against_the_definition(rng, dtype, size, threads):
    """A residual block's h = relu(h + s) and a += b, in place: bit for bit
    the element-wise float sums (NaN and Inf kept, -0 to +0 after the ReLU),
    for any thread count; views NumPy cannot hand the C core whole still
    give the definition."""
    from convcore.backends import cpu
    cc.set_num_threads(threads)
    h = rng.standard_normal(size).astype(dtype)
    s = rng.standard_normal(size).astype(dtype)
    k = min(size, 3 * len(SPECIAL))
    h[:k] = np.array(SPECIAL * 3, dtype)[:k]
    s[:k] = np.array(SPECIAL * 3, dtype)[::-1][:k]
    with np.errstate(invalid="ignore"):
        total = h + s
    ref = np.where((total > 0) | np.isnan(total), total, np.zeros((), dtype))
    a = h.copy()
    assert cpu.add_relu_inplace(a, s) is a
    np.testing.assert_array_equal(a.view(np.uint8), ref.view(np.uint8))
    a = h.copy()
    with np.errstate(invalid="ignore"):
        assert cpu.add_inplace(a, s) is a
    np.testing.assert_array_equal(a.view(np.uint8), total.view(np.uint8))
    # not contiguous, or the shortcut a view of the sum: NumPy's operators
    b = h.copy().reshape(-1, 1)[::2]
    with np.errstate(invalid="ignore"):
        assert cpu.add_relu_inplace(b, s[::2].reshape(-1, 1)) is b
    np.testing.assert_array_equal(b.ravel().view(np.uint8), ref[::2].copy().view(np.uint8))
    c = h.copy()
    with np.errstate(invalid="ignore"):
        cpu.add_inplace(c, c)
    np.testing.assert_array_equal(c.view(np.uint8), (h + h).view(np.uint8))


def test_residual_sum_bindings_refuse_overlap_and_short_buffers():
    x = np.arange(-5, 5, dtype=np.float32)
    for relu in (True, False):
        with pytest.raises(ValueError, match="overlap"):
            _norm.add(x[1:], x[:-1], relu, 1)
        with pytest.raises(ValueError):
            _norm.add(np.ones(10, np.float32), np.ones(9, np.float32), relu, 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 40, 9, 9), (1, 7, 30, 30), (5, 3, 2, 700)])
def test_relu_on_a_channel_slice_of_a_batch_against_the_definition(rng, dtype, shape):
    """A branch's slice of a concatenation (rows of an image's channels that
    lie apart): relu into it and relu_backward from it run the C core's
    row kernels, with the contiguous kernels' semantics -- NaN propagates
    and -0 becomes +0 forward, exactly 0 backward where x <= 0 even for a
    NaN or Inf gradient."""
    from convcore.backends import cpu
    N, c, H, W = shape
    x = rng.standard_normal(shape).astype(dtype)
    x.reshape(-1)[rng.integers(0, x.size, 40)] = rng.choice(SPECIAL, 40)
    big = np.full((N, c + 9, H, W), 7, dtype)
    out = big[:, 4:4 + c]
    assert cpu._rows(out) is not None and out.flags.c_contiguous == (N == 1)
    assert cpu.relu_into(x, out) is out
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    assert not np.signbit(out[out == 0]).any()
    assert (big[:, :4] == 7).all() and (big[:, 4 + c:] == 7).all()   # nothing outside it
    g = np.full(big.shape, 3, dtype)
    gv = g[:, 4:4 + c]
    gv[...] = rng.standard_normal(gv.shape)
    gv[0, 0, 0, :2] = (np.nan, np.inf)
    out[0, 0, 0, :2] = (-1, 0)
    gx = cc.relu_backward(gv, out)
    assert gx.flags.c_contiguous
    np.testing.assert_array_equal(gx, np.where(out > 0, gv, 0))
    assert not np.signbit(gx[out <= 0]).any()
    for n in (1, 2):                                   # the same bits on any thread count
        cc.set_num_threads(n)
        np.testing.assert_array_equal(cc.relu_backward(gv, out), gx)


def test_relu_row_bindings_refuse_rows_that_overlap_or_are_not_contiguous():
    a = np.zeros((4, 10), np.float32)
    over = np.lib.stride_tricks.as_strided(a, (4, 10), (4 * 5, 4))    # rows 5 apart, 10 long
    for bad in (over, a[::-1], a[:, ::2].repeat(1, axis=0)[:, :5].T.copy().T):
        out = np.empty(bad.shape, np.float32)
        with pytest.raises(ValueError):
            _norm.relu_forward_rows(bad, out, 1)
        with pytest.raises(ValueError):
            _norm.relu_backward_rows(out, bad, np.empty(bad.shape, np.float32), 1)
    _norm.relu_forward_rows(a[:, 2:7], a[:, 2:7].copy(), 1)        # rows 10 apart, 5 long


def test_relu_binding_refuses_overlapping_buffers():
    x = np.arange(-5, 5, dtype=np.float32)
    with pytest.raises(ValueError, match="overlaps"):
        _norm.relu_forward(x[1:], x[:-1], 1)
    _norm.relu_forward(x, x, 1)                        # the same buffer: in place
    np.testing.assert_array_equal(x, np.maximum(np.arange(-5, 5), 0))


def test_relu_mask_bindings_refuse_short_buffers():
    x = np.ones(10, np.float32)
    with pytest.raises(ValueError):
        _norm.relu_forward_mask(x, np.empty(10, np.float32), np.empty(9, np.uint8), 1)
    with pytest.raises(ValueError):
        _norm.relu_backward_mask(x, np.empty(10, np.uint8), np.empty(9, np.float32), 1)


# ----------------------------------------------------------------- bindings
def test_binding_refuses_a_short_workspace():
    x = np.ones((2, 3, 4))
    y = np.empty_like(x)
    e = np.empty(0)
    need = _norm.workspace_elems(2, 3, 4)
    assert need > 0
    with pytest.raises(ValueError, match="workspace"):
        _norm.batch_norm_forward(x, e, e, e, e, False, False, True, 1e-5, np.empty(need - 1),
                                 y, np.empty(3), np.empty(3), 1)
    with pytest.raises(ValueError, match="weight"):
        _norm.batch_norm_forward(x, np.ones(2), e, e, e, True, False, True, 1e-5,
                                 np.empty(need), y, np.empty(3), np.empty(3), 1)
    with pytest.raises(RuntimeError, match="rejected"):
        _norm.batch_norm_forward(x, e, e, e, e, False, False, True, -1.0, np.empty(need),
                                 y, np.empty(3), np.empty(3), 1)


# ------------------------------------------------------------------ PyTorch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(6, 5, 7, 3), (40, 9), (3, 4, 50)])
def test_batch_norm_and_relu_match_torch(rng, dtype, training, shape):
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    x, dy, w, b, rm, rv = _inputs(rng, shape, dtype)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    trm, trv = torch.tensor(rm), torch.tensor(rv)
    yt = tF.batch_norm(xt, trm, trv, wt, bt, training=training, momentum=0.1, eps=1e-5)
    yt.backward(torch.tensor(dy))
    crm, crv = rm.copy(), rv.copy()
    y = cc.batch_norm(x, crm, crv, w, b, training=training, momentum=0.1, eps=1e-5)
    gx, gw, gb = cc.batch_norm_backward(dy, x, rm, rv, w, training=training, eps=1e-5)
    for got, ref in ((y, yt), (crm, trm), (crv, trv), (gx, xt.grad), (gw, wt.grad),
                     (gb, bt.grad)):
        np.testing.assert_allclose(got, ref.detach().numpy(), **tol)
    xt = torch.tensor(x, requires_grad=True)
    tF.relu(xt).backward(torch.tensor(dy))
    np.testing.assert_array_equal(cc.relu(x), tF.relu(torch.tensor(x)).numpy())
    np.testing.assert_array_equal(cc.relu_backward(dy, x), xt.grad.numpy())


# ------------------------------------------- one channel at a time (large maps)
# Training batch norm on maps of 2048+ values whose whole array is more than
# L2 holds runs one channel at a time (statistics, coefficients, output while
# the channel's planes are in cache): the same chunks merged in the same order
# as the three-phase path, so the definition's values and the same bits for
# every thread count.  (4, 16, 96, 96) float32: 2.4 MB, 147 kB a channel.
FUSED_SHAPES = [(4, 16, 96, 96), (5, 7, 150, 149), (1, 6, 300, 300)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", FUSED_SHAPES)
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_one_channel_at_a_time_matches_naive_loops(rng, dtype, shape, affine):
    x, dy, w, b, rm, rv = _inputs(rng, shape, dtype)
    if not affine:
        w = b = None
    out = []
    for n in (1, 2, 3):
        cc.set_num_threads(n)
        r1, v1 = rm.copy(), rv.copy()
        y = cc.batch_norm(x, r1, v1, w, b, training=True, eps=1e-5)
        out.append((y, r1, v1) + tuple(cc.batch_norm_backward(dy, x, None, None, w,
                                                              training=True, eps=1e-5)))
    for got in out[1:]:
        for a, b2 in zip(got, out[0]):
            np.testing.assert_array_equal(a, b2)
    y, r1, v1, gx, gw, gb = out[0]
    ref, mean, var, scale = bn_forward_ref(x, w, b, None, None, True, 1e-5)
    _check_close(y, ref, scale, dtype)
    M = x.size // shape[1]
    unit = 8 * EPS32 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(r1, 0.9 * rm + 0.1 * mean, rtol=unit, atol=unit)
    np.testing.assert_allclose(v1, 0.9 * rv + 0.1 * var * M / (M - 1), rtol=unit, atol=unit)
    rdx, rdw, rdb, scale = bn_backward_ref(dy, x, w, None, None, True, 1e-5)
    _check_close(gx, rdx, scale, dtype)
    tol = (64 if dtype == np.float32 else 1e-9) * EPS32 * np.sqrt(M)
    np.testing.assert_allclose(gb, rdb, rtol=0, atol=tol * (np.abs(rdb).max() + np.sqrt(M)))
    np.testing.assert_allclose(gw, rdw, rtol=0, atol=tol * (np.abs(rdw).max() + np.sqrt(M)))


# ------------------------------------- the layer's backward with saved stats
# BatchNorm2d keeps its forward's float64 batch statistics; its training
# backward then sums dy and dy (x - mean) in one pass instead of computing
# the statistics again.  Against the naive loops, and within float rounding
# of the functional backward (which recomputes them).
SAVED_SHAPES = [(2, 3, 4, 5), (32, 17, 2, 2), (5, 33, 1, 1), (3, 16, 4, 4), (4, 6, 9, 11),
                (2, 5, 40, 60), (4, 16, 96, 96)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SAVED_SHAPES)
@pytest.mark.parametrize("affine", [True, False])
def test_the_layer_backward_with_saved_statistics_matches_naive_loops(rng, dtype, shape,
                                                                       affine):
    x, dy, w, b, _, _ = _inputs(rng, shape, dtype)
    bn = cc.nn.BatchNorm2d(shape[1], affine=affine, dtype=dtype)
    if affine:
        bn.weight.data[...] = w
        bn.bias.data[...] = b
    else:
        w = None
    bn.train()
    out = []
    for n in (1, 2):
        cc.set_num_threads(n)
        bn.zero_grad()
        bn(x)
        assert bn._stats is not None          # (the saved-statistics path ran)
        gx = bn.backward(dy)
        out.append((gx,) + ((bn.weight.grad.copy(), bn.bias.grad.copy()) if affine else ()))
    for a, b2 in zip(*out):
        np.testing.assert_array_equal(a, b2)
    gx = out[0][0]
    rdx, rdw, rdb, scale = bn_backward_ref(dy, x, w, None, None, True, 1e-5)
    _check_close(gx, rdx, scale, dtype)
    fx, fw, fb = cc.batch_norm_backward(dy, x, None, None, w, training=True)
    _check_close(gx, np.asarray(fx, np.float64), scale, dtype)
    if affine:
        M = x.size // shape[1]
        xh = np.abs(bn_forward_ref(x, None, None, None, None, True, 1e-5)[0])
        xsums = (np.abs(np.asarray(dy, np.float64)) * xh).reshape(shape[0], shape[1], -1)
        xsums = xsums.sum(axis=(0, 2))
        sums = np.abs(np.asarray(dy, np.float64)).reshape(shape[0], shape[1], -1).sum(axis=(0, 2))
        unit = 4 * EPS32 if dtype == np.float32 else 1e-13
        assert np.all(np.abs(out[0][2] - rdb) <= unit * sums + M * 1e-16 * sums)
        assert np.all(np.abs(out[0][1] - rdw) <= 2 * unit * xsums + M * 1e-16 * xsums + 1e-30)


def test_saved_statistics_of_the_wrong_size_are_refused(rng):
    x, dy, w, _, _, _ = _inputs(rng, (2, 3, 4, 4), np.float32)
    x3, dy3 = x.reshape(2, 3, 16), dy.reshape(2, 3, 16)
    work = np.empty(_norm.workspace_elems(2, 3, 16), np.float64)
    dx = np.empty_like(x3)
    dw, db = np.empty(3, np.float32), np.empty(3, np.float32)
    with pytest.raises(ValueError):
        _norm.batch_norm_backward(dy3, x3, w, None, None, True, True, 1e-5, work, dx, dw, db, 1,
                                  np.zeros(2), np.ones(3))
