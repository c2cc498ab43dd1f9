"""The ops around the convolutions: convcore vs PyTorch CPU (and convcore's NumPy path).

Two sets of cases, forward and backward, each library alone in its own
process (``_runner.py``, docs/contributing.rst):

* batch norm (training mode) and ReLU on the activations of
  ``models.cnn_bn_wide`` at batch 128 ((128, 32, 28, 28), (128, 64, 14, 14),
  (128, 128, 7, 7)), kept for continuity: the C core at the run's thread
  count and at 1 thread, convcore's NumPy expressions (the path CuPy arrays
  take; the "numpy" side) and PyTorch;
* with ``--nets`` (default: every network of ``_nets.NETWORKS``), every
  distinct LRN, ReLU (forward and backward), residual sum (and its ReLU, in
  place, as each library's residual block ends), Inception
  concatenation (and its backward split), Linear and cross-entropy the
  networks contain, found by shape inference through ``convcore.models`` at
  each network's training batch: convcore against PyTorch.

With ``--step`` also one training step of ``cnn_bn_wide`` (forward, loss,
backward, SGD update) with the C and the NumPy versions of batch norm and
ReLU.  Prints a table and writes benchmarks/results/norm.json.  Reported,
never asserted.

    python benchmarks/bench_norm.py [--quick] [--nets NAME ...] [--no-nets] [--step]
                                    [--rounds 3] [--reps 5] [--threads 2] [--force]
    python benchmarks/bench_norm.py --out docs/_data/norm.json     # the docs' snapshot
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _opcases  # noqa: E402
import _runner  # noqa: E402
from _runner import alternate, combine, measure  # noqa: E402

SHAPES = [(128, 32, 28, 28), (128, 64, 14, 14), (128, 128, 7, 7)]
NET_OPS = ("lrn", "relu", "residual_add", "concat", "linear", "cross_entropy")
ONE = " [1 thread]"


def fixed_cases():
    out = []
    for s in SHAPES:
        tag = "x".join(map(str, s))
        out.append({"id": f"batch_norm {tag}", "op": "batch_norm", "shape": list(s),
                    "params": {}, "source": "fixed"})
        out.append({"id": f"relu {tag}", "op": "relu", "shape": list(s), "params": {},
                    "source": "fixed"})
    return out


def enumerate_child(p):
    from bench_pool import net_cases
    return {"cases": net_cases(p["nets"], tuple(p["ops"]), p.get("batch"))}


def _step_fn(cc, numpy_path):
    """One SGD step of cnn_bn_wide at batch 128 (C or NumPy batch norm/ReLU)."""
    from convcore import optim
    from convcore._ops import layers as L
    rng = np.random.default_rng(0)
    x = rng.random((128, 1, 28, 28)).astype(np.float32)
    t = rng.integers(0, 10, 128)
    net = cc.models.cnn_bn_wide(rng=0, dtype=np.float32)
    opt = optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    real = L._c_core

    def step():
        if numpy_path:
            L._c_core = lambda be, *a: False
        try:
            net.zero_grad()
            logits = net(x)
            net.backward(cc.cross_entropy_backward(logits, t))
            opt.step()
        finally:
            L._c_core = real
    return step


def convcore_child(p):
    import convcore as cc
    out = _opcases.side_convcore(p)
    fixed = [c for c in p["cases"] if c.get("source") == "fixed"]
    if fixed and p["threads"] != 1:
        cc.set_num_threads(1)
        one = _opcases.side_convcore(dict(p, cases=fixed, threads=1))
        cc.set_num_threads(p["threads"])
        out.update({k.replace("|", ONE + "|", 1): v for k, v in one.items()
                    if not k.startswith("_")})
    if p.get("step"):
        out["cnn_bn_wide step|step"] = measure(_step_fn(cc, False), p["reps"], 1)
    return out


def numpy_child(p):
    """convcore's NumPy expressions for batch norm and ReLU (no C kernels)."""
    import convcore as cc
    from convcore.backends import _expr
    cc.set_num_threads(p["threads"])
    out = {}
    for case in p["cases"]:
        if case.get("source") != "fixed":
            continue
        d = _opcases.inputs(case, p.get("seed", 0))
        x, g = d["x"], d["g"]
        if case["op"] == "batch_norm":
            w, b = d["w"], d["b"]

            def fb():
                _expr.batch_norm(np, x, w, b, None, None, True, 1e-5)
                _expr.batch_norm_backward(np, g, x, w, None, None, True, 1e-5)
            fns = {"fwd": lambda: _expr.batch_norm(np, x, w, b, None, None, True, 1e-5),
                   "fwd+bwd": fb}
        else:
            y = _expr.relu(np, x)
            fns = {"fwd": lambda: _expr.relu(np, x),
                   "bwd": lambda: _expr.relu_backward(np, g, y)}
        for name, fn in fns.items():
            out[f"{case['id']}|{name}"] = measure(fn, p["reps"], p.get("warmup", 2),
                                                  p.get("min_time", 0.005))
    if p.get("step"):
        out["cnn_bn_wide step|step"] = measure(_step_fn(cc, True), p["reps"], 1)
    out["_versions"] = {"convcore": cc.__version__}
    return out


def main(argv=None):
    import _nets
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: the fixed cases and LeNet-5's and ResNet-18's (32x32) ops, "
                         "1 round, 2 repetitions")
    ap.add_argument("--nets", nargs="*", choices=list(_nets.NETWORKS),
                    help="networks whose ops to add (default: all)")
    ap.add_argument("--no-nets", action="store_true", help="only the fixed cases")
    ap.add_argument("--batch", type=int, help="batch of the network cases (default: each "
                                              "network's training batch)")
    ap.add_argument("--step", action="store_true", help="also time a cnn_bn_wide step")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "norm.json"))
    _runner.add_protocol_args(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.nets = args.nets or list(_nets.QUICK_NETWORKS)
        args.rounds, args.reps = min(args.rounds, 1), min(args.reps, 2)
    quiet = _runner.check_quiet(args.force)
    script = os.path.abspath(__file__)
    cases = fixed_cases()
    if not args.no_nets:
        cases += _runner.spawn(script, "enumerate", {"nets": args.nets or list(_nets.NETWORKS),
                                                     "ops": list(NET_OPS),
                                                     "batch": args.batch})["cases"]
    check = _runner.spawn(script, "check", {"cases": cases, "seed": 0})
    if check["mismatch"]:
        raise SystemExit(f"results differ from PyTorch's, not timing: {check['mismatch']}")
    limits = _runner.machine_limits(threads=args.threads)
    sides = ["convcore", "numpy"] + ([] if args.no_torch else ["torch"])
    t0 = time.time()
    rounds = alternate(script, sides, {"cases": cases, "threads": args.threads,
                                       "reps": args.reps, "seed": 0, "step": args.step,
                                       "warmup": 1 if args.quick else 2, "min_time": 0.01},
                       rounds=args.rounds, log=lambda m: print(m, flush=True))
    timed = combine(rounds)
    rows = []
    nan = float("nan")
    head = (f"{'op':<46}{'pass':<9}{'convcore ms':>12}{'1 thread':>10}{'numpy ms':>10}"
            f"{'torch ms':>10}{'np/cc':>7}{'t/cc':>7}")
    print("\n" + head)
    print("-" * len(head))
    keys = [k for k in timed if ONE not in k]
    for k in keys:
        cid, p = k.rsplit("|", 1)
        r = timed[k]
        one = timed.get(f"{cid}{ONE}|{p}", {}).get("convcore", {})
        case = next((c for c in cases if c["id"] == cid), {})
        row = {"case": cid, "pass": p, "op": case.get("op", "step"),
               "shape": case.get("shape"), "source": case.get("source", "fixed"),
               "networks": case.get("networks"),
               "convcore_ms": r.get("convcore", {}).get("median_s", nan) * 1e3,
               "convcore_1thread_ms": one.get("median_s", nan) * 1e3 if one else None,
               "numpy_ms": r["numpy"]["median_s"] * 1e3 if "numpy" in r else None,
               "torch_ms": r["torch"]["median_s"] * 1e3 if "torch" in r else None,
               "numpy_over_convcore": r.get("numpy", {}).get("ratio_vs_convcore"),
               "torch_over_convcore": r.get("torch", {}).get("ratio_vs_convcore")}
        rows.append(row)
        print(f"{cid[:45]:<46}{p:<9}{row['convcore_ms']:>12.3f}"
              f"{row['convcore_1thread_ms'] or nan:>10.3f}{row['numpy_ms'] or nan:>10.3f}"
              f"{row['torch_ms'] or nan:>10.3f}{row['numpy_over_convcore'] or nan:>7.2f}"
              f"{row['torch_over_convcore'] or nan:>7.2f}")
    res = {"benchmark": "norm", "smoke": _runner.smoke_marker(args),
           "environment": _runner.environment(args.threads, _runner.versions_of(rounds)),
           "limits": limits, "quiet_check": quiet, "rounds": args.rounds, "reps": args.reps,
           "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0)),
           "ratio": "peer time / convcore time, median over alternating process rounds",
           "cases": rows}
    _runner.write_json(args.out, res)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    if _runner.is_child():
        _runner.child_main({"convcore": convcore_child, "numpy": numpy_child,
                            "torch": _opcases.side_torch, "check": _opcases.check_child,
                            "enumerate": enumerate_child})
    else:
        main()
