"""Memory of the layers: max pooling's compact indices, the Inception module's
single copy of its branch outputs, and the peak allocation of whole training
steps against budgets derived from what each layer must keep.

Allocation is counted with tracemalloc (NumPy reports every array it
allocates to it); nothing here is timed.
"""
import copy
import tracemalloc

import numpy as np
import pytest

import convcore as cc
from convcore import losses, models, nn
from convcore._ops import pool as pool_ops

# ------------------------------------------------------- max-pool indices

POOLS = [  # (kernel, stride, padding, dilation, ceil_mode, input HxW)
    (2, 2, 0, 1, False, (9, 8)),       # the 2x2/2 fast path, odd border
    (3, 2, 0, 1, False, (13, 13)),     # the 3x3/2 fast path (AlexNet)
    (3, 2, 1, 1, False, (12, 11)),     # GoogLeNet's stem pools
    (3, 1, 1, 1, True, (7, 6)),        # the Inception branch pool
    ((2, 3), (1, 2), (1, 1), (2, 1), True, (10, 9)),   # generic loops
]


def _x(rng, shape, dt):
    x = rng.standard_normal(shape).astype(dt)
    x[..., 0, :2] = x[..., 0, :1]      # ties: the first maximum must win
    return x


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("k,s,p,d,ceil,hw", POOLS)
def test_maxpool_layer_keeps_int32_indices_and_matches_the_int64_path_bit_for_bit(
        k, s, p, d, ceil, hw, dt, rng):
    x = _x(rng, (2, 3) + hw, dt)
    layer = nn.MaxPool2d(k, s, p, d, ceil_mode=ceil)
    y = layer(x)
    idx32 = layer._cache[0]
    assert idx32.dtype == np.int32
    # the functional API (PyTorch's int64 indices) gives the same output,
    # the same index values and, through its backward, the same gradient
    y64, idx64 = cc.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    assert idx64.dtype == np.int64
    np.testing.assert_array_equal(y, y64)
    np.testing.assert_array_equal(idx32, idx64)
    g = rng.standard_normal(y.shape).astype(dt)
    gx = layer.backward(g)
    ref = cc.max_pool2d_backward(g, idx64, x.shape)
    assert gx.dtype == ref.dtype and gx.tobytes() == ref.tobytes()
    # unbatched input, and int32 indices handed to the public backward
    layer1 = nn.MaxPool2d(k, s, p, d, ceil_mode=ceil)
    np.testing.assert_array_equal(layer1(x[0]), y[0])
    assert layer1._cache[0].dtype == np.int32
    assert layer1.backward(g[0]).tobytes() == ref[0].tobytes()


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("k,s,p,d,ceil,hw", POOLS)
def test_maxpool_layer_matches_torch(k, s, p, d, ceil, hw, dt, rng):
    torch = pytest.importorskip("torch")
    x = _x(rng, (2, 3) + hw, dt)
    layer = nn.MaxPool2d(k, s, p, d, ceil_mode=ceil)
    y = layer(x)
    g = rng.standard_normal(y.shape).astype(dt)
    gx = layer.backward(g)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.MaxPool2d(k, s, p, d, ceil_mode=ceil)(tx)
    ty.backward(torch.tensor(g))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(gx, tx.grad.numpy())


def test_public_api_keeps_pytorch_int64_indices(rng):
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    y, idx = nn.MaxPool2d(2, return_indices=True)(x)
    assert idx.dtype == np.int64
    _, idx_f = cc.max_pool2d(x, 2, return_indices=True)
    assert idx_f.dtype == np.int64
    g = np.ones_like(y)
    a = cc.max_pool2d_backward(g, idx_f, x.shape)
    b = cc.max_pool2d_backward(g, idx_f.astype(np.int32), x.shape)
    c = cc.max_pool2d_backward(g, idx_f.astype(np.int16), x.shape)
    assert a.tobytes() == b.tobytes() == c.tobytes()


def test_int32_indices_out_of_range_are_refused(rng):
    y, idx = cc.max_pool2d(rng.standard_normal((1, 1, 4, 4)), 2, return_indices=True)
    bad = idx.astype(np.int32)
    bad[0, 0, 0, 0] = 16
    with pytest.raises(ValueError, match=r"\[0, H\*W\)"):
        cc.max_pool2d_backward(np.ones_like(y), bad, (1, 1, 4, 4))
    bad[0, 0, 0, 0] = -1
    with pytest.raises(ValueError, match=r"\[0, H\*W\)"):
        cc.max_pool2d_backward(np.ones_like(y), bad, (1, 1, 4, 4))


def test_index_dtype_rule_int32_only_while_every_plane_index_fits():
    from convcore.backends import cpu, cuda

    side = 46340                          # 46340**2 < 2**31 <= 46341**2
    assert cpu.index_dtype(side * side) == np.int32
    assert cpu.index_dtype((side + 1) * (side + 1)) == np.int64
    assert cpu.index_dtype((2**31 - 1) * 1) == np.int32
    assert cpu.index_dtype(1 * 2**31) == np.int64
    assert cuda.index_dtype(4 * 4) == np.int64     # the GPU keeps int64


def test_layer_falls_back_to_int64_for_planes_past_the_limit(monkeypatch, rng):
    from convcore.backends import cpu
    # the rule, not a 2**31-element plane: lower the limit to 15 elements
    monkeypatch.setattr(cpu, "INT32_PLANE", 15)
    x = rng.standard_normal((2, 2, 4, 4))
    layer = nn.MaxPool2d(2)
    y = layer(x)
    assert layer._cache[0].dtype == np.int64
    g = rng.standard_normal(y.shape)
    _, idx = cc.max_pool2d(x, 2, return_indices=True)
    assert layer.backward(g).tobytes() == cc.max_pool2d_backward(g, idx, x.shape).tobytes()
    layer(x[:, :, :3, :3])                 # 9 elements: int32 again
    assert layer._cache[0].dtype == np.int32


# ------------------------------------------- ReLU before a pooling layer

@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("pool", [lambda: nn.MaxPool2d(2), lambda: nn.AvgPool2d(2),
                                  lambda: nn.AdaptiveAvgPool2d(1)])
def test_relu_before_a_pool_keeps_a_bool_mask_with_the_same_gradient(pool, dt, rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(dt)
    x[0, 0, 0, :3] = [0.0, -0.0, np.nan]
    net = nn.Sequential(nn.ReLU(), pool())
    y = net(x)
    assert net[0]._x.dtype == bool and net[0]._x.nbytes * x.itemsize == x.nbytes
    g = rng.standard_normal(y.shape).astype(dt)
    gx = net.backward(g)
    # against the layers one by one, the ReLU keeping its output
    relu, p = nn.ReLU(), pool()
    p(relu(x))
    ref = relu.backward(p.backward(g))
    assert relu._x.dtype == dt and gx.dtype == dt
    np.testing.assert_array_equal(gx, ref)
    # a NaN or Inf gradient gives exactly 0 where the output was not positive
    bad = np.full(x.shape, np.nan, dt)
    got = net[0].backward(bad)
    want = cc.relu_backward(bad, np.maximum(x, 0))
    np.testing.assert_array_equal(got, want)
    # followed by a layer that keeps its input, the ReLU keeps its output
    net2 = nn.Sequential(nn.ReLU(), nn.Conv2d(3, 2, 1, rng=0).astype(dt))
    net2(x)
    assert net2[0]._x.dtype == dt


# ------------------------------------------------------------- Inception

def _old_inception_forward(m, x):
    """The module as it was: each branch on its own, then a concatenation."""
    outs = [b(x) for b in m._branches()]
    return np.concatenate(outs, axis=1), [o.shape[1] for o in outs]


def _old_inception_backward(m, splits, g):
    gx, start = None, 0
    for b, c in zip(m._branches(), splits):
        gb = b.backward(g[:, start:start + c])
        gx = gb if gx is None else gx + gb
        start += c
    return gx


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_inception_matches_its_former_two_copy_version(dt, rng):
    m = nn.Inception(12, 6, 4, 8, 3, 5, 4, rng=0).astype(dt)
    old = copy.deepcopy(m)
    x = rng.standard_normal((2, 12, 7, 9)).astype(dt)
    y = m(x)
    y_old, splits = _old_inception_forward(old, x)
    assert y.tobytes() == y_old.tobytes()
    g = rng.standard_normal(y.shape).astype(dt)
    gx = m.backward(g)
    gx_old = _old_inception_backward(old, splits, g)
    np.testing.assert_array_equal(gx, gx_old)
    for (name, p), (_, q) in zip(m.named_parameters(), old.named_parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)
    # the concatenated output is the only copy: every branch's last ReLU
    # keeps a view of it, and no branch output exists besides
    for b in m._branches():
        relu = list(b)[-1]
        assert np.shares_memory(relu._x, y)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_inception_matches_torch(dt, rng):
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    cin, c1, c3r, c3, c5r, c5, pp = 10, 4, 3, 6, 2, 3, 5
    m = nn.Inception(cin, c1, c3r, c3, c5r, c5, pp, rng=1).astype(dt)
    t = tnn.ModuleDict({
        "branch1": tnn.Sequential(tnn.Conv2d(cin, c1, 1), tnn.ReLU()),
        "branch2": tnn.Sequential(tnn.Conv2d(cin, c3r, 1), tnn.ReLU(),
                                  tnn.Conv2d(c3r, c3, 3, padding=1), tnn.ReLU()),
        "branch3": tnn.Sequential(tnn.Conv2d(cin, c5r, 1), tnn.ReLU(),
                                  tnn.Conv2d(c5r, c5, 5, padding=2), tnn.ReLU()),
        "branch4": tnn.Sequential(tnn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                  tnn.Conv2d(cin, pp, 1), tnn.ReLU())})
    t = t.to(torch.float64 if dt == np.float64 else torch.float32)
    sd = t.state_dict()
    for k, v in m.state_dict().items():
        sd[k].copy_(torch.from_numpy(np.array(v)))
    x = rng.standard_normal((3, cin, 6, 5)).astype(dt)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.cat([t[f"branch{i}"](tx) for i in range(1, 5)], 1)
    y = m(x)
    g = rng.standard_normal(y.shape).astype(dt)
    ty.backward(torch.tensor(g))
    gx = m.backward(g)
    tol = dict(rtol=1e-4, atol=1e-5) if dt == np.float32 else dict(rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
    np.testing.assert_allclose(gx, tx.grad.numpy(), **tol)
    tparams = dict(t.named_parameters())
    for name, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, tparams[name].grad.numpy(), err_msg=name, **tol)


# --------------------------------------------------- whole training steps
#
# Peak allocation of one training step (forward, cross-entropy gradient,
# backward) once the convolution workspace exists (it is reused from step to
# step, bounded by set_workspace_limit, and its size is the convolution
# strategy's business), against a budget built from what the step cannot do
# without:
#   saved       what the layers must keep for the backward pass, from the
#               model's summary (rules per model below);
#   dW          one convolution weight gradient: the C convolution core
#               writes dW into a new array that Conv2d.backward then adds to
#               .grad (the largest weight of the model, once);
#   flow        the gradients in flight, at most four of the largest
#               activation: in an Inception module's max-pool branch, the
#               module's incoming gradient, its running sum of the input
#               gradient, and the convolution's and the pool's input
#               gradients; in a residual block, the incoming gradient, the
#               shortcut's, and the main path's in and out of a layer;
#   slack       0.5 MiB for small arrays (batch statistics, logits, the
#               classifier's gradients, Python objects).
# A parameter-sized temporary (an optimizer-style `grad = grad + dW`), a
# second copy of the activations, or a layer that keeps its input where its
# output (or int32 indices) would do, each exceeds one of these budgets.

_MiB = 2**20


def _by(rows, *types):
    return sum(r["activation_bytes"] for r in rows if r["type"] in types)


def _resnet_saved(rows):
    # batch norm keeps its input (the convolution's output, which nothing
    # else keeps); every ReLU keeps its output, which is the next
    # convolution's input too; max pooling keeps int32 indices, one per
    # output element (the bytes of a float32 output); the classifier keeps
    # its input (the pooled features)
    # -- except the stem's ReLU, whose output only the max pool reads: it
    # keeps a bool mask (a quarter of its float32 output)
    stem = [r for r in rows if r["name"] == "relu"][0]["activation_bytes"]
    return (_by(rows, "BatchNorm2d") + _by(rows, "ReLU", "Add+ReLU") - stem + stem // 4
            + _by(rows, "MaxPool2d") + _by(rows, "AdaptiveAvgPool2d"))


def _inception_saved(rows):
    # no batch norm: a convolution's output is rectified into a new array
    # and freed; every ReLU keeps its output (the last one of each branch
    # inside the concatenated output, which is not counted again); every max
    # pool's output is kept by the convolutions after it, plus its int32
    # indices; the classifier keeps the pooled features.  The first ReLU's
    # output is read by a max pool only: a bool mask, a quarter of its bytes
    first = [r for r in rows if r["name"] == "1"][0]["activation_bytes"]
    return (_by(rows, "ReLU") - first + first // 4 + 2 * _by(rows, "MaxPool2d")
            + _by(rows, "AdaptiveAvgPool2d"))


def _inception_net():
    # GoogLeNet's pattern at a small scale: consecutive Inception modules,
    # each keeping the previous one's output as its convolutions' input (an
    # Inception that kept its branch outputs besides would hold two copies);
    # without GoogLeNet's LRN layers, whose NumPy backward needs several
    # temporaries of its input's size
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1, rng=0), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
        nn.Inception(64, 32, 48, 64, 8, 16, 16, rng=1),
        nn.Inception(128, 64, 64, 96, 16, 48, 32, rng=2),
        nn.Inception(240, 96, 48, 104, 8, 24, 32, rng=3),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10, rng=4))


def _classifier_saved(rows):
    # the ReLU before the max pool keeps a bool mask; the pool keeps int32
    # indices; each linear layer keeps its input (the pooled features, seen
    # through Flatten, and the hidden ReLU's output, which is also its mask)
    relu1 = [r for r in rows if r["name"] == "1"][0]["activation_bytes"]
    hidden = [r for r in rows if r["name"] == "5"][0]["activation_bytes"]
    return relu1 // 4 + 2 * _by(rows, "MaxPool2d") + hidden


def _classifier_net():
    # a large fully connected layer (8 MiB of weights) on small activations:
    # a weight-sized temporary in Linear.backward stands out
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, rng=0), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(8 * 16 * 16, 1024, rng=1), nn.ReLU(), nn.Linear(1024, 10, rng=2))


def _budget(net, shape, saved_rule):
    rows = cc.summary(net, shape).rows
    saved = saved_rule(rows)
    largest = max(r["activation_bytes"] for r in rows if r["type"] != "Input")
    dw = max(m.weight.data.nbytes for m in net.modules() if isinstance(m, nn.Conv2d))
    parts = dict(saved=saved, dW=dw, flow=4 * largest, slack=_MiB // 2)
    return sum(parts.values()), parts


def _step(net, x):
    t = np.arange(x.shape[0]) % 10
    logits = net(x)
    net.backward(losses.cross_entropy_backward(logits, t).astype(logits.dtype, copy=False))


def _step_peak(net, x):
    """Peak bytes allocated during one training step above what was
    allocated when it started.  As from the second step of a training run,
    every parameter's .grad exists and the convolution workspace has been
    sized (by a step of a copy of the network), so the peak is the step's
    own: activations, gradients, temporaries."""
    warm = copy.deepcopy(net)
    _step(warm, x)
    del warm
    for p in net.parameters():
        p.grad
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        _step(net, x)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


STEPS = {
    "resnet18": (lambda: models.resnet18(num_classes=10, rng=0), (8, 3, 64, 64),
                 _resnet_saved),
    "inception": (_inception_net, (4, 3, 32, 32), _inception_saved),
    "classifier": (_classifier_net, (4, 3, 32, 32), _classifier_saved),
}


@pytest.mark.parametrize("name", sorted(STEPS))
def test_training_step_peak_allocation_within_budget(name):
    make, shape, rule = STEPS[name]
    net = make()
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    peak = _step_peak(net, x)
    budget, parts = _budget(net, shape, rule)
    detail = ", ".join(f"{k} {v / _MiB:.2f}" for k, v in parts.items())
    assert peak <= budget, (f"{name}: a training step's peak allocation {peak / _MiB:.2f} MiB "
                            f"exceeds its budget {budget / _MiB:.2f} MiB ({detail} MiB)")
