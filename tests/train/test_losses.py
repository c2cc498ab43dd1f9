"""Losses against reference formulas written here, PyTorch, and central
finite differences in float64."""
import numpy as np
import pytest

from convcore import losses as L


def _ref_focal(z, y, gamma, alpha):
    """Per-sample focal loss by a plain loop over samples and classes."""
    out = []
    for i in range(z.shape[0]):
        e = [np.exp(v - max(z[i])) for v in z[i]]
        p = e[y[i]] / sum(e)
        a = 1.0 if alpha is None else alpha[y[i]]
        out.append(-a * (1 - p) ** gamma * np.log(p))
    return np.array(out)


def _fd(f, z, eps=1e-6):
    g = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += eps
        zm[idx] -= eps
        g[idx] = (f(zp) - f(zm)) / (2 * eps)
    return g


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_focal_loss_matches_formula_and_finite_differences(rng, gamma, with_alpha):
    z = rng.standard_normal((7, 5)) * 2
    y = rng.integers(0, 5, 7)
    alpha = rng.uniform(0.2, 2.0, 5) if with_alpha else None
    ref = _ref_focal(z, y, gamma, alpha)
    np.testing.assert_allclose(L.focal_loss(z, y, gamma, alpha, reduction="none"), ref,
                               rtol=1e-12)
    assert np.isclose(L.focal_loss(z, y, gamma, alpha), ref.mean(), rtol=1e-12)
    assert np.isclose(L.focal_loss(z, y, gamma, alpha, reduction="sum"), ref.sum(), rtol=1e-12)
    g = L.focal_loss_backward(z, y, gamma, alpha)
    fd = _fd(lambda v: L.focal_loss(v, y, gamma, alpha), z)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


def test_focal_gradient_is_finite_when_the_target_is_certain():
    z = np.array([[50.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    for gamma in (0.5, 2.0):
        g = L.focal_loss_backward(z, np.array([0, 1]), gamma)
        assert np.isfinite(g).all()
        assert np.allclose(g[0], 0, atol=1e-15)


def test_focal_with_gamma_zero_is_cross_entropy(rng):
    z = rng.standard_normal((6, 4))
    y = rng.integers(0, 4, 6)
    assert np.isclose(L.focal_loss(z, y, 0.0), L.cross_entropy(z, y), rtol=1e-12)
    np.testing.assert_allclose(L.focal_loss_backward(z, y, 0.0),
                               L.cross_entropy_backward(z, y), rtol=1e-12)


def test_focal_down_weights_easy_examples():
    z = np.array([[4.0, 0.0], [0.2, 0.0]])             # easy, hard
    y = np.array([0, 0])
    ce = L.cross_entropy(z, y, reduction="none")
    fl = L.focal_loss(z, y, 2.0, reduction="none")
    assert fl[0] / ce[0] < fl[1] / ce[1]


def test_class_balanced_weights_match_the_effective_number_formula():
    counts = np.array([5000, 500, 50, 5])
    for beta in (0.9, 0.99, 0.999, 0.9999):
        eff = np.array([(1 - beta ** n) / (1 - beta) for n in counts])
        w = 1 / eff
        w = w / w.sum() * 4
        np.testing.assert_allclose(L.class_balanced_weights(counts, beta), w, rtol=1e-10)
    np.testing.assert_allclose(L.class_balanced_weights(counts, 0.0), np.ones(4))
    # beta -> 1 approaches inverse class frequency
    inv = (1 / counts) / (1 / counts).sum() * 4
    np.testing.assert_allclose(L.class_balanced_weights(counts, 1 - 1e-9), inv, rtol=1e-4)


@pytest.mark.parametrize("counts, beta", [([1, -1], 0.9), ([1, 2], 1.0), ([1, 2], -0.1),
                                          ([0, 0], 0.9), ([], 0.9)])
def test_class_balanced_weights_reject_bad_input(counts, beta):
    with pytest.raises(ValueError):
        L.class_balanced_weights(counts, beta)


def test_class_balanced_weight_of_an_absent_class_is_zero():
    w = L.class_balanced_weights([10, 0, 5], 0.99)
    assert w[1] == 0 and np.isclose(w.sum(), 3)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch(rng, weighted, smoothing, reduction):
    torch = pytest.importorskip("torch")
    z = rng.standard_normal((9, 6))
    y = rng.integers(0, 6, 9)
    w = rng.uniform(0.1, 3, 6) if weighted else None
    zt = torch.tensor(z, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(
        zt, torch.tensor(y), weight=None if w is None else torch.tensor(w),
        label_smoothing=smoothing, reduction=reduction)
    up = rng.standard_normal(9) if reduction == "none" else 1.0
    (ref * torch.tensor(up)).sum().backward()
    got = L.cross_entropy(z, y, w, smoothing, reduction)
    np.testing.assert_allclose(got, ref.detach().numpy(), rtol=1e-12)
    g = L.cross_entropy_backward(z, y, w, smoothing, reduction, grad_output=up)
    np.testing.assert_allclose(g, zt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_cross_entropy_float32_and_module_form(rng):
    z = rng.standard_normal((4, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 1])
    crit = L.CrossEntropyLoss(label_smoothing=0.05)
    v = crit(z, y)
    g = crit.backward()
    assert isinstance(v, float) and g.dtype == np.float32
    fd = _fd(lambda a: L.cross_entropy(a, y, label_smoothing=0.05), z.astype(np.float64))
    np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-6)
    with pytest.raises(RuntimeError):
        L.FocalLoss().backward()


@pytest.mark.parametrize("args, exc", [
    ((np.zeros(3), np.zeros(3, int)), ValueError),
    ((np.zeros((2, 3)), np.zeros(3, int)), ValueError),
    ((np.zeros((2, 3)), np.array([0, 3])), ValueError),
    ((np.zeros((2, 3)), np.array([0.0, 1.0])), TypeError),
    ((np.zeros((2, 3), np.int64), np.array([0, 1])), TypeError),
])
def test_loss_input_errors(args, exc):
    with pytest.raises(exc):
        L.cross_entropy(*args)
    with pytest.raises(exc):
        L.focal_loss(*args)


def test_loss_parameter_errors():
    z, y = np.zeros((2, 3)), np.array([0, 1])
    with pytest.raises(ValueError, match="gamma"):
        L.focal_loss(z, y, gamma=-1)
    with pytest.raises(ValueError, match="alpha"):
        L.focal_loss(z, y, alpha=[1, 2])
    with pytest.raises(ValueError, match="reduction"):
        L.cross_entropy(z, y, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        L.cross_entropy(z, y, label_smoothing=1.5)
