"""Pooling throughput: convcore against PyTorch CPU, each alone in its own process.

The fixed pooling cases (kept for continuity) and, with ``--nets``
(default: every network of ``_nets.NETWORKS``), every distinct pooling layer
those networks contain -- max 3x3/2 and 3x3/1 on small maps, global and
adaptive average pooling -- found by shape inference through
``convcore.models`` at each network's training batch.  Forward and
forward+backward; median times, the median over rounds of
``torch / convcore`` (> 1 means convcore is faster) and GB/s moved (every
array read or written once), next to the machine's copy bandwidth measured
in the same run.  Each library runs alone in its own process (``_runner.py``,
docs/contributing.rst); a process that imports both first checks that the forward
results agree.  Writes benchmarks/results/pool.json.

    python benchmarks/bench_pool.py [--threads 2] [--rounds 3] [--reps 7] [--quick]
                                    [--nets NAME ...] [--no-nets] [--force]
    python benchmarks/bench_pool.py --out docs/_data/pool.json     # the docs' snapshot
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _runner  # noqa: E402
from _opcases import bytes_moved  # noqa: E402
from _runner import alternate, combine  # noqa: E402

CASES = [
    # name, kind, shape, kernel, stride
    ("max 2x2/2", "max", (16, 64, 112, 112), 2, 2),
    ("max 3x3/2 (AlexNet)", "max", (8, 96, 55, 55), 3, 2),
    ("avg 2x2/2", "avg", (16, 64, 112, 112), 2, 2),
    ("global avg", "gap", (32, 512, 7, 7), None, None),
]
POOL_OPS = ("max_pool", "avg_pool", "adaptive_avg_pool")


def fixed_cases():
    out = []
    for name, kind, shape, k, s in CASES:
        if kind == "gap":
            out.append({"id": name, "op": "adaptive_avg_pool", "shape": list(shape),
                        "params": {"output_size": [1, 1]}, "source": "fixed"})
        else:
            out.append({"id": name, "op": f"{kind}_pool", "shape": list(shape),
                        "params": {"kernel": [k, k], "stride": [s, s], "padding": [0, 0],
                                   "ceil_mode": False}, "source": "fixed"})
    return out


def describe(op, shape, prm):
    """A short label for one op on one input shape."""
    dims = "x".join(map(str, shape[1:]))
    if op == "linear":
        return f"linear {dims}->{prm['out_features']}"
    if op == "lrn":
        return f"lrn size {prm['size']} {dims}"
    if op == "concat":
        return f"concat {'+'.join(map(str, prm['splits']))} x{'x'.join(map(str, shape[2:]))}"
    if op not in POOL_OPS:
        return f"{op} {dims}"
    if op == "adaptive_avg_pool":
        o = prm["output_size"]
        return ("global avg" if list(o) == [1, 1] else f"adaptive avg ->{o[0]}x{o[1]}") + \
            f" {shape[1]}x{shape[2]}x{shape[3]}"
    k, s, p = prm["kernel"], prm["stride"], prm.get("padding", [0, 0])
    tag = " ceil" if prm.get("ceil_mode") else ""
    return (f"{op.split('_')[0]} {k[0]}x{k[1]}/{s[0]} p{p[0]}{tag} "
            f"{shape[1]}x{shape[2]}x{shape[3]}")


def net_cases(nets, ops=POOL_OPS, batch=None, include=None):
    """(convcore process) the distinct ops of ``ops`` in each network, at the
    network's training batch (its largest default batch) or ``batch``."""
    import _nets
    seen, out = {}, []
    for net in nets:
        n = batch or max(_nets.NETWORKS[net][3])
        for r in _nets.other_ops(net):
            if r["op"] not in ops:
                continue
            shape = [n] + r["shape"][1:]
            cid = f"{describe(r['op'], shape, r['params'])} N{n}"
            if cid in seen:
                seen[cid]["networks"].append(net)
                continue
            case = {"id": cid, "op": r["op"], "shape": shape, "params": r["params"],
                    "source": "networks", "networks": [net], "layers": r["names"][:4]}
            seen[cid] = case
            out.append(case)
    return out


def enumerate_child(p):
    return {"cases": net_cases(p["nets"], tuple(p["ops"]), p.get("batch"))}


def run(script, args, cases, limits_reps=3):
    """Check, then alternate the sides over ``cases``; (rows by case id, rounds)."""
    check = _runner.spawn(script, "check", {"cases": cases, "seed": 0})
    if check["mismatch"]:
        raise SystemExit(f"results differ from PyTorch's, not timing: {check['mismatch']}")
    sides = ["convcore"] + ([] if args.no_torch else ["torch"])
    rounds = alternate(script, sides, {"cases": cases, "threads": args.threads,
                                       "reps": args.reps, "seed": 0,
                                       "warmup": 1 if args.quick else 2, "min_time": 0.01},
                       rounds=args.rounds, log=lambda m: print(m, flush=True))
    return combine(rounds), rounds


def main(argv=None):
    import _nets
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: the fixed cases and LeNet-5's and ResNet-18's (32x32) "
                         "pooling, 1 round, 2 repetitions")
    ap.add_argument("--nets", nargs="*", choices=list(_nets.NETWORKS),
                    help="networks whose pooling layers to add (default: all)")
    ap.add_argument("--no-nets", action="store_true", help="only the fixed cases")
    ap.add_argument("--batch", type=int, help="batch of the network cases (default: each "
                                              "network's training batch)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "pool.json"))
    _runner.add_protocol_args(ap, reps=7)
    args = ap.parse_args(argv)
    if args.quick:
        args.nets = args.nets or list(_nets.QUICK_NETWORKS)
        args.rounds, args.reps = min(args.rounds, 1), min(args.reps, 2)
    quiet = _runner.check_quiet(args.force)
    script = os.path.abspath(__file__)
    cases = fixed_cases()
    if not args.no_nets:
        cases += _runner.spawn(script, "enumerate", {"nets": args.nets or list(_nets.NETWORKS),
                                                     "ops": list(POOL_OPS),
                                                     "batch": args.batch})["cases"]
    limits = _runner.machine_limits(threads=args.threads)
    t0 = time.time()
    timed, rounds = run(script, args, cases)
    limits_after = _runner.machine_limits(threads=args.threads)
    copy = (limits["copy_gbs"] + limits_after["copy_gbs"]) / 2
    rows = []
    for c in cases:
        fwd_b, fb_b = bytes_moved(c)
        for mode, p, nbytes in (("forward", "fwd", fwd_b), ("fwd+bwd", "fwd+bwd", fb_b)):
            r = timed.get(f"{c['id']}|{p}", {})
            cc_s = r.get("convcore", {}).get("median_s")
            t_s = r.get("torch", {}).get("median_s")
            row = dict(case=c["id"], op=c["op"], kind=c["op"].replace("_pool", "").replace(
                "adaptive_avg", "gap"), shape=c["shape"], params=c["params"],
                source=c["source"], networks=c.get("networks"), mode=mode, bytes=nbytes,
                convcore_ms=cc_s * 1e3 if cc_s else None, torch_ms=t_s * 1e3 if t_s else None,
                ratio=r.get("torch", {}).get("ratio_vs_convcore"),
                convcore_gbs=nbytes / cc_s / 1e9 if cc_s else None,
                torch_gbs=nbytes / t_s / 1e9 if t_s else None)
            row["convcore_pct_of_copy"] = 100 * row["convcore_gbs"] / copy \
                if row["convcore_gbs"] else None
            rows.append(row)
    head = (f"{'case':<40}{'mode':<9}{'convcore ms':>12}{'torch ms':>10}{'ratio':>8}"
            f"{'cc GB/s':>9}{'torch GB/s':>11}{'% copy':>8}")
    env = _runner.environment(args.threads, _runner.versions_of(rounds))
    print(f"\n{env.get('cpu_model', '')}, {args.threads} threads, {args.rounds} rounds x "
          f"{args.reps} reps; copy bandwidth (np.copyto, read+write) {copy:.1f} GB/s")
    print(head)
    print("-" * len(head))
    nan = float("nan")
    for r in rows:
        print(f"{r['case'][:39]:<40}{r['mode']:<9}{r['convcore_ms'] or nan:>12.3f}"
              f"{r['torch_ms'] or nan:>10.3f}{r['ratio'] or nan:>7.2f}x"
              f"{r['convcore_gbs'] or nan:>9.1f}{r['torch_gbs'] or nan:>11.1f}"
              f"{r['convcore_pct_of_copy'] or nan:>7.0f}%")
    result = dict(benchmark="pool", smoke=_runner.smoke_marker(args), environment=env,
                  limits=limits, limits_after=limits_after, quiet_check=quiet,
                  threads=args.threads, rounds=args.rounds, reps=args.reps, dtype="float32",
                  copy_gbs=copy,
                  ratio="torch time / convcore time, median over alternating process rounds",
                  measured_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0)),
                  cases=rows)
    _runner.write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    if _runner.is_child():
        from _opcases import SIDES
        _runner.child_main(dict(SIDES, enumerate=enumerate_child))
    else:
        main()
