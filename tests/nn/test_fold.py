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


# ------------------------------------------------- packed Winograd weights
def _wide_block(rng):
    """conv (128 -> 128, 3x3) -> bn -> relu on 14x14: a layer whose forward
    pass runs Winograd's algorithm from weights packed once (float32)."""
    net = nn.Sequential(nn.Conv2d(128, 128, 3, padding=1, rng=0), nn.BatchNorm2d(128),
                        nn.ReLU())
    _randomise_bn(net, rng)
    return net


def _packs(net):
    return sum(len(f._packs) for f in _folds(net))


def test_folded_3x3_layers_pack_their_winograd_weights_once_and_match(rng, monkeypatch):
    """The packed forward gives WINOGRAD's bits (the same call with the
    strategy forced) and stays within float32 rounding of PyTorch's float64
    convolution; the packed form is made on the first call and reused."""
    torch = pytest.importorskip("torch")
    from convcore._core import _conv
    net = _wide_block(rng)
    x = rng.standard_normal((1, 128, 14, 14)).astype(np.float32)
    with cc.no_grad():
        y = net.eval()(x)
    assert _packs(net) == 1
    packed = next(iter(_folds(net)[0]._packs.values()))
    with cc.no_grad():
        y2 = net(np.concatenate([x, x[:, :, ::-1]]))    # another batch: the same packed form
    assert _packs(net) == 1 and next(iter(_folds(net)[0]._packs.values())) is packed
    np.testing.assert_allclose(y2[:1], y, rtol=0, atol=1e-6 * np.abs(y).max())
    w, b = _folds(net)[0].params()
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "winograd")
    forced = np.maximum(cc.conv2d(x, w, b, padding=1), 0)
    assert _conv.env_strategy() == _conv.STRATEGIES["winograd"]
    np.testing.assert_array_equal(y, forced)
    ref = torch.relu(torch.nn.functional.conv2d(
        torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
        torch.tensor(b, dtype=torch.float64), padding=1)).numpy()
    np.testing.assert_allclose(y, ref, rtol=0, atol=2e-5 * np.abs(ref).max())


def test_packed_forward_falls_back_on_inputs_or_weights_that_are_not_tame(rng, monkeypatch):
    """The packed call gives WINOGRAD's bits, and where the input or the
    weights hold Inf, NaN or huge values what WINOGRAD then runs (BATCHED's
    direct sums: Inf and NaN where IEEE puts them)."""
    from convcore._ops.conv import _conv2d_packed
    w = (rng.standard_normal((128, 128, 3, 3)) * 0.05).astype(np.float32)
    b = rng.standard_normal(128).astype(np.float32)
    x = rng.standard_normal((2, 128, 14, 14)).astype(np.float32)
    xs = [x]
    for bad in (np.inf, np.nan, 3e29):
        xb = x.copy()
        xb[1, 5, 3, 4] = bad
        xs.append(xb)
    wb = w.copy()
    wb[3, 2, 1, 1] = np.nan
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "winograd")
    refs = [cc.conv2d(xi, w, b, padding=1) for xi in xs]
    ref_bad_w = cc.conv2d(x, wb, b, padding=1)
    monkeypatch.delenv("CONVCORE_CONV_STRATEGY")
    packs = {}
    for xi, ref in zip(xs, refs):
        np.testing.assert_array_equal(_conv2d_packed(xi, w, b, packs, padding=1), ref)
    assert len(packs) == 1
    assert not np.isfinite(refs[1]).all() and np.isfinite(refs[0]).all()
    got = _conv2d_packed(x, wb, b, {}, padding=1)
    np.testing.assert_array_equal(got, ref_bad_w)
    assert np.isnan(got[:, 3]).all() and not np.isnan(np.delete(got, 3, axis=1)).any()


@pytest.mark.parametrize("C,K", [(64, 128), (128, 64)], ids=["split-input", "split-output"])
def test_packed_5x5_forward_gives_winograds_bits(C, K, rng, monkeypatch):
    """A 5x5 layer's four transformed 3x3 pieces packed once: the packed
    forward gives WINOGRAD's bits (either split: fewer input or fewer
    output channels), one packed form serves two batch sizes, and the
    result stays within float32 rounding of PyTorch's float64 convolution;
    Inf in the input takes WINOGRAD's fallback."""
    torch = pytest.importorskip("torch")
    from convcore._ops.conv import _conv2d_packed
    w = (rng.standard_normal((K, C, 5, 5)) * 0.05).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    xs = [rng.standard_normal((n, C, 28, 28)).astype(np.float32) for n in (1, 3)]
    xinf = xs[1].copy()
    xinf[2, 7, 0, 27] = np.inf
    xs.append(xinf)
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "winograd")
    refs = [cc.conv2d(x, w, b, padding=2) for x in xs]
    monkeypatch.delenv("CONVCORE_CONV_STRATEGY")
    packs = {}
    for x, ref in zip(xs, refs):
        np.testing.assert_array_equal(_conv2d_packed(x, w, b, packs, padding=2), ref)
    assert len(packs) == 1 and next(iter(packs.values())) is not None
    assert np.isinf(refs[2]).any() and np.isfinite(refs[1]).all()
    exact = torch.nn.functional.conv2d(
        torch.tensor(xs[1], dtype=torch.float64), torch.tensor(w, dtype=torch.float64),
        torch.tensor(b, dtype=torch.float64), padding=2).numpy()
    np.testing.assert_allclose(refs[1], exact, rtol=0, atol=2e-5 * np.abs(exact).max())


def test_packed_form_only_where_it_runs_faster_and_never_when_a_strategy_is_forced(monkeypatch):
    from convcore._core import _conv
    from convcore._geometry import ConvGeom
    from convcore.backends import cpu

    def geom(N, C, H, K, s=1, k=3, p=1):
        OH = (H + 2 * p - k) // s + 1
        return ConvGeom(N, C, H, H, K, k, k, s, s, p, p, 1, 1, OH, OH, 1)
    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    assert cpu.conv2d_packable(geom(1, 256, 14, 256), f32)[0] > 0
    assert cpu.conv2d_packable(geom(1, 512, 7, 512), f32)[0] > 0    # (AUTO: BATCHED; GEMM form
    #                                                                    with AVX-512)
    assert cpu.conv2d_packable(geom(8, 64, 56, 64), f32)[0] > 0     # (AUTO: WINOGRAD)
    assert cpu.conv2d_packable(geom(1, 256, 14, 256), f64) == (0, 0)
    # (stride 2: no Winograd form; the GEMM form where the machine has it,
    # tests/conv/test_packed_gemm.py)
    assert cpu.conv2d_packable(geom(1, 256, 28, 512, s=2), f32)[1] in (0, _conv.PACK_GEMM)
    assert cpu.conv2d_packable(geom(1, 256, 14, 256, k=1, p=0), f32) == (0, 0)
    assert cpu.conv2d_packable(geom(1, 512, 1, 512), f32) == (0, 0)  # (only the centre tap)
    assert cpu.conv2d_packable(geom(1, 16, 14, 16), f32) == (0, 0)
    assert cpu.conv2d_packable(geom(1, 96, 27, 256, k=5, p=2), f32)[0] > 0   # AlexNet's
    assert cpu.conv2d_packable(geom(1, 16, 28, 32, k=5, p=2), f32) == (0, 0)  # (AUTO: BATCHED)
    assert cpu.conv2d_packable(geom(1, 96, 27, 256, k=5, p=2), f64) == (0, 0)
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "winograd")
    assert cpu.conv2d_packable(geom(1, 256, 14, 256), f32) == (0, 0)


def test_an_optimizer_step_in_eval_mode_reaches_the_packed_weights(rng):
    """Fine-tuning with batch norm frozen (eval mode): each step's new weights
    are folded and packed again."""
    net = _wide_block(rng)
    x = rng.standard_normal((1, 128, 14, 14)).astype(np.float32)
    net.eval()
    opt = cc.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):
        y = net(x)
        net.zero_grad()
        net.backward(np.ones_like(y))
        opt.step()
        with cc.no_grad():
            got = net(x)
        assert _packs(net) == 1
        conv, bn = net[0], net[1]
        z = cc.conv2d(x.astype(np.float64), conv.weight.data.astype(np.float64),
                      conv.bias.data.astype(np.float64), padding=1)
        a = bn.weight.data.astype(np.float64) / np.sqrt(bn.running_var + bn.eps)
        ref = np.maximum(a[:, None, None] * (z - bn.running_mean[:, None, None]) +
                         bn.bias.data[:, None, None], 0)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
