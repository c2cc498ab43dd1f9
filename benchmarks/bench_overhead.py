"""Per-call overhead: the tiniest calls, convcore vs PyTorch CPU, in microseconds.

Inputs so small that the arithmetic is nothing and the time is the trip from
Python to the kernel and back (validation, workspace lookup, allocation,
dispatch): a 3x3 convolution of a 1x1x8x8 input (forward, and backward),
a 2x2 max pool, ReLU (forward and backward), a 16->4 Linear (forward and
backward), and one training step of a tiny network (conv 4@3x3, ReLU, max
pool, flatten, Linear 36->10, cross-entropy; forward and backward) at batch 1.
Each library alone in its own process (``_runner.py``, docs/contributing.rst).

    python benchmarks/bench_overhead.py [--quick] [--rounds 3] [--reps 7] [--threads 2] [--force]
    python benchmarks/bench_overhead.py --out docs/_data/overhead.json   # the docs' snapshot

Writes benchmarks/results/overhead.json.  Reported, never asserted.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _runner  # noqa: E402
from _runner import alternate, combine, measure  # noqa: E402

CASES = ["conv2d 1x1x8x8 3x3", "conv2d_backward 1x1x8x8 3x3", "max_pool2d 1x1x8x8 2x2",
         "relu 1x4x8x8", "relu_backward 1x4x8x8", "linear 1x16->4", "linear_backward 1x16->4",
         "tiny net step N1"]
MIN_TIME = 0.02   # each sample repeats the call for at least this long


def _data(seed=0):
    rng = np.random.default_rng(seed)
    f = np.float32
    return {
        "x": rng.standard_normal((1, 1, 8, 8)).astype(f),
        "w": rng.standard_normal((1, 1, 3, 3)).astype(f),
        "gy": rng.standard_normal((1, 1, 6, 6)).astype(f),
        "r": rng.standard_normal((1, 4, 8, 8)).astype(f),
        "gr": rng.standard_normal((1, 4, 8, 8)).astype(f),
        "v": rng.standard_normal((1, 16)).astype(f),
        "lw": rng.standard_normal((4, 16)).astype(f),
        "lb": rng.standard_normal(4).astype(f),
        "gv": rng.standard_normal((1, 4)).astype(f),
        "cw": (rng.standard_normal((4, 1, 3, 3)) * 0.3).astype(f),
        "cb": rng.standard_normal(4).astype(f) * 0.1,
        "fw": (rng.standard_normal((10, 36)) * 0.1).astype(f),
        "fb": rng.standard_normal(10).astype(f) * 0.1,
        "t": np.array([3]),
    }


def convcore_child(p):
    import convcore as cc
    from convcore import nn
    cc.set_num_threads(p["threads"])
    d = _data(p["seed"])
    x, w, gy, r, gr = d["x"], d["w"], d["gy"], d["r"], d["gr"]
    v, lw, lb, gv, t = d["v"], d["lw"], d["lb"], d["gv"], d["t"]
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(36, 10))
    net[0].weight.data[...] = d["cw"]
    net[0].bias.data[...] = d["cb"]
    net[4].weight.data[...] = d["fw"]
    net[4].bias.data[...] = d["fb"]
    net[0].needs_input_grad = False

    def step():
        net.zero_grad()
        logits = net(x)
        cc.cross_entropy(logits, t)
        net.backward(cc.cross_entropy_backward(logits, t))
    fns = {
        CASES[0]: lambda: cc.conv2d(x, w),
        CASES[1]: lambda: cc.conv2d_backward(gy, x, w),
        CASES[2]: lambda: cc.max_pool2d(x, 2),
        CASES[3]: lambda: cc.relu(r),
        CASES[4]: lambda: cc.relu_backward(gr, r),
        CASES[5]: lambda: cc.linear(v, lw, lb),
        CASES[6]: lambda: cc.linear_backward(gv, v, lw),
        CASES[7]: step,
    }
    out = {k: measure(f, p["reps"], 3, MIN_TIME) for k, f in fns.items()}
    out["_versions"] = {"convcore": cc.__version__}
    return out


def torch_child(p):
    import torch
    torch.set_num_threads(p["threads"])
    F = torch.nn.functional
    d = {k: torch.from_numpy(a) for k, a in _data(p["seed"]).items()}
    x, w, gy, r, gr = d["x"], d["w"], d["gy"], d["r"], d["gr"]
    v, lw, lb, gv, t = d["v"], d["lw"], d["lb"], d["gv"], d["t"]
    xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    rg = r.clone().requires_grad_(True)
    vg, lwg, lbg = (a.clone().requires_grad_(True) for a in (v, lw, lb))
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(36, 10))
    with torch.no_grad():
        net[0].weight.copy_(d["cw"])
        net[0].bias.copy_(d["cb"])
        net[4].weight.copy_(d["fw"])
        net[4].bias.copy_(d["fb"])

    def nograd(f):
        def run():
            with torch.no_grad():
                f()
        return run

    def step():
        net.zero_grad()
        F.cross_entropy(net(x), t).backward()
    # a backward alone: the graph is built once, kept, and differentiated each call
    yc = F.conv2d(xg, wg)
    yr = F.relu(rg)
    yl = F.linear(vg, lwg, lbg)
    fns = {
        CASES[0]: nograd(lambda: F.conv2d(x, w)),
        CASES[1]: lambda: torch.autograd.grad(yc, (xg, wg), gy, retain_graph=True),
        CASES[2]: nograd(lambda: F.max_pool2d(x, 2)),
        CASES[3]: nograd(lambda: F.relu(r)),
        CASES[4]: lambda: torch.autograd.grad(yr, (rg,), gr, retain_graph=True),
        CASES[5]: nograd(lambda: F.linear(v, lw, lb)),
        CASES[6]: lambda: torch.autograd.grad(yl, (vg, lwg, lbg), gv, retain_graph=True),
        CASES[7]: step,
    }
    out = {k: measure(f, p["reps"], 3, MIN_TIME) for k, f in fns.items()}
    out["_versions"] = {"torch": torch.__version__}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, 2 repetitions")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "overhead.json"))
    _runner.add_protocol_args(ap, reps=7)
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.reps = min(args.rounds, 1), min(args.reps, 2)
    quiet = _runner.check_quiet(args.force)
    script = os.path.abspath(__file__)
    t0 = time.time()
    rounds = alternate(script, ["convcore", "torch"],
                       {"threads": args.threads, "reps": args.reps, "seed": 0},
                       rounds=args.rounds, log=lambda m: print(m, flush=True))
    timed = combine(rounds)
    rows = []
    print(f"\n{'call':30s}{'convcore us':>12s}{'torch us':>10s}{'torch/cc':>10s}")
    for case in CASES:
        c = timed.get(case, {})
        cu = c.get("convcore", {}).get("median_s")
        tu = c.get("torch", {}).get("median_s")
        ratio = c.get("torch", {}).get("ratio_vs_convcore")
        rows.append({"case": case, "convcore_us": None if cu is None else cu * 1e6,
                     "torch_us": None if tu is None else tu * 1e6, "ratio": ratio})
        print(f"{case:30s}{cu * 1e6:12.1f}{tu * 1e6:10.1f}{ratio:10.2f}")
    res = {"benchmark": "overhead", "smoke": _runner.smoke_marker(args),
           "environment": _runner.environment(args.threads, _runner.versions_of(rounds)),
           "quiet_check": quiet, "rounds": args.rounds, "reps": args.reps,
           "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0)),
           "ratio": "PyTorch time / convcore time, median over rounds (> 1: convcore faster)",
           "cases": rows, "detail": timed}
    _runner.write_json(args.out, res)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    if _runner.is_child():
        _runner.child_main({"convcore": convcore_child, "torch": torch_child})
    else:
        main()
