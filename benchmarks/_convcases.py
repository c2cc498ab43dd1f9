"""Convolution cases timed in a child process, one library per process.

A case is a JSON dict: ``id, N, C, H, W, K, kernel, stride, padding, dilation,
groups, bias`` (+ optional ``passes``).  Every side builds its inputs with
:func:`inputs` from the same seed, so all sides see the same numbers.  Each
``side_*`` function imports its own library only; it returns
``{"<id>|<pass>": measure-dict, "_versions": {...}}``.
"""
from __future__ import annotations

import numpy as np

from _runner import measure

PASSES = ("fwd", "fwd+bwd")


def _pair(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (v, v)


def out_size(case):
    (kh, kw), (sh, sw), (dh, dw) = _pair(case["kernel"]), _pair(case["stride"]), \
        _pair(case.get("dilation", 1))
    pad = case["padding"]
    if pad == "same":
        return case["H"], case["W"]
    ph, pw = (0, 0) if pad == "valid" else _pair(pad)
    return ((case["H"] + 2 * ph - dh * (kh - 1) - 1) // sh + 1,
            (case["W"] + 2 * pw - dw * (kw - 1) - 1) // sw + 1)


def flops(case):
    """Forward flops (a backward pass costs twice that)."""
    oh, ow = out_size(case)
    kh, kw = _pair(case["kernel"])
    return 2.0 * case["N"] * case["K"] * oh * ow * (case["C"] // case["groups"]) * kh * kw


def inputs(case, seed=0):
    """x, w, b (or None), gy as float32, from ``seed``."""
    rng = np.random.default_rng(seed)
    kh, kw = _pair(case["kernel"])
    x = rng.standard_normal((case["N"], case["C"], case["H"], case["W"]), dtype=np.float32)
    w = (rng.standard_normal((case["K"], case["C"] // case["groups"], kh, kw),
                             dtype=np.float32) * 0.05)
    b = rng.standard_normal(case["K"], dtype=np.float32) if case.get("bias", True) else None
    oh, ow = out_size(case)
    gy = rng.standard_normal((case["N"], case["K"], oh, ow), dtype=np.float32)
    return x, w, b, gy


def _args(case):
    pad = case["padding"]
    return (_pair(case["stride"]), pad if isinstance(pad, str) else _pair(pad),
            _pair(case.get("dilation", 1)), case["groups"])


def _run(payload, make):
    out = {}
    for case in payload["cases"]:
        x, w, b, gy = inputs(case, payload.get("seed", 0))
        fns = make(case, x, w, b, gy)
        for p in case.get("passes", PASSES):
            out[f"{case['id']}|{p}"] = measure(fns[p], payload.get("reps", 5),
                                               payload.get("warmup", 2))
    return out


def side_convcore(payload):
    import convcore as cc
    cc.set_num_threads(payload["threads"])

    def make(case, x, w, b, gy):
        s, p, d, g = _args(case)

        def fb():
            cc.conv2d(x, w, b, s, p, d, g)
            cc.conv2d_backward(gy, x, w, s, p, d, g)
        return {"fwd": lambda: cc.conv2d(x, w, b, s, p, d, g), "fwd+bwd": fb}
    out = _run(payload, make)
    out["_strategy"] = {case["id"]: strategies(case) for case in payload["cases"]}
    out["_versions"] = {"convcore": cc.__version__}
    return out


def strategies(case, dtype="float32"):
    """The strategies convcore's planner picks for `case` without a tuned
    plan: ``{"fwd": name, "bwd": name}`` ('+crop' where taps meeting only
    padding are cropped away), or None where the geometry is not one the
    planner sees (e.g. 'same' padding with an even kernel)."""
    from convcore._core import _conv
    from convcore._geometry import ConvGeom
    (sh, sw), pad, (dh, dw), g = _args(case)
    if isinstance(pad, str):
        return None
    kh, kw = _pair(case["kernel"])
    oh, ow = out_size(case)
    geom = ConvGeom(case["N"], case["C"], case["H"], case["W"], case["K"], kh, kw, sh, sw,
                    pad[0], pad[1], dh, dw, oh, ow, g)
    return {"fwd": _conv.plan(geom, dtype), "bwd": _conv.plan(geom, dtype, backward=True)}


def side_torch(payload):
    import torch
    torch.set_num_threads(payload["threads"])
    F = torch.nn.functional

    def make(case, x, w, b, gy):
        s, p, d, g = _args(case)
        tx, tw, tgy = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(gy)
        tb = None if b is None else torch.from_numpy(b)
        req = [t.clone().requires_grad_(True) for t in (tx, tw) + ((tb,) if b is not None
                                                                     else ())]

        def fwd():
            with torch.no_grad():
                F.conv2d(tx, tw, tb, s, p, d, g)

        def fb():
            y = F.conv2d(req[0], req[1], req[2] if len(req) > 2 else None, s, p, d, g)
            torch.autograd.grad(y, req, tgy)
        return {"fwd": fwd, "fwd+bwd": fb}
    out = _run(payload, make)
    out["_versions"] = {"torch": torch.__version__}
    return out


def numpy_conv(x, w, s, p):
    """The floor: what any user could write with NumPy (groups=1, square)."""
    N, C, H, W = x.shape
    K, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    OH, OW = win.shape[2], win.shape[3]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(N, OH * OW, C * k * k)
    y = cols @ w.reshape(K, -1).T
    return y.transpose(0, 2, 1).reshape(N, K, OH, OW), cols


def numpy_conv_fwd_bwd(x, w, s, p, gy):
    N, C, H, W = x.shape
    K, _, k, _ = w.shape
    y, cols = numpy_conv(x, w, s, p)
    g = gy.reshape(N, K, -1)
    gw = np.einsum("nkl,nlj->kj", g, cols).reshape(w.shape)
    gcols = (w.reshape(K, -1).T @ g)
    OH, OW = y.shape[2], y.shape[3]
    gcols = gcols.reshape(N, C, k, k, OH, OW)
    gxp = np.zeros((N, C, H + 2 * p, W + 2 * p), x.dtype)
    for a in range(k):
        for c in range(k):
            gxp[:, :, a:a + s * OH:s, c:c + s * OW:s] += gcols[:, :, a, c]
    return y, gxp[:, :, p:p + H, p:p + W], gw


def side_numpy(payload):
    try:   # NumPy's own BLAS at the same thread count (threadpoolctl is light)
        from threadpoolctl import threadpool_limits
        threadpool_limits(payload["threads"], user_api="blas")
    except ImportError:
        pass
    cases = [c for c in payload["cases"] if c["groups"] == 1 and not isinstance(c["padding"], str)
             and len(set(_pair(c["kernel"]))) == 1 and len(set(_pair(c["stride"]))) == 1
             and len(set(_pair(c["padding"]))) == 1]

    def make(case, x, w, b, gy):
        s, p = _pair(case["stride"])[0], _pair(case["padding"])[0]
        return {"fwd": lambda: numpy_conv(x, w, s, p),
                "fwd+bwd": lambda: numpy_conv_fwd_bwd(x, w, s, p, gy)}
    out = _run(dict(payload, cases=cases), make)
    out["_versions"] = {"numpy": np.__version__}
    return out


SIDES = {"convcore": side_convcore, "torch": side_torch, "numpy": side_numpy}
