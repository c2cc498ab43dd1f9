"""The non-convolution ops, timed in a child process, one library per process.

An op case is a JSON dict ``{"id", "op", "shape", "params"}`` with ``op`` one
of ``max_pool, avg_pool, adaptive_avg_pool, lrn, relu, residual_add, concat,
linear, cross_entropy, batch_norm`` (the shapes of the networks come from
``_nets.other_ops``).  Every side builds its inputs with :func:`inputs` from
the same seed.  ``side_*`` import their own library only and return
``{"<id>|<pass>": measure-dict, "_versions": {...}}``.
"""
from __future__ import annotations

import numpy as np

from _runner import measure


def _pair(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (v, v)


def passes(case):
    return {"residual_add": ("fwd",), "relu": ("fwd", "bwd")}.get(case["op"], ("fwd", "fwd+bwd"))


def _pool_out(n, k, s, p, ceil):
    num = n + 2 * p - k
    o = (-(-num // s) if ceil else num // s) + 1
    if ceil and (o - 1) * s >= n + p:
        o -= 1
    return o


def out_shape(case):
    op, shape, prm = case["op"], list(case["shape"]), case.get("params", {})
    if op in ("max_pool", "avg_pool"):
        k, s, p = _pair(prm["kernel"]), _pair(prm["stride"]), _pair(prm.get("padding", 0))
        ceil = prm.get("ceil_mode", False)
        return shape[:2] + [_pool_out(shape[2], k[0], s[0], p[0], ceil),
                            _pool_out(shape[3], k[1], s[1], p[1], ceil)]
    if op == "adaptive_avg_pool":
        return shape[:2] + list(_pair(prm["output_size"]))
    if op == "linear":
        return shape[:-1] + [prm["out_features"]]
    if op == "cross_entropy":
        return []
    return shape


def inputs(case, seed=0):
    """The arrays of one case (float32): ``x`` and, when it has one, ``g``
    (upstream gradient) and whatever else the op takes."""
    rng = np.random.default_rng(seed)
    f = np.float32
    op, shape, prm = case["op"], tuple(case["shape"]), case.get("params", {})
    d = {"x": rng.standard_normal(shape, dtype=f)}
    if op == "residual_add":
        d["y"] = rng.standard_normal(shape, dtype=f)
    elif op == "concat":
        splits = prm["splits"]
        d = {f"x{i}": rng.standard_normal((shape[0], c) + shape[2:], dtype=f)
             for i, c in enumerate(splits)}
    elif op == "linear":
        d["w"] = (rng.standard_normal((prm["out_features"], shape[-1]), dtype=f) * 0.05)
        d["b"] = rng.standard_normal(prm["out_features"], dtype=f)
    elif op == "cross_entropy":
        d["t"] = rng.integers(0, shape[1], shape[0])
    elif op == "batch_norm":
        d["w"] = (rng.random(shape[1], dtype=f) + 0.5)
        d["b"] = rng.standard_normal(shape[1], dtype=f)
    if op not in ("cross_entropy", "residual_add"):
        d["g"] = rng.standard_normal(tuple(out_shape(case)), dtype=f)
    return d


def bytes_moved(case):
    """Bytes every array of a forward pass reads and writes once, and of a
    forward + backward pass (pooling's GB/s)."""
    n_in = int(np.prod(case["shape"])) * 4
    n_out = int(np.prod(out_shape(case) or [1])) * 4
    if case["op"] == "max_pool":
        idx = n_out * 2   # int64 indices
        return n_in + n_out, n_in + n_out + idx + n_out + idx + n_in
    return n_in + n_out, 2 * (n_in + n_out)


def _run(payload, make):
    out = {}
    for case in payload["cases"]:
        d = inputs(case, payload.get("seed", 0))
        fns = make(case, d)
        for p in passes(case):
            if p in fns:
                out[f"{case['id']}|{p}"] = measure(fns[p], payload.get("reps", 5),
                                                   payload.get("warmup", 2),
                                                   payload.get("min_time", 0.005))
    return out


def _convcore_make(cc, case, d):
    op, prm = case["op"], case.get("params", {})
    x, g = d.get("x"), d.get("g")
    if op == "max_pool":
        k, s, p = _pair(prm["kernel"]), _pair(prm["stride"]), _pair(prm.get("padding", 0))
        c = prm.get("ceil_mode", False)

        def fb():
            _, i = cc.max_pool2d(x, k, s, p, 1, c, return_indices=True)
            cc.max_pool2d_backward(g, i, x.shape)
        return {"fwd": lambda: cc.max_pool2d(x, k, s, p, 1, c), "fwd+bwd": fb}
    if op == "avg_pool":
        k, s, p = _pair(prm["kernel"]), _pair(prm["stride"]), _pair(prm.get("padding", 0))

        def fb():
            cc.avg_pool2d(x, k, s, p)
            cc.avg_pool2d_backward(g, x.shape, k, s, p)
        return {"fwd": lambda: cc.avg_pool2d(x, k, s, p), "fwd+bwd": fb}
    if op == "adaptive_avg_pool":
        o = _pair(prm["output_size"])

        def fb():
            cc.adaptive_avg_pool2d(x, o)
            cc.adaptive_avg_pool2d_backward(g, x.shape)
        return {"fwd": lambda: cc.adaptive_avg_pool2d(x, o), "fwd+bwd": fb}
    if op == "lrn":
        a = (prm["size"], prm["alpha"], prm["beta"], prm["k"])

        def fb():
            cc.local_response_norm(x, *a)
            cc.local_response_norm_backward(g, x, *a)
        return {"fwd": lambda: cc.local_response_norm(x, *a), "fwd+bwd": fb}
    if op == "relu":
        y = cc.relu(x)
        return {"fwd": lambda: cc.relu(x), "bwd": lambda: cc.relu_backward(g, y)}
    if op == "residual_add":   # as a residual block ends: sum and ReLU, in place
        from convcore.backends import cpu
        y = d["y"]
        return {"fwd": lambda: cpu.add_relu_inplace(x, y)}
    if op == "concat":   # as an Inception module: concatenate; backward: per-branch views
        parts = [d[f"x{i}"] for i in range(len(prm["splits"]))]
        splits = prm["splits"]

        def fb():
            np.concatenate(parts, axis=1)
            start = 0
            for c in splits:
                g[:, start:start + c]
                start += c
        return {"fwd": lambda: np.concatenate(parts, axis=1), "fwd+bwd": fb}
    if op == "linear":
        w, b = d["w"], d["b"]

        def fb():
            cc.linear(x, w, b)
            cc.linear_backward(g, x, w)
        return {"fwd": lambda: cc.linear(x, w, b), "fwd+bwd": fb}
    if op == "cross_entropy":
        t = d["t"]

        def fb():
            cc.cross_entropy(x, t)
            cc.cross_entropy_backward(x, t)
        return {"fwd": lambda: cc.cross_entropy(x, t), "fwd+bwd": fb}
    if op == "batch_norm":
        w, b = d["w"], d["b"]

        def fb():
            cc.batch_norm(x, None, None, w, b, training=True)
            cc.batch_norm_backward(g, x, None, None, w, training=True)
        return {"fwd": lambda: cc.batch_norm(x, None, None, w, b, training=True), "fwd+bwd": fb}
    raise ValueError(f"unknown op {op!r}")


def side_convcore(payload):
    import convcore as cc
    cc.set_num_threads(payload["threads"])
    out = _run(payload, lambda case, d: _convcore_make(cc, case, d))
    out["_versions"] = {"convcore": cc.__version__}
    return out


def _torch_make(torch, case, d):
    F = torch.nn.functional
    aten = torch.ops.aten

    def grad_of(fn, *xs):
        req = [a.clone().requires_grad_(True) for a in xs]

        def fb(g=None):
            y = fn(*req)
            torch.autograd.grad(y, req, g)
        return fb
    t = {k: torch.from_numpy(v) for k, v in d.items()}
    op, prm = case["op"], case.get("params", {})
    x, g = t.get("x"), t.get("g")

    def nograd(f):
        def run():
            with torch.no_grad():
                return f()
        return run
    if op == "max_pool":
        k, s = list(_pair(prm["kernel"])), list(_pair(prm["stride"]))
        p, c = list(_pair(prm.get("padding", 0))), prm.get("ceil_mode", False)

        def fb():
            _, i = aten.max_pool2d_with_indices(x, k, s, p, [1, 1], c)
            aten.max_pool2d_with_indices_backward(g, x, k, s, p, [1, 1], c, i)
        return {"fwd": nograd(lambda: F.max_pool2d(x, k, s, p, 1, c)), "fwd+bwd": fb}
    if op == "avg_pool":
        k, s = list(_pair(prm["kernel"])), list(_pair(prm["stride"]))
        p = list(_pair(prm.get("padding", 0)))

        def fb():
            aten.avg_pool2d(x, k, s, p, False, True, None)
            aten.avg_pool2d_backward(g, x, k, s, p, False, True, None)
        return {"fwd": nograd(lambda: F.avg_pool2d(x, k, s, p)), "fwd+bwd": fb}
    if op == "adaptive_avg_pool":
        o = list(_pair(prm["output_size"]))

        def fb():
            aten._adaptive_avg_pool2d(x, o)
            aten._adaptive_avg_pool2d_backward(g, x)
        return {"fwd": nograd(lambda: F.adaptive_avg_pool2d(x, o)), "fwd+bwd": fb}
    if op == "lrn":
        a = (prm["size"], prm["alpha"], prm["beta"], prm["k"])
        f = grad_of(lambda v: F.local_response_norm(v, *a), x)
        return {"fwd": nograd(lambda: F.local_response_norm(x, *a)),
                "fwd+bwd": lambda: f(g)}
    if op == "relu":
        y = F.relu(x)
        return {"fwd": nograd(lambda: F.relu(x)),
                "bwd": lambda: aten.threshold_backward(g, y, 0)}
    if op == "residual_add":   # torchvision's block: out += identity; relu(inplace=True)
        y = t["y"]
        return {"fwd": nograd(lambda: torch.relu_(x.add_(y)))}
    if op == "concat":
        parts = [t[f"x{i}"] for i in range(len(prm["splits"]))]
        f = grad_of(lambda *v: torch.cat(v, 1), *parts)
        return {"fwd": nograd(lambda: torch.cat(parts, 1)), "fwd+bwd": lambda: f(g)}
    if op == "linear":
        w, b = t["w"], t["b"]
        f = grad_of(F.linear, x, w, b)
        return {"fwd": nograd(lambda: F.linear(x, w, b)), "fwd+bwd": lambda: f(g)}
    if op == "cross_entropy":
        tt = t["t"]
        f = grad_of(lambda v: F.cross_entropy(v, tt), x)
        return {"fwd": nograd(lambda: F.cross_entropy(x, tt)), "fwd+bwd": f}
    if op == "batch_norm":
        w, b = t["w"], t["b"]
        f = grad_of(lambda v, ww, bb: F.batch_norm(v, None, None, ww, bb, training=True),
                    x, w, b)
        return {"fwd": nograd(lambda: F.batch_norm(x, None, None, w, b, training=True)),
                "fwd+bwd": lambda: f(g)}
    raise ValueError(f"unknown op {op!r}")


def side_torch(payload):
    import torch
    torch.set_num_threads(payload["threads"])
    out = _run(payload, lambda case, d: _torch_make(torch, case, d))
    out["_versions"] = {"torch": torch.__version__}
    return out


def check_child(payload):
    """(imports both libraries; nothing timed) each case's forward agrees
    with PyTorch's, or the timings would compare different work."""
    import convcore as cc
    import torch
    bad = {}
    for case in payload["cases"]:
        # (fresh inputs for each side: some cases work in place)
        a = np.array(_convcore_make(cc, case, inputs(case, payload.get("seed", 0)))["fwd"]())
        b = np.array(_torch_make(torch, case, inputs(case, payload.get("seed", 0)))["fwd"]())
        # (absolute error against the output's scale: a float32 sum of
        # 25,088 products, as in VGG's first Linear, differs by a few 1e-5
        # between two BLAS kernels' summation orders)
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5 + 1e-5 * scale):
            err = float(np.max(np.abs(a - b))) if a.shape == b.shape else None
            bad[case["id"]] = f"differs: shapes {a.shape} and {b.shape}, max error {err}"
    return {"mismatch": bad}


SIDES = {"convcore": side_convcore, "torch": side_torch, "check": check_child}
