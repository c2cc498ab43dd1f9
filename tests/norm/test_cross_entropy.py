"""cross_entropy and its gradient on NumPy arrays (one fused C kernel) against
a float64 reference written out with np.logaddexp and PyTorch."""
import numpy as np
import pytest

import convcore as cc


def _ref(logits, target):
    x = logits.astype(np.float64)
    lse = np.logaddexp.reduce(x, axis=1)
    per = lse - x[np.arange(len(x)), target]
    p = np.exp(x - lse[:, None])
    p[np.arange(len(x)), target] -= 1
    return per, p


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N,K", [(64, 10), (8, 1000), (3, 1), (1, 2), (300, 7)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_and_gradient_match_float64_reference(rng, dtype, N, K, reduction):
    logits = (rng.standard_normal((N, K)) * 6).astype(dtype)
    target = rng.integers(0, K, N)
    per, grad = _ref(logits, target)
    go = rng.uniform(0.5, 2, N) if reduction == "none" else 0.7
    want = {"none": per, "sum": per.sum(), "mean": per.mean()}[reduction]
    gscale = go[:, None] if reduction == "none" else go / (N if reduction == "mean" else 1)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    got = cc.cross_entropy(logits, target, reduction)
    assert np.asarray(got).dtype == dtype
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    g = cc.cross_entropy_backward(logits, target, reduction, grad_output=go)
    assert g.dtype == dtype and g.shape == (N, K)
    np.testing.assert_allclose(g, grad * gscale, rtol=0, atol=4 * tol * np.abs(gscale).max())


def test_confident_rows_keep_the_small_gradient_of_the_true_class():
    # softmax ~ 1 - 1e-7 at the target: (p - 1) must not cancel to 0 or to a
    # float32 rounding step
    logits = np.array([[18.0, 2.0, 1.0]], np.float32)
    g = cc.cross_entropy_backward(logits, np.array([0]), "sum")
    want = _ref(logits, np.array([0]))[1]
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=0)


def test_nan_and_infinite_logits_propagate_like_the_definition():
    logits = np.array([[np.nan, 0, 1], [np.inf, 0, 1], [0, -np.inf, 1]])
    loss = cc.cross_entropy(logits, np.array([1, 1, 2]), "none")
    assert np.isnan(loss[0]) and np.isnan(loss[1])
    np.testing.assert_allclose(loss[2], np.log1p(np.exp(-1.0)), rtol=1e-15)
    g = cc.cross_entropy_backward(logits, np.array([1, 1, 2]), "none")
    assert np.isnan(g[:2]).all()
    assert g[2, 1] == 0.0


def test_float32_rows_across_the_whole_range_of_the_exponential():
    """float32 rows take the kernel's own vectorized e^x (x <= 0): every
    probability within a few float32 ulps of the float64 definition, from
    1 down to the smallest normal float; below it (and at -Inf) exactly 0."""
    d = np.concatenate([-np.linspace(0, 87, 3001), -np.linspace(87, 87.4, 41),
                        [-90.0, -200.0, -1e30, -np.inf, -0.0]])
    rows = np.stack([d, d[::-1], d * 0.01, np.roll(d, 7)]).astype(np.float32)
    rows[:, :4] += np.float32(3.5)                       # a non-zero maximum
    target = np.array([0, 5, 100, 3000])
    per, grad = _ref(rows, target)
    g = cc.cross_entropy_backward(rows, target, "sum")
    arg = rows.astype(np.float64) - rows.max(axis=1, keepdims=True)
    other = np.arange(rows.shape[1]) != target[:, None]
    cut = (arg < -87.34) & other
    kept = (arg > -87.32) | ~other            # (between them: either)
    assert cut.sum() > 4 and (g[cut] == 0).all()
    # (probabilities below the smallest normal float are denormals: their
    # absolute precision is 1.4e-45)
    np.testing.assert_allclose(g[kept], grad[kept], rtol=6e-7, atol=3e-45)
    np.testing.assert_allclose(cc.cross_entropy(rows, target, "none"), per, rtol=2e-7)
    special = np.array([[np.nan, 0, 1], [np.inf, 0, 1], [0, -np.inf, 1]], np.float32)
    loss = cc.cross_entropy(special, np.array([1, 1, 2]), "none")
    assert np.isnan(loss[:2]).all()
    np.testing.assert_allclose(loss[2], np.log1p(np.exp(-1.0)), rtol=1e-7)


@pytest.mark.parametrize("target", [np.array([0, 3]), np.array([-1, 0]),
                                    np.array([0, 2**63 + 5], np.uint64)])
def test_targets_out_of_range_are_refused_before_anything_is_written(target):
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 2\]"):
        cc.cross_entropy(np.zeros((2, 3)), target)
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 2\]"):
        cc.cross_entropy_backward(np.zeros((2, 3)), target)


def test_cross_entropy_is_the_same_for_every_thread_count(rng):
    logits = rng.standard_normal((4096, 37)).astype(np.float32)
    target = rng.integers(0, 37, 4096)
    old = cc.get_num_threads()
    try:
        outs = []
        for t in (1, 2, 3):
            cc.set_num_threads(t)
            outs.append((cc.cross_entropy(logits, target, "none"),
                         cc.cross_entropy_backward(logits, target)))
    finally:
        cc.set_num_threads(old)
    for o in outs[1:]:
        np.testing.assert_array_equal(o[0], outs[0][0])
        np.testing.assert_array_equal(o[1], outs[0][1])


def test_cross_entropy_matches_torch(rng):
    torch = pytest.importorskip("torch")
    for dtype, tol in ((np.float32, 2e-6), (np.float64, 1e-13)):
        logits = (rng.standard_normal((16, 100)) * 4).astype(dtype)
        target = rng.integers(0, 100, 16)
        t = torch.tensor(logits, requires_grad=True)
        loss = torch.nn.functional.cross_entropy(t, torch.tensor(target))
        loss.backward()
        np.testing.assert_allclose(cc.cross_entropy(logits, target), loss.item(), rtol=tol)
        np.testing.assert_allclose(cc.cross_entropy_backward(logits, target), t.grad.numpy(),
                                   rtol=0, atol=tol)
