"""The functional layer math: gradients against central differences, BN and
LRN against naive formulas, everything against PyTorch when installed."""
import numpy as np
import pytest

import convcore as cc
from reference.nn import (batch_norm_train_naive, lrn_naive, numeric_grad,  # noqa: F401
                          one_thread)


def _r(rng, *shape):
    return rng.standard_normal(shape)


def test_linear_backward_matches_finite_differences(rng):
    x, w, b = _r(rng, 3, 4), _r(rng, 5, 4), _r(rng, 5)
    g = _r(rng, 3, 5)
    gx, gw, gb = cc.linear_backward(g, x, w)
    L = lambda: np.sum(cc.linear(x, w, b) * g)  # noqa: E731
    np.testing.assert_allclose(gx, numeric_grad(L, x), atol=1e-7)
    np.testing.assert_allclose(gw, numeric_grad(L, w), atol=1e-7)
    np.testing.assert_allclose(gb, numeric_grad(L, b), atol=1e-7)


def test_relu_backward_matches_finite_differences(rng):
    x = _r(rng, 2, 3, 4)
    x[np.abs(x) < 1e-3] = 0.5
    g = _r(rng, 2, 3, 4)
    np.testing.assert_allclose(cc.relu_backward(g, x),
                               numeric_grad(lambda: np.sum(cc.relu(x) * g), x), atol=1e-7)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_backward_matches_finite_differences(rng, training):
    x, w, b = _r(rng, 3, 2, 2, 3), _r(rng, 2), _r(rng, 2)
    rm, rv = _r(rng, 2), rng.random(2) + 0.5
    g = _r(rng, 3, 2, 2, 3)

    def L():
        return np.sum(cc.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training) * g)
    gx, gw, gb = cc.batch_norm_backward(g, x, rm, rv, w, training=training)
    np.testing.assert_allclose(gx, numeric_grad(L, x), atol=1e-6)
    np.testing.assert_allclose(gw, numeric_grad(L, w), atol=1e-6)
    np.testing.assert_allclose(gb, numeric_grad(L, b), atol=1e-6)


def test_batch_norm_matches_naive_formula_and_updates_running_stats(rng):
    x, w, b = _r(rng, 4, 3, 2, 5), _r(rng, 3), _r(rng, 3)
    rm, rv = np.zeros(3), np.ones(3)
    y = cc.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)
    np.testing.assert_allclose(y, batch_norm_train_naive(x, w, b, 1e-5), atol=1e-12)
    M = 4 * 2 * 5
    m = np.array([x[:, c].sum() / M for c in range(3)])
    v_unb = np.array([((x[:, c] - m[c]) ** 2).sum() / (M - 1) for c in range(3)])
    np.testing.assert_allclose(rm, 0.1 * m, atol=1e-14)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * v_unb, atol=1e-14)
    ye = cc.batch_norm(x, rm, rv, w, b, training=False)
    ref = (x - rm[:, None, None]) / np.sqrt(rv[:, None, None] + 1e-5) * w[:, None, None] \
        + b[:, None, None]
    np.testing.assert_allclose(ye, ref, atol=1e-12)


def test_batch_norm_training_with_one_value_per_channel_is_refused():
    with pytest.raises(ValueError, match="more than 1 value"):
        cc.batch_norm(np.ones((1, 2, 1, 1)), training=True)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_local_response_norm_matches_naive_formula(rng, size):
    x = _r(rng, 2, 6, 3, 2)
    np.testing.assert_allclose(cc.local_response_norm(x, size, 0.3, 0.75, 2.0),
                               lrn_naive(x, size, 0.3, 0.75, 2.0), rtol=1e-12)


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_local_response_norm_backward_matches_finite_differences(rng, size):
    x, g = _r(rng, 2, 5, 2, 2), _r(rng, 2, 5, 2, 2)
    L = lambda: np.sum(cc.local_response_norm(x, size, 0.5, 0.75, 1.5) * g)  # noqa: E731
    np.testing.assert_allclose(cc.local_response_norm_backward(g, x, size, 0.5, 0.75, 1.5),
                               numeric_grad(L, x), atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, size, beta", [
    ((2, 7, 9, 9), 5, 0.75),        # 81 positions: two blocks of the C kernel
    ((3, 20, 130), 3, 0.5),         # (N, C, L), another beta: through pow
    ((1, 4, 2, 3, 5), 4, 1.25),     # 5-D
    ((2, 1, 3, 3), 5, 0.75),        # one channel, window wider than C
])
def test_local_response_norm_matches_torch_and_the_loops(shape, size, beta, dtype, rng):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    y = cc.local_response_norm(x, size, 0.05, beta, 1.5)
    gx = cc.local_response_norm_backward(g, x, size, 0.05, beta, 1.5)
    assert y.dtype == dtype and gx.dtype == dtype
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = torch.nn.functional.local_response_norm(xt, size, 0.05, beta, 1.5)
    yt.backward(torch.tensor(g, dtype=torch.float64))
    tol = 1e-12 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(y, lrn_naive(x.astype(np.float64), size, 0.05, beta, 1.5),
                               rtol=tol, atol=tol)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=10 * tol, atol=10 * tol)
    # a strided view gives the same as its copy
    xs = np.repeat(x, 2, axis=-1)[..., ::2]
    np.testing.assert_array_equal(cc.local_response_norm(xs, size, 0.05, beta, 1.5), y)


def test_local_response_norm_special_values_follow_the_formula():
    # k = 0 and x = 0: the base is 0, 0 * 0^-beta is NaN, as the formula in floats gives
    x = np.zeros((1, 3, 2, 2))
    x[0, 1, 0, 0] = np.inf
    x[0, 2, 1, 1] = np.nan
    with np.errstate(all="ignore"):
        ref = lrn_naive(x, 3, 1.0, 0.75, 0.0)
        y = cc.local_response_norm(x, 3, 1.0, 0.75, 0.0)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    np.testing.assert_array_equal(y[np.isfinite(ref)], ref[np.isfinite(ref)])


def test_dropout_is_reproducible_scaled_and_its_backward_uses_the_mask():
    x = np.ones((200, 50))
    y1, m1 = cc.dropout(x, 0.3, rng=7, return_mask=True)
    y2 = cc.dropout(x, 0.3, rng=7)
    np.testing.assert_array_equal(y1, y2)
    assert set(np.unique(y1)) == {0.0, 1 / 0.7}
    assert abs((y1 == 0).mean() - 0.3) < 0.02
    g = np.arange(x.size, dtype=float).reshape(x.shape)
    np.testing.assert_allclose(cc.dropout_backward(g, m1, 0.3), np.where(m1, g / 0.7, 0),
                               rtol=1e-15)
    np.testing.assert_array_equal(cc.dropout(x, 0.3, training=False), x)
    np.testing.assert_array_equal(cc.dropout(x, 1.0, rng=0), 0 * x)


@pytest.mark.parametrize("fn,bwd", [("softmax", "softmax_backward"),
                                    ("log_softmax", "log_softmax_backward")])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_backward_matches_finite_differences(rng, fn, bwd, dim):
    x, g = _r(rng, 3, 4), _r(rng, 3, 4)
    f, b = getattr(cc, fn), getattr(cc, bwd)
    np.testing.assert_allclose(b(g, f(x, dim), dim),
                               numeric_grad(lambda: np.sum(f(x, dim) * g), x), atol=1e-7)


def test_softmax_does_not_overflow():
    y = cc.softmax(np.array([1000.0, 1000.0, -1000.0]))
    np.testing.assert_allclose(y, [0.5, 0.5, 0.0])
    assert np.isfinite(cc.log_softmax(np.array([1000.0, -1000.0]))).all()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_matches_definition_and_finite_differences(rng, reduction):
    z, t = _r(rng, 5, 4), np.array([0, 3, 1, 1, 2])
    per = [-np.log(np.exp(z[n, t[n]]) / np.exp(z[n]).sum()) for n in range(5)]
    ref = np.mean(per) if reduction == "mean" else np.sum(per)
    assert abs(cc.cross_entropy(z, t, reduction) - ref) < 1e-12
    np.testing.assert_allclose(cc.cross_entropy_backward(z, t, reduction),
                               numeric_grad(lambda: cc.cross_entropy(z, t, reduction), z),
                               atol=1e-7)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: cc.linear(np.ones((2, 3)), np.ones((4, 5))), ValueError, "in_features"),
    (lambda: cc.linear(np.ones((2, 3), np.int64), np.ones((4, 3))), TypeError, "float32"),
    (lambda: cc.linear(np.ones((2, 3)), np.ones((4, 3), np.float32)), TypeError, "dtype"),
    (lambda: cc.linear(np.ones((2, 3)), np.ones((4, 3)), np.ones(3)), ValueError, "bias"),
    (lambda: cc.relu_backward(np.ones(3), np.ones(4)), ValueError, "grad_output"),
    (lambda: cc.batch_norm(np.ones((2, 3)), np.ones(2), np.ones(2)), ValueError, "running_mean"),
    (lambda: cc.local_response_norm(np.ones((2, 3)), 2), ValueError, "3-D"),
    (lambda: cc.local_response_norm(np.ones((1, 2, 3)), 0), ValueError, "size"),
    (lambda: cc.dropout(np.ones(3), 1.5), ValueError, "p must be"),
    (lambda: cc.softmax(np.ones(3), dim=2), ValueError, "dim"),
    (lambda: cc.cross_entropy(np.ones((2, 3)), np.array([0, 3])), ValueError, r"\[0, 2\]"),
    (lambda: cc.cross_entropy(np.ones((2, 3)), np.array([0., 1.])), TypeError, "integer"),
    (lambda: cc.cross_entropy(np.ones((2, 3)), np.array([0])), ValueError, "shape"),
    (lambda: cc.cross_entropy(np.ones((2, 3)), np.array([0, 1]), "avg"), ValueError, "reduction"),
])
def test_bad_arguments_are_refused(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------ PyTorch
def test_functional_ops_match_torch(rng):
    torch = pytest.importorskip("torch")
    tF = torch.nn.functional
    x = _r(rng, 3, 6, 4, 5)
    g = _r(rng, 3, 6, 4, 5)
    for size in (2, 5):
        xt = torch.tensor(x, requires_grad=True)
        yt = tF.local_response_norm(xt, size, 1e-2, 0.75, 2.0)
        yt.backward(torch.tensor(g))
        np.testing.assert_allclose(cc.local_response_norm(x, size, 1e-2, 0.75, 2.0),
                                   yt.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(cc.local_response_norm_backward(g, x, size, 1e-2, 0.75, 2.0),
                                   xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    z, t = _r(rng, 6, 5), rng.integers(0, 5, 6)
    zt = torch.tensor(z, requires_grad=True)
    lt = tF.cross_entropy(zt, torch.tensor(t))
    lt.backward()
    assert abs(cc.cross_entropy(z, t) - lt.item()) < 1e-12
    np.testing.assert_allclose(cc.cross_entropy_backward(z, t), zt.grad.numpy(), atol=1e-14)
    np.testing.assert_allclose(cc.log_softmax(z, 1), tF.log_softmax(torch.tensor(z), 1).numpy(),
                               atol=1e-14)
