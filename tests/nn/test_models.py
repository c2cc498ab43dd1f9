"""The notes' networks: parameter counts, torchvision's state-dict names,
forward/backward on small batches, and logits equal to an equivalent PyTorch
model with the same weights."""
import functools

import numpy as np
import pytest

import convcore as cc
from convcore import models
from reference.nn import one_thread  # noqa: F401 (fixture)


# ------------------------------------------------------------ parameter counts
@functools.lru_cache(maxsize=1)
def full_size(name):
    """Full-size models are built once and shared by the tests that follow."""
    return models.get_model(name, rng=0)


@pytest.mark.parametrize("name,count", [
    ("lenet5", 61_706), ("alexnet", 62_378_344), ("resnet18", 11_689_512),
    ("resnet34", 21_797_672), ("resnet50", 25_557_032),
    ("vgg11", 132_863_336), ("vgg13", 133_047_848), ("vgg16", 138_357_544),
    ("vgg19", 143_667_240),
])
def test_parameter_count(name, count):
    assert full_size(name).num_parameters() == count


def test_lenet5_count_by_layer():
    # conv 6@5x5: 6*25+6; conv 16@5x5 on 6 maps: 16*150+16; FC 400-120-84-10.
    assert [p.size for p in models.lenet5(rng=0).parameters()] == [
        150, 6, 2400, 16, 48000, 120, 10080, 84, 840, 10]


def test_vgg_configuration_table_parameter_millions():
    # Table 2 of the notes: A, A-LRN 133; B 133; C 134; D 138; E 144 (millions).
    got = {c: round(full_size("vgg-" + c).num_parameters() / 1e6)
           for c in ("A", "A-LRN", "B", "C", "D", "E")}
    assert got == {"A": 133, "A-LRN": 133, "B": 133, "C": 134, "D": 138, "E": 144}


def test_vgg_config_is_the_table_column():
    assert models.VGG_CONFIGS["D"] == [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                       512, 512, 512, "M", 512, 512, 512, "M"]
    with pytest.raises(ValueError, match="config"):
        models.vgg("F")


# ------------------------------------------------------- torchvision's naming
def _bn(prefix):
    return [f"{prefix}.{s}" for s in ("weight", "bias", "running_mean", "running_var",
                                      "num_batches_tracked")]


def resnet_keys(blocks, convs_per_block, downsample_layers):
    keys = ["conv1.weight"] + _bn("bn1")
    for li, n in enumerate(blocks, start=1):
        for b in range(n):
            p = f"layer{li}.{b}"
            for c in range(1, convs_per_block + 1):
                keys += [f"{p}.conv{c}.weight"] + _bn(f"{p}.bn{c}")
            if b == 0 and li in downsample_layers:
                keys += [f"{p}.downsample.0.weight"] + _bn(f"{p}.downsample.1")
    return keys + ["fc.weight", "fc.bias"]


def test_resnet18_state_dict_matches_torchvision_names():
    sd = full_size("resnet18").state_dict()
    expected = resnet_keys((2, 2, 2, 2), 2, {2, 3, 4})
    assert list(sd) == expected and len(sd) == 122
    assert sd["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert sd["layer4.1.conv2.weight"].shape == (512, 512, 3, 3)
    assert sd["bn1.running_mean"].shape == (64,) and sd["bn1.num_batches_tracked"].shape == ()
    assert sd["fc.weight"].shape == (1000, 512)


def test_resnet50_state_dict_matches_torchvision_names():
    sd = models.resnet50(rng=0).state_dict()
    assert list(sd) == resnet_keys((3, 4, 6, 3), 3, {1, 2, 3, 4})
    assert sd["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert sd["layer3.2.conv2.weight"].shape == (256, 256, 3, 3)
    assert sd["fc.weight"].shape == (1000, 2048)


@pytest.mark.parametrize("name,conv_idx", [
    ("vgg11", [0, 3, 6, 8, 11, 13, 16, 18]),
    ("vgg16", [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]),
    ("vgg19", [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]),
])
def test_vgg_state_dict_matches_torchvision_names(name, conv_idx):
    m = full_size(name)
    # VGG has no buffers: the state dict is its parameters (the arrays are
    # only drawn for vgg11, to keep the run cheap).
    sd = m.state_dict() if name == "vgg11" else dict(
        (k, p) for k, p in m.named_parameters())
    expected = [f"features.{i}.{s}" for i in conv_idx for s in ("weight", "bias")]
    expected += [f"classifier.{i}.{s}" for i in (0, 3, 6) for s in ("weight", "bias")]
    assert list(sd) == expected
    assert sd["features.0.weight"].shape == (64, 3, 3, 3)
    assert sd["classifier.0.weight"].shape == (4096, 25088)
    assert sd["classifier.6.weight"].shape == (1000, 4096)


def test_same_seed_same_model_and_in_channels_num_classes():
    a, b = models.resnet18(num_classes=7, in_channels=1, rng=3), \
        models.resnet18(num_classes=7, in_channels=1, rng=3)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_array_equal(v, w, err_msg=k)
    assert a.conv1.weight.shape == (64, 1, 7, 7) and a.fc.weight.shape == (7, 512)


# ---------------------------------------------------- forward and backward
SMALL = [
    ("lenet5", dict(), (2, 1, 28, 28)), ("lenet5", dict(in_channels=3), (2, 3, 32, 32)),
    ("alexnet", dict(num_classes=10), (1, 3, 67, 67)),
    ("vgg11", dict(num_classes=10), (2, 3, 32, 32)),
    ("googlenet", dict(num_classes=10), (2, 3, 32, 32)),
    ("googlenet", dict(num_classes=10, in_channels=1), (2, 1, 28, 28)),
    ("resnet18", dict(num_classes=10, in_channels=1), (2, 1, 28, 28)),
    ("resnet18", dict(num_classes=10), (2, 3, 32, 32)),
]
SLOW = [
    ("vgg13", dict(num_classes=10), (1, 3, 32, 32)),
    ("vgg16", dict(num_classes=10), (1, 3, 32, 32)),
    ("vgg19", dict(num_classes=10), (1, 3, 32, 32)),
    ("resnet34", dict(num_classes=10), (2, 3, 32, 32)),
    ("resnet50", dict(num_classes=10), (2, 3, 32, 32)),
]


def _fwd_bwd(name, kw, shape):
    m = models.get_model(name, rng=0, **kw)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    y = m(x)
    assert y.shape == (shape[0], kw.get("num_classes", 10)) and np.isfinite(y).all()
    t = np.arange(shape[0]) % y.shape[1]
    gx = m.backward(cc.cross_entropy_backward(y, t))
    assert gx.shape == x.shape and np.isfinite(gx).all()
    grads = [p.grad for p in m.parameters()]
    assert all(np.isfinite(g).all() for g in grads)
    assert sum(bool(np.any(g)) for g in grads) > len(grads) // 2
    m.eval()
    assert m(x).shape == y.shape


@pytest.mark.parametrize("name,kw,shape", SMALL, ids=[f"{s[0]}-{s[2][1:]}" for s in SMALL])
def test_model_runs_forward_and_backward_on_a_small_batch(name, kw, shape):
    _fwd_bwd(name, kw, shape)


@pytest.mark.slow
@pytest.mark.parametrize("name,kw,shape", SLOW, ids=[s[0] for s in SLOW])
def test_big_model_runs_forward_and_backward_on_a_small_batch(name, kw, shape):
    _fwd_bwd(name, kw, shape)


def test_googlenet_aux_classifiers_in_training_only():
    m = models.googlenet(num_classes=5, aux_logits=True, rng=0)
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    out = m(x)
    assert isinstance(out, tuple) and [o.shape for o in out] == [(2, 5)] * 3
    gx = m.backward(tuple(np.ones_like(o) for o in out))
    assert gx.shape == x.shape
    with pytest.raises(ValueError, match="three gradients"):
        m.backward(np.ones((2, 5), np.float32))
    m.eval()
    assert m(x).shape == (2, 5)


# -------------------------------------------------- logits equal to PyTorch
def _torch_resnet18(torch, num_classes):
    tnn = torch.nn

    class Block(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(cout)
            self.relu = tnn.ReLU()
            self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False),
                                                 tnn.BatchNorm2d(cout))

        def forward(self, x):
            out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            idt = x if self.downsample is None else self.downsample(x)
            return self.relu(out + idt)

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = tnn.BatchNorm2d(64)
            self.relu = tnn.ReLU()
            self.maxpool = tnn.MaxPool2d(3, 2, 1)
            self.layer1 = tnn.Sequential(Block(64, 64, 1), Block(64, 64, 1))
            self.layer2 = tnn.Sequential(Block(64, 128, 2), Block(128, 128, 1))
            self.layer3 = tnn.Sequential(Block(128, 256, 2), Block(256, 256, 1))
            self.layer4 = tnn.Sequential(Block(256, 512, 2), Block(512, 512, 1))
            self.avgpool = tnn.AdaptiveAvgPool2d(1)
            self.fc = tnn.Linear(512, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))
    return Net()


def _torch_vgg11(torch, num_classes):
    tnn = torch.nn
    layers, c = [], 3
    for v in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]:
        if v == "M":
            layers.append(tnn.MaxPool2d(2, 2))
        else:
            layers += [tnn.Conv2d(c, v, 3, padding=1), tnn.ReLU()]
            c = v

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.features = tnn.Sequential(*layers)
            self.avgpool = tnn.AdaptiveAvgPool2d(7)
            self.classifier = tnn.Sequential(
                tnn.Linear(25088, 4096), tnn.ReLU(), tnn.Dropout(),
                tnn.Linear(4096, 4096), tnn.ReLU(), tnn.Dropout(), tnn.Linear(4096, num_classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
    return Net()


def _copy_weights(torch, ours, theirs):
    sd = ours.state_dict()
    theirs_sd = theirs.state_dict()
    assert list(sd) == list(theirs_sd)
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()})


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_resnet18_logits_and_input_gradient_equal_torch():
    torch = pytest.importorskip("torch")
    ours = models.resnet18(num_classes=10, rng=0)
    rng = np.random.default_rng(0)
    for m in ours.modules():  # non-trivial running statistics
        if isinstance(m, cc.nn.BatchNorm2d):
            m.running_mean[:] = rng.standard_normal(m.num_features) * 0.1
            m.running_var[:] = rng.random(m.num_features) + 0.5
            m.weight.data[:] = rng.random(m.num_features) + 0.5
    theirs = _torch_resnet18(torch, 10)
    _copy_weights(torch, ours, theirs)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        ref = theirs(torch.from_numpy(x)).numpy()
    assert _rel(ours(x), ref) < 1e-5
    # Training mode in float64: at 32x32 the last stage's batch norm sees two
    # values per channel, which amplifies float32 rounding far beyond 1e-5.
    ours.double().train()
    theirs.double().train()
    x = x.astype(np.float64)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    yt = theirs(xt)
    y = ours(x)
    assert _rel(y, yt.detach().numpy()) < 1e-10
    g = rng.standard_normal(y.shape)
    yt.backward(torch.from_numpy(g))
    assert _rel(ours.backward(g), xt.grad.numpy()) < 1e-9
    assert _rel(ours.conv1.weight.grad, theirs.conv1.weight.grad.numpy()) < 1e-9
    assert _rel(ours.fc.weight.grad, theirs.fc.weight.grad.numpy()) < 1e-9
    for k in ("bn1.running_mean", "layer4.1.bn2.running_var"):
        assert _rel(ours.state_dict()[k], theirs.state_dict()[k].numpy()) < 1e-10


def test_vgg11_logits_equal_torch():
    torch = pytest.importorskip("torch")
    ours = models.vgg11(num_classes=10, rng=0).eval()
    theirs = _torch_vgg11(torch, 10).eval()
    _copy_weights(torch, ours, theirs)
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = theirs(torch.from_numpy(x)).numpy()
    assert _rel(ours(x), ref) < 1e-5
