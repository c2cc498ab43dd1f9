"""Optimizers and schedules against torch.optim on a fixed gradient sequence."""
import numpy as np
import pytest

from convcore import optim


class _P:
    def __init__(self, a):
        self.data = a.copy()
        self.grad = np.zeros_like(a)


def _run_both(make_cc, make_torch, steps=25, dtype=np.float64, seed=0):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (5,)]
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    ps = [_P(a) for a in init]
    opt = make_cc(ps)
    tp = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    topt = make_torch(tp)
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad[...] = g
        opt.step()
        for p, g in zip(tp, gs):
            p.grad = torch.tensor(g)
        topt.step()
    return [p.data for p in ps], [p.detach().numpy() for p in tp]


SGD_CASES = [dict(), dict(momentum=0.9), dict(momentum=0.9, nesterov=True),
             dict(momentum=0.9, weight_decay=1e-2), dict(momentum=0.5, dampening=0.3),
             dict(momentum=0.9, nesterov=True, weight_decay=5e-4)]


@pytest.mark.parametrize("kw", SGD_CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sgd_matches_torch(kw, dtype):
    torch = pytest.importorskip("torch")
    a, b = _run_both(lambda p: optim.SGD(p, lr=0.05, **kw),
                     lambda p: torch.optim.SGD(p, lr=0.05, **kw), dtype=dtype)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    for x, y in zip(a, b):
        assert x.dtype == dtype
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


@pytest.mark.parametrize("cls, kw", [("Adam", dict()), ("Adam", dict(weight_decay=1e-2)),
                                     ("Adam", dict(betas=(0.8, 0.99), eps=1e-6)),
                                     ("AdamW", dict()), ("AdamW", dict(weight_decay=0.1))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adam_matches_torch(cls, kw, dtype):
    torch = pytest.importorskip("torch")
    a, b = _run_both(lambda p: getattr(optim, cls)(p, lr=0.01, **kw),
                     lambda p: getattr(torch.optim, cls)(p, lr=0.01, **kw), dtype=dtype)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


@pytest.mark.parametrize("make", [
    lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    lambda p: optim.Adam(p, lr=0.01),
    lambda p: optim.AdamW(p, lr=0.01)])
def test_state_dict_round_trip_continues_identically(make):
    rng = np.random.default_rng(1)
    init = rng.standard_normal(6)
    grads = rng.standard_normal((10, 6))
    a = [_P(init)]
    oa = make(a)
    for g in grads:
        a[0].grad[...] = g
        oa.step()
    b = [_P(init)]
    ob = make(b)
    for g in grads[:4]:
        b[0].grad[...] = g
        ob.step()
    saved = {k: np.array(v) for k, v in ob.state_dict().items()}
    c = [_P(b[0].data)]
    oc = make(c)
    oc.load_state_dict(saved)
    for g in grads[4:]:
        c[0].grad[...] = g
        oc.step()
    np.testing.assert_array_equal(a[0].data, c[0].data)


def test_load_state_dict_rejects_wrong_shapes_and_keys():
    o = optim.SGD([_P(np.zeros(3))], lr=0.1, momentum=0.9)
    bad = {"lr": 0.1, "initial_lr": 0.1, "step_count": 1, "state.0.momentum_buffer": np.zeros(4)}
    with pytest.raises(ValueError, match="shape"):
        o.load_state_dict(bad)
    bad = {"lr": 0.1, "initial_lr": 0.1, "step_count": 1, "state.0.exp_avg": np.zeros(3)}
    with pytest.raises(ValueError, match="unexpected"):
        o.load_state_dict(bad)


def test_schedules_match_torch():
    torch = pytest.importorskip("torch")
    for make_cc, make_t in [
            (lambda o: optim.StepLR(o, 3, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
            (lambda o: optim.CosineAnnealingLR(o, 10, 1e-4),
             lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 10, 1e-4))]:
        o = optim.SGD([_P(np.zeros(1))], lr=0.2)
        s = make_cc(o)
        to = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
        ts = make_t(to)
        for _ in range(10):
            to.step()
            ts.step()
            s.step()
            assert np.isclose(o.lr, to.param_groups[0]["lr"], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("make", [
    lambda: optim.SGD([_P(np.zeros(1))], lr=-1),
    lambda: optim.SGD([_P(np.zeros(1))], lr=0.1, nesterov=True),
    lambda: optim.SGD([], lr=0.1),
    lambda: optim.Adam([_P(np.zeros(1))], betas=(1.0, 0.9)),
    lambda: optim.StepLR(optim.SGD([_P(np.zeros(1))], lr=0.1), 0),
])
def test_bad_hyper_parameters(make):
    with pytest.raises(ValueError):
        make()
