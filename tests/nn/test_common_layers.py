"""Identity, Softmax, LogSoftmax, Dropout2d, Upsample, Tanh, Sigmoid, LeakyReLU
and CrossEntropyLoss in nn: PyTorch parity forward and backward, float32 and
float64, and their argument errors."""
import numpy as np
import pytest

import convcore as cc
from convcore import nn

LAYERS = [
    ("Identity", dict(), {}),
    ("Softmax", dict(dim=1), {}),
    ("Softmax", dict(dim=-1), {}),
    ("LogSoftmax", dict(dim=1), {}),
    ("LogSoftmax", dict(dim=2), {}),
    ("Tanh", dict(), {}),
    ("Sigmoid", dict(), {}),
    ("LeakyReLU", dict(), {}),
    ("LeakyReLU", dict(negative_slope=0.2), {}),
    ("Upsample", dict(scale_factor=2), {}),
    ("Upsample", dict(scale_factor=(1.5, 0.7)), {}),
    ("Upsample", dict(size=(7, 3)), {}),
    ("Upsample", dict(size=11, mode="bilinear"), {}),
    ("Upsample", dict(scale_factor=2, mode="bilinear"), {}),
    ("Upsample", dict(scale_factor=(0.6, 2.5), mode="bilinear"), {}),
    ("Upsample", dict(size=(9, 1), mode="bilinear", align_corners=True), {}),
    ("Upsample", dict(scale_factor=3, mode="bilinear", align_corners=True), {}),
    ("Upsample", dict(size=(1, 4), mode="bilinear", align_corners=True), {}),
]


def _ids():
    return [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw, _ in LAYERS]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,kwargs,_", LAYERS, ids=_ids())
def test_layer_matches_torch_forward_and_backward(name, kwargs, _, dtype, rng):
    torch = pytest.importorskip("torch")
    ours = getattr(nn, name)(**kwargs)
    theirs = getattr(torch.nn, name)(**kwargs)
    x = (3 * rng.standard_normal((2, 3, 5, 6))).astype(dtype)
    x[0, 0, 0, :3] = [0.0, 40.0, -40.0]        # the kinks and the saturated tails
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    y = ours(x)
    # float32: the interpolation weights are rounded differently (PyTorch
    # computes them in float32), so the error scales with the largest input
    big = float(np.abs(x).max())
    tol = dict(rtol=2e-6, atol=2e-7 * big) if dtype == np.float32 else \
        dict(rtol=1e-12, atol=1e-14 * big)
    assert y.dtype == dtype and y.shape == tuple(yt.shape)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
    g = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(torch.tensor(g))
    gx = ours.backward(g)
    assert gx.dtype == dtype and gx.shape == x.shape
    np.testing.assert_allclose(gx, xt.grad.numpy(), **tol)
    if hasattr(ours, "output_shape") and name == "Upsample":
        assert ours.output_shape(x.shape) == y.shape


@pytest.mark.parametrize("name,fn", [("tanh", "tanh"), ("sigmoid", "sigmoid"),
                                     ("leaky_relu", "leaky_relu")])
def test_functional_activation_matches_torch(name, fn, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((4, 7)) * 5
    xt = torch.tensor(x, requires_grad=True)
    yt = getattr(torch.nn.functional, fn)(xt)
    y = getattr(cc, name)(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-13, atol=1e-15)
    g = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(g))
    back = getattr(cc, f"{name}_backward")
    gx = back(g, x) if name == "leaky_relu" else back(g, y)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_sigmoid_does_not_overflow_and_keeps_float32():
    x = np.array([-1e4, -100.0, 0.0, 100.0, 1e4], np.float32)
    with np.errstate(over="raise", invalid="raise"):
        y = cc.sigmoid(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, [0.0, np.float32(1 / (1 + np.exp(100.0))), 0.5, 1.0, 1.0])


def test_softmax_without_dim_follows_torch_implicit_choice(rng):
    torch = pytest.importorskip("torch")
    for shape in [(5,), (2, 5), (3, 4, 5), (2, 3, 4, 5)]:
        x = rng.standard_normal(shape)
        with pytest.warns(UserWarning):
            want = torch.nn.Softmax()(torch.tensor(x)).numpy()
        np.testing.assert_allclose(nn.Softmax()(x), want, rtol=1e-12)


def test_dropout2d_zeroes_whole_channels_and_routes_gradients(rng):
    x = rng.standard_normal((50, 40, 3, 4)).astype(np.float32)
    layer = nn.Dropout2d(0.3, rng=0)
    y = layer(x)
    kept = (y != 0).any(axis=(2, 3))
    assert abs(1 - kept.mean() - 0.3) < 0.03
    np.testing.assert_allclose(y[kept], x[kept] / 0.7, rtol=1e-6)
    assert not y[~kept].any()
    g = np.ones_like(y)
    gx = layer.backward(g)
    np.testing.assert_allclose(gx[kept], 1 / 0.7, rtol=1e-6)
    assert not gx[~kept].any()
    layer.eval()
    assert layer(x) is x
    assert layer.backward(g) is g


def test_dropout2d_matches_torch_statistics_and_unbatched_input():
    torch = pytest.importorskip("torch")
    x = np.ones((200, 100, 2, 2))
    t = torch.nn.Dropout2d(0.25)(torch.tensor(x)).numpy()
    y = cc.dropout2d(x, 0.25, rng=1)
    for a in (t, y):   # both zero whole channels at the same rate, with the same scale
        assert np.all(a.min(axis=(2, 3)) == a.max(axis=(2, 3)))
        assert abs((a[:, :, 0, 0] == 0).mean() - 0.25) < 0.01
        np.testing.assert_allclose(np.unique(a), [0, 1 / 0.75])
    y3 = cc.dropout2d(np.ones((8, 2, 2)), 0.5, rng=0)
    assert y3.shape == (8, 2, 2)
    with pytest.raises(ValueError, match="3-D .* or 4-D"):
        cc.dropout2d(np.ones((3, 4)), 0.5)


def test_interpolate_backward_is_the_adjoint_of_interpolate(rng):
    for kw in [dict(scale_factor=2), dict(size=(5, 9), mode="bilinear"),
               dict(scale_factor=0.5, mode="bilinear", align_corners=True),
               dict(size=(3, 2))]:
        x = rng.standard_normal((2, 3, 6, 7))
        y = cc.interpolate(x, **kw)
        g = rng.standard_normal(y.shape)
        gx = cc.interpolate_backward(g, x.shape, **kw)
        assert abs(np.vdot(y, g) - np.vdot(x, gx)) < 1e-11 * np.abs(g).sum()


def test_cross_entropy_loss_is_in_nn():
    from convcore import losses
    assert nn.CrossEntropyLoss is losses.CrossEntropyLoss


BAD = [
    (lambda: nn.Upsample(), ValueError, "exactly one of size and scale_factor"),
    (lambda: nn.Upsample(size=3, scale_factor=2), ValueError, "exactly one"),
    (lambda: nn.Upsample(scale_factor=2, mode="bicubic"), ValueError, "mode must be"),
    (lambda: nn.Upsample(scale_factor=2, align_corners=True), ValueError, "align_corners"),
    (lambda: nn.Upsample(scale_factor=-1), ValueError, "positive"),
    (lambda: nn.Upsample(scale_factor="2"), TypeError, "scale_factor"),
    (lambda: nn.Upsample(size=0), ValueError, "size"),
    (lambda: cc.interpolate(np.ones((1, 1, 2, 2)), scale_factor=0.2), ValueError, "empty"),
    (lambda: cc.interpolate(np.ones((2, 2)), size=3), ValueError, "3-D"),
    (lambda: cc.interpolate(np.ones((1, 1, 2, 2), int), size=3), TypeError, "float32"),
    (lambda: cc.interpolate_backward(np.ones((1, 1, 3, 3)), (1, 1, 2, 2), size=4),
     ValueError, r"grad_output must have shape \(1, 1, 4, 4\)"),
    (lambda: nn.LeakyReLU("a"), TypeError, "negative_slope"),
    (lambda: nn.Dropout2d(1.5), ValueError, "p must be"),
    (lambda: nn.Softmax(dim=1.0), TypeError, "dim"),
    (lambda: cc.tanh(np.ones(2, np.int32)), TypeError, "float32 or float64"),
    (lambda: cc.tanh_backward(np.ones(3), np.ones(2)), ValueError, "grad_output"),
    (lambda: cc.leaky_relu_backward(np.ones(3), np.ones(2)), ValueError, "grad_output"),
    (lambda: nn.Tanh().backward(np.ones(2)), RuntimeError, "before forward"),
    (lambda: nn.Upsample(size=2).backward(np.ones(2)), RuntimeError, "before forward"),
]


@pytest.mark.parametrize("call,exc,match", BAD)
def test_bad_arguments_raise(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
