"""convcore.no_grad(): forward passes that keep nothing for a backward pass.

References: the same modules run with gradients enabled (the outputs must be
the same bits), PyTorch's ReLU/max-pool, and the state each module holds."""
import copy
import threading

import numpy as np
import pytest

import convcore as cc
from convcore import nn


def _every_layer(rng):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, rng=rng), nn.BatchNorm2d(8), nn.ReLU(),
        nn.MaxPool2d(2), nn.LocalResponseNorm(3), nn.Conv2d(8, 8, 3, padding=1, rng=rng),
        nn.ReLU(), nn.AvgPool2d(2), nn.Dropout(0.3, rng=0), nn.Conv2d(8, 6, 1, rng=rng),
        nn.Tanh(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 10, rng=rng),
        nn.LeakyReLU(0.1), nn.Linear(10, 5, rng=rng), nn.Sigmoid(), nn.LogSoftmax(dim=1))


def _saved(net):
    """Every attribute in which a module keeps state for its backward pass."""
    return {(name, a): getattr(m, a, None) for name, m in net.named_modules()
            for a in type(m)._saved_state}


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_outputs_are_the_same_bits_and_nothing_is_kept(mode, rng):
    net = _every_layer(rng)
    twin = copy.deepcopy(net)                  # (running statistics move in training)
    for m in (net, twin):
        m.train(mode == "train")
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    ref = twin(x.copy())
    assert any(v is not None for v in _saved(twin).values())
    with cc.no_grad():
        assert not cc.is_grad_enabled()
        y = net(x.copy())
    assert cc.is_grad_enabled()
    np.testing.assert_array_equal(y, ref)
    kept = {k: v for k, v in _saved(net).items() if v is not None}
    assert not kept, f"modules kept state under no_grad: {sorted(kept)}"
    if mode == "train":
        for a, b in zip(net.modules(), twin.modules()):
            if isinstance(a, nn.BatchNorm2d):
                np.testing.assert_array_equal(a.running_mean, b.running_mean)


@pytest.mark.parametrize("name, shape", [("lenet5", (3, 1, 28, 28)), ("resnet18", (1, 3, 64, 64)),
                                         ("googlenet", (1, 3, 64, 64))])
def test_networks_in_eval_mode_give_the_same_logits(name, shape, rng):
    net = getattr(cc.models, name)(rng=0).eval()
    x = rng.standard_normal(shape).astype(np.float32)
    ref = net(x)
    with cc.no_grad():
        y = net(x)
    np.testing.assert_array_equal(y, ref)


def test_backward_after_a_no_grad_forward_raises_until_forward_runs_again(rng):
    net = _every_layer(rng).eval()
    x = rng.standard_normal((2, 3, 8, 8))
    x = x.astype(np.float32)
    y = net(x)
    g = rng.standard_normal(y.shape).astype(np.float32)
    fresh = copy.deepcopy(net)
    with cc.no_grad():
        net(x)
    with pytest.raises(RuntimeError, match=r"no_grad\(\)"):
        net.backward(g)
    for m in net.modules():                      # any single module, too
        if type(m)._saved_state and m.__dict__.get("_forward_without_grad"):
            with pytest.raises(RuntimeError, match=r"no_grad\(\)"):
                m.backward(g)
    net.zero_grad()
    net(x)
    gx = net.backward(g)
    fresh.zero_grad()
    fresh(x)
    np.testing.assert_array_equal(gx, fresh.backward(g))
    for (k, p), (_, q) in zip(net.named_parameters(), fresh.named_parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=k)


def test_relu_and_max_pool_under_no_grad_match_pytorch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 9, 9))
    x[0, 0, 0, 0] = np.nan
    x[1, 2, 4, 4] = -0.0
    relu, pool = nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1)
    keep = x.copy()
    with cc.no_grad():
        y = relu(x)
        z = pool(y)
        zi, idx = nn.MaxPool2d(3, stride=2, padding=1, return_indices=True)(y)
    np.testing.assert_array_equal(x, keep)         # not in place: the input is the user's
    t = torch.from_numpy(x)
    np.testing.assert_array_equal(y, torch.relu(t).numpy())
    tz, tidx = torch.nn.functional.max_pool2d(torch.relu(t), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(z, tz.numpy())
    np.testing.assert_array_equal(zi, tz.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    assert idx.dtype == np.int64
    inplace = nn.ReLU(inplace=True)
    with cc.no_grad():
        out = inplace(x)
    assert out is x and np.array_equal(x, torch.relu(t).numpy(), equal_nan=True)


def test_decorator_nesting_exceptions_and_threads():
    seen = {}

    @cc.no_grad()
    def inner():
        return cc.is_grad_enabled()

    assert inner() is False and cc.is_grad_enabled()
    assert inner.__name__ == "inner"
    ctx = cc.no_grad()
    with ctx:
        with ctx:                      # the same object, nested
            assert not cc.is_grad_enabled()
        assert not cc.is_grad_enabled()

        def other():
            seen["thread"] = cc.is_grad_enabled()
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert cc.is_grad_enabled() and seen["thread"] is True   # per thread
    with pytest.raises(KeyError):
        with cc.no_grad():
            raise KeyError("x")
    assert cc.is_grad_enabled()
    with pytest.raises(TypeError, match="decorates a function"):
        cc.no_grad()(3)


def test_a_forward_that_fails_under_no_grad_leaves_no_stale_backward(rng):
    net = nn.Sequential(nn.Linear(4, 3, rng=rng), nn.ReLU())
    x = rng.standard_normal((2, 4)).astype(np.float32)
    net(x)
    with cc.no_grad():
        with pytest.raises(ValueError):
            net(rng.standard_normal((2, 5)).astype(np.float32))
    with pytest.raises(RuntimeError, match=r"no_grad\(\)"):
        net.backward(np.ones((2, 3), np.float32))


@pytest.mark.usefixtures("wide_vectors")   # (the fused kernel: AUTO with AVX-512 only)
def test_conv_relu_pool_run_as_one_pass_in_a_sequential(rng):
    from convcore.nn import layers
    calls = []
    real = layers._conv2d_relu_maxpool2

    def spy(*a, **k):
        y = real(*a, **k)
        calls.append(y is not None)
        return y
    net = cc.models.lenet5(rng=0).eval()
    x = rng.standard_normal((5, 1, 28, 28)).astype(np.float32)
    ref = net(x)
    layers._conv2d_relu_maxpool2 = spy
    try:
        with cc.no_grad():
            y = net(x)
        net.train()
        with cc.no_grad():
            y_train = net(x)
    finally:
        layers._conv2d_relu_maxpool2 = real
    assert calls == [True, False, True, False]   # conv2 (16 channels): left to the modules
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(y_train, ref)   # no batch norm or dropout in LeNet-5
    for m in (net.conv1, net.relu1, net.pool1):
        with pytest.raises(RuntimeError, match=r"no_grad\(\)"):
            m.backward(np.ones((5, 6, 14, 14), np.float32))
    # a pool that must return indices, or rounds up, is left to the modules
    seq = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=rng), nn.ReLU(),
                        nn.MaxPool2d(2, ceil_mode=True))
    xs = rng.standard_normal((2, 1, 27, 27)).astype(np.float32)
    with cc.no_grad():
        got = seq(xs)
    np.testing.assert_array_equal(got, seq(xs))
