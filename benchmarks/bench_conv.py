"""Convolution layers of the notes' networks: convcore vs PyTorch CPU vs NumPy.

    python benchmarks/bench_conv.py [--threads 2] [--rounds 3] [--reps 5] [--only NAME ...]
                                    [--quick] [--force]
    python benchmarks/bench_conv.py --out docs/_data/conv.json     # the docs' snapshot

The fixed layer set (kept for continuity; ``bench_layers.py``
takes every layer from the networks themselves).  Each library runs alone in
its own fresh process, alternating convcore, PyTorch, NumPy, convcore, ...
(``_runner.py``): median time, GFLOP/s and the median over rounds of
``peer / convcore`` (> 1 means convcore is faster); the NumPy floor is a plain
im2col + ``matmul``.  Writes benchmarks/results/conv.json.  Reported, never
asserted.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _runner  # noqa: E402
from _convcases import flops  # noqa: E402
from _runner import alternate, combine, geomean  # noqa: E402

LAYERS = [
    # name, N, C, H(=W), K, kernel, stride, pad, groups
    ("lenet.c1", 64, 1, 28, 6, 5, 1, 2, 1),
    ("lenet.c2", 64, 6, 14, 16, 5, 1, 0, 1),
    ("alex.c1", 8, 3, 227, 96, 11, 4, 0, 1),
    ("alex.c2", 8, 96, 27, 256, 5, 1, 2, 1),
    ("alex.c3", 8, 256, 13, 384, 3, 1, 1, 1),
    ("vgg.c1_1", 2, 3, 224, 64, 3, 1, 1, 1),
    ("vgg.c2_2", 1, 128, 112, 128, 3, 1, 1, 1),
    ("vgg.c3_2", 2, 256, 56, 256, 3, 1, 1, 1),
    ("vgg.c5_2", 8, 512, 14, 512, 3, 1, 1, 1),
    ("cifar.64", 32, 64, 32, 64, 3, 1, 1, 1),
    ("res.1x1", 8, 256, 56, 64, 1, 1, 0, 1),
    ("res.down", 8, 128, 56, 256, 3, 2, 1, 1),
    ("mobile.dw", 8, 256, 28, 256, 3, 1, 1, 256),
]
QUICK = ("lenet.c1", "res.down", "mobile.dw")
# per-call overhead on a tiny input: users embed conv2d in their own loops
TINY = dict(id="tiny", N=1, C=1, H=8, W=8, K=1, kernel=3, stride=1, padding=0, groups=1,
            bias=False, passes=["fwd"])


def cases(only=None):
    out = []
    for name, N, C, H, K, k, s, p, g in LAYERS:
        if only and name not in only:
            continue
        out.append(dict(id=name, N=N, C=C, H=H, W=H, K=K, kernel=k, stride=s, padding=p,
                        groups=g, bias=True))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="layer names to run")
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke run: {', '.join(QUICK)}, 1 round, 2 repetitions")
    ap.add_argument("--no-numpy", action="store_true", help="skip the NumPy floor")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "conv.json"))
    _runner.add_protocol_args(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.only = args.only or list(QUICK)
        args.rounds, args.reps = min(args.rounds, 1), min(args.reps, 2)
    quiet = _runner.check_quiet(args.force)
    todo = cases(args.only)
    limits = _runner.machine_limits(threads=args.threads)
    print(f"machine: sgemm 2048^3 {limits['sgemm_2048_gflops']:.0f} GFLOP/s, "
          f"copy {limits['copy_gbs']:.1f} GB/s, threads {args.threads}", flush=True)
    sides = ["convcore"] + ([] if args.no_torch else ["torch"]) + \
        ([] if args.no_numpy else ["numpy"])
    t0 = time.time()
    rounds = alternate(os.path.abspath(__file__), sides,
                       {"cases": todo + [TINY], "threads": args.threads, "reps": args.reps,
                        "warmup": 1 if args.quick else 2, "seed": 0},
                       rounds=args.rounds, log=lambda m: print(m, flush=True))
    timed = combine(rounds)
    rows = []
    head = (f"{'layer':10s} {'pass':7s} {'convcore ms':>11s} {'GF/s':>6s} {'torch ms':>9s} "
            f"{'GF/s':>6s} {'torch/cc':>8s} {'numpy/cc':>8s}")
    print(head)
    print("-" * len(head))
    nan = float("nan")
    for c in todo:
        for pass_ in ("fwd", "fwd+bwd"):
            f = flops(c) * (1 if pass_ == "fwd" else 3)
            row = {"layer": c["id"], "pass": pass_,
                   "shape": [c["N"], c["C"], c["H"], c["W"], c["K"], c["kernel"], c["stride"],
                             c["padding"], c["groups"]], "gflop": f / 1e9}
            for side, r in timed.get(f"{c['id']}|{pass_}", {}).items():
                row[side] = dict(r, gflops=f / r["median_s"] / 1e9)
            rows.append(row)
            t, npy = row.get("torch", {}), row.get("numpy", {})
            print(f"{c['id']:10s} {pass_:7s} {row['convcore']['median_s'] * 1e3:11.2f} "
                  f"{row['convcore']['gflops']:6.1f} {t.get('median_s', nan) * 1e3:9.2f} "
                  f"{t.get('gflops', nan):6.1f} {t.get('ratio_vs_convcore') or nan:8.2f} "
                  f"{npy.get('ratio_vs_convcore') or nan:8.2f}", flush=True)
    tiny = timed.get("tiny|fwd", {})
    if "convcore" in tiny:
        print(f"\ntiny 1x1x8x8 (3x3) per call: convcore {tiny['convcore']['median_s'] * 1e6:.1f} us"
              + (f", torch {tiny['torch']['median_s'] * 1e6:.1f} us "
                 f"(ratio {tiny['torch']['ratio_vs_convcore']:.2f})" if "torch" in tiny else ""))
    summary = {}
    if not args.no_torch:
        for pass_ in ("fwd", "fwd+bwd"):
            ratios = [r["torch"]["ratio_vs_convcore"] for r in rows
                      if r["pass"] == pass_ and "torch" in r]
            summary[pass_] = {"geomean_torch_over_convcore": geomean(ratios),
                              "min_ratio": min(ratios) if ratios else None}
            if ratios:
                print(f"{pass_}: geometric mean torch/convcore = "
                      f"{summary[pass_]['geomean_torch_over_convcore']:.2f}, "
                      f"lowest {summary[pass_]['min_ratio']:.2f}")
    _runner.write_json(args.out, {
        "benchmark": "conv", "smoke": _runner.smoke_marker(args),
        "environment": _runner.environment(args.threads, _runner.versions_of(rounds)),
        "limits": limits, "quiet_check": quiet, "rounds": args.rounds, "reps": args.reps,
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0)),
        "layers": rows, "tiny": tiny, "summary": summary})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    if _runner.is_child():
        from _convcases import SIDES
        _runner.child_main(SIDES)
    else:
        main()
