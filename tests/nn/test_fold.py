"""Eval-mode folding of convolution -> batch norm (-> ReLU), and ReLU(inplace).

References: the same network with folding off (float64, so any difference is
rounding), hand-written NumPy batch norm, and PyTorch's conv/bn/relu."""
import numpy as np
import pytest

import convcore as cc
from convcore import nn


def _randomise_bn(net, rng):
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean[...] = rng.standard_normal(m.num_features)
            m.running_var[...] = rng.uniform(0.3, 3.0, m.num_features)
            if m.weight is not None:
                m.weight.data[...] = rng.uniform(-2, 2, m.num_features)
                m.bias.data[...] = rng.standard_normal(m.num_features)


def _folds(net):
    return [m._fold for m in net.modules() if m._fold is not None and m._fold.conv is m]


def _run(net, x, g):
    net.zero_grad()
    y = net(x)
    gx = net.backward(g)
    return y, gx, {k: p.grad.copy() for k, p in net.named_parameters()}


NETS = [
    ("conv_bn_relu", lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, rng=0),
                                           nn.BatchNorm2d(8), nn.ReLU(),
                                           nn.Conv2d(8, 4, 3, stride=2, bias=False, rng=1),
                                           nn.BatchNorm2d(4)), (2, 3, 9, 9), 2),
    ("basic_block", lambda: nn.BasicBlock(4, 8, stride=2, rng=0), (2, 4, 8, 8), 3),
    ("bottleneck", lambda: nn.Bottleneck(16, 4, rng=0), (1, 16, 5, 5), 3),
    ("inception", lambda: nn.Inception(8, 4, 4, 6, 2, 3, 3, rng=0), (1, 8, 6, 6), 6),
]


@pytest.mark.parametrize("name,make,shape,n_folds", NETS, ids=[n[0] for n in NETS])
def test_folded_eval_matches_unfolded_forward_and_every_gradient(rng, name, make, shape,
                                                                  n_folds):
    net = make()
    for p in net.parameters():
        p.data = p.data.astype(np.float64)
    for m in net.modules():
        for b in ("running_mean", "running_var"):
            if getattr(m, b, None) is not None:
                setattr(m, b, getattr(m, b).astype(np.float64))
    _randomise_bn(net, rng)
    x = rng.standard_normal(shape)
    net.eval(fold=False)
    assert not _folds(net)
    y0 = net(x)
    g = rng.standard_normal(y0.shape)
    y0, gx0, grads0 = _run(net, x, g)
    net.eval()
    assert len(_folds(net)) == n_folds
    y1, gx1, grads1 = _run(net, x, g)
    np.testing.assert_allclose(y1, y0, rtol=0, atol=1e-12 * np.abs(y0).max())
    np.testing.assert_allclose(gx1, gx0, rtol=0, atol=1e-12 * np.abs(gx0).max())
    for k in grads0:
        np.testing.assert_allclose(grads1[k], grads0[k], rtol=0,
                                   atol=1e-12 * max(np.abs(grads0[k]).max(), 1), err_msg=k)


def test_folded_resnet_float32_stays_within_rounding_of_unfolded(rng):
    net = cc.models.resnet18(num_classes=10, rng=0)
    _randomise_bn(net, rng)
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    ref = net.eval(fold=False)(x).astype(np.float64)
    y = net.eval()(x)
    assert len(_folds(net)) == 20
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_folded_conv_bn_relu_matches_torch(rng):
    torch = pytest.importorskip("torch")
    for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        net = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1, rng=0), nn.BatchNorm2d(6),
                            nn.ReLU())
        for p in net.parameters():
            p.data = p.data.astype(dtype)
        bn = net[1]
        bn.running_mean = rng.standard_normal(6).astype(dtype)
        bn.running_var = rng.uniform(0.3, 3, 6).astype(dtype)
        bn.weight.data[...] = rng.uniform(-2, 2, 6)
        t = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, stride=2, padding=1),
                                torch.nn.BatchNorm2d(6), torch.nn.ReLU()).to(
            torch.float32 if dtype == np.float32 else torch.float64).eval()
        t.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in net.state_dict().items()})
        x = rng.standard_normal((2, 3, 11, 11)).astype(dtype)
        y = net.eval()(x)
        assert len(_folds(net)) == 1
        ref = t(torch.tensor(x)).detach().numpy()
        np.testing.assert_allclose(y, ref, rtol=tol, atol=tol * np.abs(ref).max())


def test_training_mode_never_folds_and_updates_running_stats(rng):
    net = nn.Sequential(nn.Conv2d(2, 3, 3, rng=0), nn.BatchNorm2d(3), nn.ReLU())
    net.eval()
    assert _folds(net)
    net.train()
    assert not _folds(net)
    x = rng.standard_normal((4, 2, 6, 6)).astype(np.float32)
    y = net(x)
    z = cc.conv2d(x, net[0].weight.data, net[0].bias.data).astype(np.float64)
    mean, var = z.mean(axis=(0, 2, 3)), z.var(axis=(0, 2, 3))
    ref = np.maximum((z - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5), 0)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-4)
    np.testing.assert_allclose(net[1].running_mean, 0.1 * mean, rtol=1e-5, atol=1e-6)


def test_new_parameter_values_reach_the_folded_convolution(rng):
    net = nn.Sequential(nn.Conv2d(2, 3, 3, rng=0), nn.BatchNorm2d(3))
    x = rng.standard_normal((1, 2, 5, 5))
    net.eval()
    y0 = net(x.astype(np.float32))
    other = nn.Sequential(nn.Conv2d(2, 3, 3, rng=7), nn.BatchNorm2d(3))
    other[1].running_var[...] = 4.0
    net.load_state_dict(other.state_dict())           # copied in place
    y1 = net(x.astype(np.float32))
    ref = other.eval(fold=False)(x.astype(np.float32))
    np.testing.assert_allclose(y1, ref, rtol=1e-5, atol=1e-6)
    assert not np.allclose(y0, y1)
    net[0].weight.data = np.zeros_like(net[0].weight.data)   # replaced array
    np.testing.assert_allclose(net(x.astype(np.float32)),
                               np.broadcast_to(((net[0].bias.data - 0) / 2.0)[:, None, None],
                                               (1, 3, 3, 3)), rtol=1e-5, atol=1e-6)


def test_shared_modules_and_a_bn_in_training_mode_are_not_folded(rng):
    relu = nn.ReLU()
    net = nn.Sequential(nn.Conv2d(2, 2, 1, rng=0), nn.BatchNorm2d(2), relu,
                        nn.Conv2d(2, 2, 1, rng=1), relu)
    net.eval()
    (f,) = _folds(net)
    assert f.relu is None and f.bn is net[1]      # the shared ReLU stays a pass of its own
    net[1].train()                                 # the bn alone back in training mode
    x = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    z = cc.conv2d(x, net[0].weight.data, net[0].bias.data).astype(np.float64)
    y = net[1](net[0](x))                          # batch statistics, not the fold
    ref = (z - z.mean(axis=(0, 2, 3))[:, None, None]) / np.sqrt(
        z.var(axis=(0, 2, 3))[:, None, None] + 1e-5)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-4)


def test_relu_inplace_overwrites_its_input_and_backpropagates(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    a = x.copy()
    r = nn.ReLU(inplace=True)
    y = r(a)
    assert y is a
    t = torch.tensor(x[1:], requires_grad=True)
    ty = torch.relu(t)
    np.testing.assert_array_equal(y[1:], ty.detach().numpy())
    assert np.isnan(y[0, 0, 0, 0])
    g = rng.standard_normal(y.shape).astype(np.float32)
    ty.backward(torch.tensor(g[1:]))
    np.testing.assert_array_equal(r.backward(g)[1:], t.grad.numpy())
    with pytest.raises(TypeError, match="float32 or float64"):
        nn.ReLU(inplace=True)(np.ones(3, np.int64))


def test_sequential_relus_reuse_only_arrays_no_one_else_holds(rng):
    """A ReLU after a convolution, batch norm or Linear layer overwrites that
    layer's fresh output; one after anything else (or first) never touches
    its input.  Values and gradients match PyTorch either way."""
    torch = pytest.importorskip("torch")
    net = nn.Sequential(nn.ReLU(), nn.Conv2d(2, 3, 3, padding=1, rng=0, dtype=np.float64), nn.ReLU(),
                        nn.MaxPool2d(2), nn.BatchNorm2d(3, dtype=np.float64), nn.ReLU(), nn.Flatten(), nn.ReLU(),
                        nn.Linear(3 * 8 * 8, 5, rng=1, dtype=np.float64), nn.ReLU())
    x = rng.standard_normal((4, 2, 16, 16)).astype(np.float64)
    x0 = x.copy()
    y = net(x)
    np.testing.assert_array_equal(x, x0)                     # the first ReLU copied
    assert [m._input_is_scratch for m in net if type(m) is nn.ReLU] == [False, True, True,
                                                                      False, True]
    tx = torch.tensor(x0, requires_grad=True)
    tconv = torch.nn.Conv2d(2, 3, 3, padding=1).double()
    tlin = torch.nn.Linear(3 * 8 * 8, 5).double()
    with torch.no_grad():
        tconv.weight.copy_(torch.tensor(net[1].weight.data))
        tconv.bias.copy_(torch.tensor(net[1].bias.data))
        tlin.weight.copy_(torch.tensor(net[8].weight.data))
        tlin.bias.copy_(torch.tensor(net[8].bias.data))
    tF = torch.nn.functional
    h = tF.max_pool2d(tF.relu(tconv(tF.relu(tx))), 2)
    h = tF.relu(tF.batch_norm(h, None, None, training=True, eps=1e-5))
    ty = tF.relu(tlin(tF.relu(h.flatten(1))))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(g))
    gx = net.backward(g)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(net[1].weight.grad, tconv.weight.grad.numpy(), rtol=1e-10,
                               atol=1e-12)
