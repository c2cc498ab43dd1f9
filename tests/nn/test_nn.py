"""convcore.nn: every layer's backward against float64 central differences,
forward and backward against PyTorch, and the layer rows of the edge-case catalogue
(docs/contributing.rst)."""
import numpy as np
import pytest

import convcore as cc
from convcore import nn
from reference.nn import numeric_grad, one_thread  # noqa: F401 (fixture)


def distinct(rng, *shape):
    """Values at least 0.01 apart (max pooling and ReLU stay differentiable)."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.01 - n * 0.005 + 0.003).reshape(shape)


LAYERS = {
    "conv": lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1, dtype=np.float64, rng=0),
    "conv_groups_nobias": lambda: nn.Conv2d(4, 2, (3, 2), padding="same", groups=2,
                                            bias=False, dtype=np.float64, rng=0),
    "conv_dilated": lambda: nn.Conv2d(2, 2, 2, dilation=2, dtype=np.float64, rng=0),
    "relu": lambda: nn.ReLU(),
    "maxpool": lambda: nn.MaxPool2d(2),
    "maxpool_overlap": lambda: nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
    "avgpool": lambda: nn.AvgPool2d(3, 2, padding=1, count_include_pad=False),
    "adaptive": lambda: nn.AdaptiveAvgPool2d((2, 3)),
    "batchnorm_train": lambda: nn.BatchNorm2d(4, dtype=np.float64),
    "lrn": lambda: nn.LocalResponseNorm(3, alpha=0.5, beta=0.75, k=1.5),
    "flatten": lambda: nn.Flatten(),
    "basic_identity": lambda: nn.BasicBlock(4, 4, rng=0).double(),
    "basic_projection": lambda: nn.BasicBlock(4, 2, stride=2, rng=0).double(),
    "bottleneck_identity": lambda: nn.Bottleneck(4, 1, rng=0).double(),
    "bottleneck_projection": lambda: nn.Bottleneck(4, 2, stride=2, rng=0).double(),
    "inception": lambda: nn.Inception(4, 2, 2, 3, 1, 2, 2, rng=0).double(),
}


def _check_module_grads(m, x, rng, atol=1e-6, max_checks=40):
    """Backward against central differences at up to max_checks random entries
    of the input and of every parameter."""
    y = m(x)
    r = rng.standard_normal(y.shape)
    m.zero_grad()
    gx = m.backward(r)
    grads = {n: p.grad.copy() for n, p in m.named_parameters()}
    L = lambda: float(np.sum(m(x) * r))  # noqa: E731
    for name, arr, g in [("input", x, gx)] + [(n, p.data, grads[n])
                                              for n, p in m.named_parameters()]:
        idx = np.arange(arr.size) if arr.size <= max_checks else \
            rng.choice(arr.size, max_checks, replace=False)
        num = numeric_grad(L, arr, idx=idx)
        np.testing.assert_allclose(g.reshape(-1)[idx], num.reshape(-1)[idx], atol=atol,
                                   err_msg=name)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_backward_matches_finite_differences(name, rng):
    m = LAYERS[name]()
    shape = {"conv": (2, 2, 5, 6), "conv_dilated": (2, 2, 5, 6)}.get(name, (2, 4, 5, 6))
    if name.startswith(("basic", "bottleneck", "inception")):
        shape = (2, 4, 3, 3)
    _check_module_grads(m, distinct(rng, *shape), rng)


def test_linear_and_dropout_backward_match_finite_differences(rng):
    _check_module_grads(nn.Linear(5, 3, dtype=np.float64, rng=1), rng.standard_normal((4, 5)),
                        rng)
    d = nn.Dropout(0.4)
    x, r = rng.standard_normal((3, 7)), rng.standard_normal((3, 7))

    def L():
        d.rng = np.random.default_rng(5)
        return float(np.sum(d(x) * r))
    L()
    np.testing.assert_allclose(d.backward(r), numeric_grad(L, x), atol=1e-7)


def test_batchnorm_eval_backward_matches_finite_differences(rng):
    bn = nn.BatchNorm2d(3, dtype=np.float64)
    bn.running_mean[:] = rng.standard_normal(3)
    bn.running_var[:] = rng.random(3) + 0.5
    bn.eval()
    _check_module_grads(bn, rng.standard_normal((2, 3, 2, 2)), rng)


def test_small_network_gradient_matches_finite_differences(rng):
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, rng=0), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
        nn.LocalResponseNorm(2), nn.BasicBlock(3, 4, stride=2, rng=1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3, rng=2)).double()
    x = rng.standard_normal((3, 1, 8, 8))
    _check_module_grads(net, x, rng, atol=1e-5)


def test_backward_accumulates_into_grad(rng):
    m = nn.Linear(3, 2, dtype=np.float64, rng=0)
    x, g = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    m(x)
    m.backward(g)
    first = m.weight.grad.copy()
    gx2 = m.backward(g)
    np.testing.assert_allclose(m.weight.grad, 2 * first)
    m.zero_grad()
    assert not m.weight.grad.any() and not m.bias.grad.any()
    assert gx2.shape == x.shape


def test_gradcheck_passes_good_modules_and_catches_a_wrong_backward(rng):
    x = rng.standard_normal((2, 2, 4, 4))
    assert cc.gradcheck(nn.Conv2d(2, 2, 3, padding=1, rng=0), x)

    class Wrong(nn.ReLU):
        def backward(self, g):
            return super().backward(g) * 1.01
    with pytest.raises(AssertionError, match="input"):
        cc.gradcheck(Wrong(), x)
    assert cc.gradcheck(Wrong(), x, raise_exception=False) is False


# ----------------------------------------------------------------- EDGE_CASES
@pytest.mark.parametrize("kwargs,exc", [
    (dict(out_channels=0), ValueError),
    (dict(kernel_size=0), ValueError),
    (dict(kernel_size=-1), ValueError),
    (dict(kernel_size=2.5), TypeError),
    (dict(kernel_size=True), TypeError),
    (dict(kernel_size=(3, 3, 3)), ValueError),
    (dict(in_channels=0), ValueError),
    (dict(stride=0), ValueError),
    (dict(padding=-1), ValueError),
    (dict(padding="full"), ValueError),
    (dict(padding="same", stride=2), ValueError),
    (dict(groups=2, in_channels=3), ValueError),
    (dict(bias="yes"), TypeError),
    (dict(dtype=np.int32), TypeError),
])
def test_conv2d_constructor_refuses_bad_arguments(kwargs, exc):
    args = dict(in_channels=2, out_channels=4, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(exc):
        nn.Conv2d(**args)


def test_constructors_accept_numpy_integers():
    c = nn.Conv2d(np.int64(2), np.int32(4), np.int64(3), stride=np.int16(2))
    assert c.weight.shape == (4, 2, 3, 3) and c.stride == (2, 2)
    assert nn.Linear(np.int64(3), np.uint8(2)).weight.shape == (2, 3)
    assert nn.MaxPool2d(np.int64(2)).kernel_size == (2, 2)


@pytest.mark.parametrize("make,exc", [
    (lambda: nn.Linear(0, 3), ValueError), (lambda: nn.Linear(3, 2.0), TypeError),
    (lambda: nn.MaxPool2d(0), ValueError), (lambda: nn.MaxPool2d(2, padding=2), ValueError),
    (lambda: nn.AvgPool2d(2.5), TypeError), (lambda: nn.AvgPool2d(2, divisor_override=0),
                                             ValueError),
    (lambda: nn.AdaptiveAvgPool2d(0), ValueError), (lambda: nn.BatchNorm2d(0), ValueError),
    (lambda: nn.BatchNorm2d(3, momentum=2.0), ValueError),
    (lambda: nn.LocalResponseNorm(0), ValueError), (lambda: nn.Dropout(-0.1), ValueError),
    (lambda: nn.Dropout(0.5, rng="seed"), TypeError),
    (lambda: nn.Sequential(nn.ReLU(), 3), TypeError),
])
def test_other_constructors_refuse_bad_arguments(make, exc):
    with pytest.raises(exc):
        make()


ALL = dict(LAYERS, linear=lambda: nn.Linear(6, 2, dtype=np.float64, rng=0),
           dropout=lambda: nn.Dropout(0.5, rng=0),
           sequential=lambda: nn.Sequential(nn.ReLU(), nn.MaxPool2d(2)))


@pytest.mark.parametrize("name", sorted(ALL))
def test_backward_before_forward_is_a_runtime_error(name):
    with pytest.raises(RuntimeError, match="before forward"):
        ALL[name]().backward(np.ones((2, 4, 5, 6)))


@pytest.mark.parametrize("name", sorted(ALL))
def test_backward_twice_after_one_forward_gives_identical_results(name, rng):
    m = ALL[name]()
    x = distinct(rng, 2, 4, 5, 6)
    if name in ("conv", "conv_dilated"):
        x = distinct(rng, 2, 2, 5, 6)
    y = m(x)
    g = rng.standard_normal(y.shape)
    a, b = m.backward(g), m.backward(g)
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------- state dict
def test_state_dict_names_order_and_load_round_trip(rng):
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                        nn.Linear(2, 3))
    assert list(net.state_dict()) == [
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
        "1.num_batches_tracked", "4.weight", "4.bias"]
    other = nn.Sequential(nn.Conv2d(1, 2, 3, rng=9), nn.BatchNorm2d(2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(2, 3, rng=9))
    other.load_state_dict({k: v.copy() for k, v in net.state_dict().items()})
    x = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(net.eval()(x), other.eval()(x))


def test_load_state_dict_lists_every_offending_key():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(2, 3))
    sd = {k: v.copy() for k, v in net.state_dict().items()}
    del sd["0.bias"]
    sd["1.weight"] = np.zeros((3, 3), np.float32)
    sd["1.bias"] = sd["1.bias"].astype(np.float64)
    sd["extra"] = np.zeros(1)
    with pytest.raises(ValueError) as e:
        net.load_state_dict(sd)
    msg = str(e.value)
    for key in ("'0.bias'", "'1.weight'", "'1.bias'", "'extra'"):
        assert key in msg


def test_same_seed_gives_same_weights_and_init_follows_torch_bounds():
    a, b = nn.Conv2d(3, 8, 3, rng=42), nn.Conv2d(3, 8, 3, rng=42)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert not np.array_equal(a.weight.data, nn.Conv2d(3, 8, 3, rng=43).weight.data)
    w = nn.Linear(400, 300, rng=0).weight.data
    bound = 1 / np.sqrt(400)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.01 * bound
    assert w.dtype == np.float32


def test_train_eval_switches_every_submodule():
    net = nn.Sequential(nn.Dropout(), nn.Sequential(nn.BatchNorm2d(2)))
    net.eval()
    assert not any(m.training for m in net.modules())
    x = np.ones((2, 3))
    np.testing.assert_array_equal(net[0](x), x)
    net.train()
    assert all(m.training for m in net.modules())


# --------------------------------------------------------------------- torch
def _torch_pair(torch, ours, theirs):
    sd = {k: torch.tensor(np.asarray(v)) for k, v in ours.state_dict().items()}
    theirs.load_state_dict(sd)
    return theirs.double()


TORCH_LAYERS = [
    ("Conv2d", dict(in_channels=4, out_channels=3, kernel_size=3, stride=2, padding=1)),
    ("Conv2d", dict(in_channels=4, out_channels=4, kernel_size=(3, 1), groups=2,
                    dilation=(1, 2), padding="same", bias=False)),
    ("Linear", dict(in_features=30, out_features=5)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("AvgPool2d", dict(kernel_size=2, stride=1, padding=1, count_include_pad=False)),
    ("AdaptiveAvgPool2d", dict(output_size=(3, 2))),
    ("ReLU", dict()),
    ("Flatten", dict()),
    ("BatchNorm2d", dict(num_features=4)),
    ("LocalResponseNorm", dict(size=3, alpha=0.1, beta=0.75, k=2.0)),
]


@pytest.mark.parametrize("name,kwargs", TORCH_LAYERS, ids=[t[0] for t in TORCH_LAYERS])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_layer_matches_torch_forward_and_backward(name, kwargs, mode, rng):
    torch = pytest.importorskip("torch")
    ours = getattr(nn, name)(**kwargs)
    if ours.state_dict():
        ours.astype(np.float64)
    theirs = _torch_pair(torch, ours, getattr(torch.nn, name)(**kwargs))
    ours.train(mode == "train")
    theirs.train(mode == "train")
    x = distinct(rng, 2, 4, 5, 6)
    if name == "Linear":
        x = x.reshape(2, 4, 30)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    y = ours(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(ours.backward(g), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    for n, p in theirs.named_parameters():
        np.testing.assert_allclose(dict(ours.named_parameters())[n].grad, p.grad.numpy(),
                                   rtol=1e-10, atol=1e-12, err_msg=n)
    for k, v in theirs.state_dict().items():  # running statistics too
        np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), rtol=1e-12, err_msg=k)


def test_dropout_matches_torch_statistics():
    # Masks come from different generators; compare what they must share.
    x = np.ones((400, 250), np.float32)
    y = nn.Dropout(0.25, rng=0)(x)
    assert abs((y == 0).mean() - 0.25) < 0.01
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.75], rtol=1e-7)


def _torch_blocks(torch):
    tnn = torch.nn

    class Bottleneck(tnn.Module):
        def __init__(self, cin, planes, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, planes, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.conv3 = tnn.Conv2d(planes, 4 * planes, 1, bias=False)
            self.bn3 = tnn.BatchNorm2d(4 * planes)
            self.relu = tnn.ReLU()
            self.downsample = None
            if stride != 1 or cin != 4 * planes:
                self.downsample = tnn.Sequential(
                    tnn.Conv2d(cin, 4 * planes, 1, stride, bias=False), tnn.BatchNorm2d(4 * planes))

        def forward(self, x):
            h = self.relu(self.bn1(self.conv1(x)))
            h = self.relu(self.bn2(self.conv2(h)))
            h = self.bn3(self.conv3(h))
            return self.relu(h + (x if self.downsample is None else self.downsample(x)))

    class Inception(tnn.Module):
        def __init__(self, cin, c1, c3r, c3, c5r, c5, pp):
            super().__init__()
            self.branch1 = tnn.Sequential(tnn.Conv2d(cin, c1, 1), tnn.ReLU())
            self.branch2 = tnn.Sequential(tnn.Conv2d(cin, c3r, 1), tnn.ReLU(),
                                          tnn.Conv2d(c3r, c3, 3, padding=1), tnn.ReLU())
            self.branch3 = tnn.Sequential(tnn.Conv2d(cin, c5r, 1), tnn.ReLU(),
                                          tnn.Conv2d(c5r, c5, 5, padding=2), tnn.ReLU())
            self.branch4 = tnn.Sequential(tnn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                          tnn.Conv2d(cin, pp, 1), tnn.ReLU())

        def forward(self, x):
            return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x),
                              self.branch4(x)], 1)
    return Bottleneck, Inception


@pytest.mark.parametrize("which", ["bottleneck_identity", "bottleneck_projection",
                                   "inception"])
def test_blocks_match_torch_forward_and_backward(which, rng):
    torch = pytest.importorskip("torch")
    TB, TI = _torch_blocks(torch)
    ours = LAYERS[which]()
    theirs = {"bottleneck_identity": lambda: TB(4, 1, 1),
              "bottleneck_projection": lambda: TB(4, 2, 2),
              "inception": lambda: TI(4, 2, 2, 3, 1, 2, 2)}[which]()
    theirs = _torch_pair(torch, ours, theirs)
    x = distinct(rng, 2, 4, 5, 5)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    y = ours(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(ours.backward(g), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    mine = dict(ours.named_parameters())
    for n, p in theirs.named_parameters():
        np.testing.assert_allclose(mine[n].grad, p.grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=n)
