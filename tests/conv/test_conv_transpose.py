"""conv_transpose2d: PyTorch parity, the adjoint identity with conv2d, the
layer, and its argument errors."""
import numpy as np
import pytest

import convcore as cc
from convcore import nn


def _random_geometry(rng):
    g = int(rng.integers(1, 4))
    s = tuple(int(v) for v in rng.integers(1, 4, 2))
    d = tuple(int(v) for v in rng.integers(1, 3, 2))
    k = tuple(int(v) for v in rng.integers(1, 4, 2))
    p = tuple(int(v) for v in rng.integers(0, 3, 2))
    op = tuple(int(rng.integers(0, max(si, di))) for si, di in zip(s, d))
    return dict(N=int(rng.integers(1, 3)), C=g * int(rng.integers(1, 3)),
                K=g * int(rng.integers(1, 3)), H=int(rng.integers(2, 6)),
                W=int(rng.integers(2, 6)), k=k,
                args=dict(stride=s, padding=p, output_padding=op, groups=g, dilation=d))


def _out(H, k, s, p, d, op):
    return (H - 1) * s - 2 * p + d * (k - 1) + op + 1


def _geometries(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        geo = _random_geometry(rng)
        a = geo["args"]
        if min(_out(geo["H"], geo["k"][0], a["stride"][0], a["padding"][0], a["dilation"][0],
                    a["output_padding"][0]),
               _out(geo["W"], geo["k"][1], a["stride"][1], a["padding"][1], a["dilation"][1],
                    a["output_padding"][1])) > 0:
            out.append(geo)
    return out


GEOMS = _geometries(24, 7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geo", GEOMS, ids=[f"g{i}" for i in range(len(GEOMS))])
def test_conv_transpose2d_matches_torch_forward_and_backward(geo, dtype, rng):
    torch = pytest.importorskip("torch")
    N, C, K, H, W, a = geo["N"], geo["C"], geo["K"], geo["H"], geo["W"], geo["args"]
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((C, K // a["groups"]) + geo["k"]).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    xt, wt, bt = (torch.tensor(v, requires_grad=True) for v in (x, w, b))
    yt = torch.nn.functional.conv_transpose2d(xt, wt, bt, **a)
    y = cc.conv_transpose2d(x, w, b, **a)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)
    assert y.dtype == dtype and y.shape == tuple(yt.shape)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
    g = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(torch.tensor(g))
    gx, gw, gb = cc.conv_transpose2d_backward(g, x, w, **a)
    assert gx.dtype == gw.dtype == gb.dtype == dtype
    np.testing.assert_allclose(gx, xt.grad.numpy(), **tol)
    np.testing.assert_allclose(gw, wt.grad.numpy(), **tol)
    np.testing.assert_allclose(gb, bt.grad.numpy(), **tol)


@pytest.mark.parametrize("geo", GEOMS[:12], ids=[f"g{i}" for i in range(12)])
def test_conv_transpose2d_is_the_adjoint_of_conv2d(geo, rng):
    # <conv2d(z, w), x> = <z, conv_transpose2d(x, w)> for every z and x
    N, C, K, H, W, a = geo["N"], geo["C"], geo["K"], geo["H"], geo["W"], geo["args"]
    w = rng.standard_normal((C, K // a["groups"]) + geo["k"])
    x = rng.standard_normal((N, C, H, W))
    y = cc.conv_transpose2d(x, w, **a)
    z = rng.standard_normal(y.shape)
    conv = cc.conv2d(z, w, stride=a["stride"], padding=a["padding"], dilation=a["dilation"],
                     groups=a["groups"])
    # an output_padding at least the stride gives conv2d extra rows: x is zero there
    conv = conv[:, :, :H, :W]
    lhs, rhs = np.vdot(conv, x), np.vdot(z, y)
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, np.vdot(np.abs(z), np.abs(y)))
    # and its input gradient is conv2d itself
    gx, _, _ = cc.conv_transpose2d_backward(z, x, w, **a, output_mask=(True, False, False))
    np.testing.assert_allclose(gx, conv, rtol=1e-12, atol=1e-12)


def test_conv_transpose2d_matches_naive_scatter(rng):
    # independent oracle: every input pixel stamps its kernel into the output
    x = rng.standard_normal((2, 4, 3, 4))
    w = rng.standard_normal((4, 3, 2, 3))          # groups=2: 2 in, 3 out per group
    s, p, d, op, G = (2, 1), (1, 0), (1, 2), (1, 0), 2
    Ho, Wo = (_out(3, 2, s[0], p[0], d[0], op[0]), _out(4, 3, s[1], p[1], d[1], op[1]))
    full = np.zeros((2, 6, Ho + 2 * p[0], Wo + 2 * p[1]))
    for n in range(2):
        for c in range(4):
            gi = c // 2
            for k in range(3):
                for i in range(3):
                    for j in range(4):
                        for a in range(2):
                            for b in range(3):
                                full[n, gi * 3 + k, i * s[0] + a * d[0], j * s[1] + b * d[1]] += \
                                    x[n, c, i, j] * w[c, k, a, b]
    want = full[:, :, p[0]:p[0] + Ho, p[1]:p[1] + Wo]
    got = cc.conv_transpose2d(x, w, stride=s, padding=p, dilation=d, output_padding=op,
                              groups=G)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", ["transposed", "sliced", "fortran", "readonly"])
def test_conv_transpose2d_accepts_any_strides(layout, rng):
    base = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    if layout == "transposed":
        x = np.ascontiguousarray(base.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    elif layout == "sliced":
        x = np.repeat(base, 2, axis=3)[..., ::2]
    elif layout == "fortran":
        x = np.asfortranarray(base)
    else:
        x = np.broadcast_to(base, base.shape)
    assert np.array_equal(x, base)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    want = cc.conv_transpose2d(base, w, stride=2, padding=1)
    np.testing.assert_array_equal(cc.conv_transpose2d(x, w, stride=2, padding=1), want)
    g = rng.standard_normal(want.shape).astype(np.float32)
    for a, b in zip(cc.conv_transpose2d_backward(g, x, w, stride=2, padding=1),
                    cc.conv_transpose2d_backward(g, base, w, stride=2, padding=1)):
        np.testing.assert_array_equal(a, b)


def test_conv_transpose2d_unbatched_and_empty_batch(rng):
    x = rng.standard_normal((3, 4, 4))
    w = rng.standard_normal((3, 2, 3, 3))
    y = cc.conv_transpose2d(x, w, stride=2)
    np.testing.assert_array_equal(y, cc.conv_transpose2d(x[None], w, stride=2)[0])
    g = rng.standard_normal(y.shape)
    gx, gw, gb = cc.conv_transpose2d_backward(g, x, w, stride=2)
    gx4, gw4, gb4 = cc.conv_transpose2d_backward(g[None], x[None], w, stride=2)
    np.testing.assert_array_equal(gx, gx4[0])
    np.testing.assert_array_equal(gw, gw4)
    e = cc.conv_transpose2d(np.zeros((0, 3, 4, 4)), w, stride=2)
    assert e.shape == (0, 2, 9, 9)
    gx, gw, gb = cc.conv_transpose2d_backward(np.zeros(e.shape), np.zeros((0, 3, 4, 4)), w,
                                              stride=2)
    assert gx.shape == (0, 3, 4, 4) and not gw.any() and not gb.any()


X4, W4 = np.zeros((1, 4, 5, 5)), np.zeros((4, 2, 3, 3))
BAD = [
    (dict(x=np.zeros((4, 5)),), ValueError, "3-D"),
    (dict(w=np.zeros((3, 2, 3, 3))), ValueError, "input channels"),
    (dict(w=np.zeros((4, 2, 3))), ValueError, "4-D"),
    (dict(groups=3), ValueError, "divisible by groups"),
    (dict(groups=0), ValueError, "groups"),
    (dict(stride=0), ValueError, "stride"),
    (dict(dilation=-1), ValueError, "dilation"),
    (dict(padding=-1), ValueError, "padding"),
    (dict(padding="same"), ValueError, "padding"),
    (dict(output_padding=2, stride=2), ValueError, "output_padding"),
    (dict(output_padding=1), ValueError, "smaller than either stride"),
    (dict(padding=4), ValueError, "not positive"),
    (dict(bias=np.zeros(3)), ValueError, r"bias must have shape \(2,\)"),
    (dict(x=np.zeros((1, 4, 5, 5), np.int64)), TypeError, "float32 or float64"),
    (dict(w=np.zeros((4, 2, 3, 3), np.float32)), TypeError, "dtype"),
    (dict(stride=1.5), TypeError, "stride"),
    (dict(stride=2**40), ValueError, "stride"),
    (dict(stride=2**30, dilation=2**30), ValueError, "exceeds the supported"),
    (dict(output_padding=-1), ValueError, "output_padding"),
]


@pytest.mark.parametrize("kw,exc,match", BAD)
def test_conv_transpose2d_rejects_bad_arguments(kw, exc, match):
    kw = dict(kw)
    x, w = kw.pop("x", X4), kw.pop("w", W4)
    with pytest.raises(exc, match=match):
        cc.conv_transpose2d(x, w, **kw)


def test_conv_transpose2d_backward_checks_grad_output_shape():
    with pytest.raises(ValueError, match=r"grad_output must have shape \(1, 2, 7, 7\)"):
        cc.conv_transpose2d_backward(np.zeros((1, 2, 7, 6)), X4, W4)


def test_conv_transpose_layer_matches_torch_and_has_its_state_dict(rng):
    torch = pytest.importorskip("torch")
    kw = dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=2, padding=(1, 0),
              output_padding=(1, 0), groups=2, dilation=(1, 2))
    ours = nn.ConvTranspose2d(**kw, rng=0)
    theirs = torch.nn.ConvTranspose2d(**kw)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    # the same init bounds: U(-b, b), b = 1/sqrt(out_channels/groups * kH * kW)
    bound = 1 / np.sqrt(3 * 3 * 2)
    for t in (ours.weight.data, ours.bias.data):
        assert np.abs(t).max() <= bound
    big = nn.ConvTranspose2d(64, 32, 3, rng=1).weight.data
    assert np.abs(big).max() > 0.99 / np.sqrt(32 * 9)
    ours.astype(np.float64)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    theirs.double()
    x = rng.standard_normal((2, 4, 5, 4))
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    y = ours(x)
    assert ours.output_shape(x.shape) == y.shape
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-11, atol=1e-12)
    g = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(ours.backward(g), xt.grad.numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-11,
                               atol=1e-12)
    np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), rtol=1e-11)


def test_conv_transpose_layer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="output_padding"):
        nn.ConvTranspose2d(2, 2, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.ConvTranspose2d(3, 2, 3, groups=2)
    with pytest.raises(TypeError, match="kernel_size"):
        nn.ConvTranspose2d(3, 2, 2.5)
    with pytest.raises(RuntimeError, match="before forward"):
        nn.ConvTranspose2d(3, 2, 2).backward(np.zeros((1, 2, 3, 3), np.float32))


def test_conv_transpose2d_is_identical_for_every_thread_count(rng):
    x = rng.standard_normal((3, 8, 9, 7)).astype(np.float32)
    w = rng.standard_normal((8, 6, 3, 3)).astype(np.float32)
    g = rng.standard_normal((3, 6, 18, 14)).astype(np.float32)
    kw = dict(stride=2, padding=1, output_padding=1)
    before = cc.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            cc.set_num_threads(n)
            results.append((cc.conv_transpose2d(x, w, **kw),)
                           + cc.conv_transpose2d_backward(g, x, w, **kw))
    finally:
        cc.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
