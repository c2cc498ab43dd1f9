"""Parameter gradients: the first backward after ``zero_grad`` stores its
result as ``.grad``, later ones add into it; checked against PyTorch's
accumulation, and against aliasing (a gradient taken over must never be a
buffer the next call writes)."""
import numpy as np
import pytest

import convcore.nn as nn
from convcore import optim

torch = pytest.importorskip("torch")

LAYERS = {
    "conv": (lambda: nn.Conv2d(3, 4, 3, padding=1, rng=0),
             lambda: torch.nn.Conv2d(3, 4, 3, padding=1), (2, 3, 5, 6)),
    # a 1x1 map: the reduced-tap path, whose weight gradient is expanded
    "conv_1x1_map": (lambda: nn.Conv2d(6, 5, 3, padding=1, rng=0),
                     lambda: torch.nn.Conv2d(6, 5, 3, padding=1), (8, 6, 1, 1)),
    "conv_transpose": (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, rng=0),
                       lambda: torch.nn.ConvTranspose2d(3, 4, 3, stride=2), (2, 3, 4, 5)),
    "linear": (lambda: nn.Linear(7, 3, rng=0), lambda: torch.nn.Linear(7, 3), (5, 7)),
    "batchnorm": (lambda: nn.BatchNorm2d(3), lambda: torch.nn.BatchNorm2d(3), (4, 3, 2, 3)),
}


def _pair(name):
    make, make_t, shape = LAYERS[name]
    m = make().double()
    t = make_t().double()
    with torch.no_grad():
        for pname, p in m.named_parameters():
            dict(t.named_parameters())[pname].copy_(torch.from_numpy(
                np.random.default_rng(len(pname)).standard_normal(p.shape)))
            p.data[...] = dict(t.named_parameters())[pname].numpy()
    return m, t, shape


def _torch_grads(t, x, gs):
    """PyTorch's accumulated parameter gradients after one backward per g."""
    t.zero_grad()
    for g in gs:
        (t(torch.from_numpy(x)) * torch.from_numpy(g)).sum().backward()
    return {n: p.grad.numpy().copy() for n, p in t.named_parameters()}


def _run(m, x, g):
    m(x)
    m.backward(g)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_backwards_add_up_and_zero_grad_starts_afresh(name):
    m, t, shape = _pair(name)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    out_shape = m(x).shape
    g1, g2 = rng.standard_normal(out_shape), rng.standard_normal(out_shape)
    one, two = _torch_grads(t, x, [g1]), _torch_grads(t, x, [g1, g2])

    m.zero_grad()
    _run(m, x, g1)
    _run(m, x, g2)
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, two[n], rtol=1e-10, atol=1e-12, err_msg=n)

    m.zero_grad()                       # dropped: reading gives zeros
    for n, p in m.named_parameters():
        assert p.grad.shape == p.data.shape and not p.grad.any(), n
    m.zero_grad()
    _run(m, x, g1)
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, one[n], rtol=1e-10, atol=1e-12, err_msg=n)

    held = {n: p.grad for n, p in m.named_parameters()}
    m.zero_grad(set_to_none=False)      # zeroed in place: the same arrays
    for n, p in m.named_parameters():
        assert p.grad is held[n] and not held[n].any(), n
    _run(m, x, g2)
    _run(m, x, g1)
    for n, p in m.named_parameters():
        assert p.grad is held[n], n
        np.testing.assert_allclose(p.grad, two[n], rtol=1e-10, atol=1e-12, err_msg=n)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_a_gradient_taken_over_is_not_written_by_later_calls(name):
    a, t, shape = _pair(name)
    b, _, _ = _pair(name)
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape)
    g = rng.standard_normal(a(x).shape)
    want = _torch_grads(t, x, [g])
    a.zero_grad()
    _run(a, x, g)
    kept = {n: p.grad for n, p in a.named_parameters()}
    for _ in range(2):                  # same geometry, other data, both orders
        _run(b, 3 * x + 1, -g)
        b.zero_grad()
    for n, p in a.named_parameters():
        assert p.grad is kept[n]
        np.testing.assert_allclose(p.grad, want[n], rtol=1e-10, atol=1e-12, err_msg=n)


def test_optimizer_zero_grad_drops_parameters_and_zeroes_other_objects():
    net = nn.Sequential(nn.Linear(4, 3, rng=0))

    class Plain:                        # any object with .data and .grad
        def __init__(self):
            self.data = np.ones(2)
            self.grad = np.full(2, 5.0)

    plain = Plain()
    arr = plain.grad
    opt = optim.SGD(list(net.parameters()) + [plain], lr=0.1)
    net(np.ones((2, 4), np.float32))
    net.backward(np.ones((2, 3), np.float32))
    opt.zero_grad()
    assert all(p._grad is None for p in net.parameters())
    assert plain.grad is arr and not arr.any()
    opt.step()                          # zero gradients: nothing moves
    np.testing.assert_array_equal(plain.data, 1.0)
    held = [p.grad for p in net.parameters()]
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is h and not h.any() for p, h in zip(net.parameters(), held))
