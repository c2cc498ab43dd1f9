"""Every convolution of the notes' networks: convcore vs PyTorch CPU, layer by layer.

The layers come from the models themselves (``_nets.py``: shape inference
through ``convcore.models`` and the summary walk), never from a hand-kept
list: every distinct convolution of LeNet-5 (28x28), AlexNet (227x227),
VGG-11/16 (224x224 and 32x32), GoogLeNet (224x224) and ResNet-18/34/50
(224x224 and 32x32), at batch 1 and at training batches (8 for 224x224;
8 and 64 below).  Each library runs alone in its own process (``_runner.py``,
docs/contributing.rst).  Per layer: forward and forward+backward time against
PyTorch, GFLOP/s, the strategy convcore's planner ran, and how convcore's time grows with the batch,
time(8)/time(1) and time(64)/time(8), flagged ``!`` above 8.5.  Per network:
the geometric mean of the ratios and the worst layers.

    python benchmarks/bench_layers.py [--nets NAME ...] [--batches 1 8 64] [--quick]
                                      [--rounds 3] [--reps 5] [--threads 2] [--force]
    python benchmarks/bench_layers.py --out docs/_data/layers.json   # the docs' snapshot

Writes benchmarks/results/layers.json.  Reported, never asserted.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _runner  # noqa: E402
from _runner import alternate, combine, geomean  # noqa: E402

SCALE_LIMIT = 8.5


def layer_id(r):
    from _nets import layer_label
    return layer_label(r) + ("" if r["bias"] else " nb")


def enumerate_child(payload):
    """(convcore process) the distinct convolutions of each network."""
    import _nets
    return {"nets": {n: _nets.conv_layers(n) for n in payload["nets"]}}


def plan(nets_layers, batches_for):
    """Distinct (geometry, batch) cases over all networks, and per network the
    rows that refer to them."""
    cases, per_net = {}, {}
    for net, layers in nets_layers.items():
        rows = []
        for r in layers:
            lid = layer_id(r)
            for n in batches_for(net):
                cid = f"{lid} N{n}"
                if cid not in cases:
                    cases[cid] = dict(id=cid, N=n, C=r["C"], H=r["H"], W=r["W"], K=r["K"],
                                      kernel=r["kernel"], stride=r["stride"],
                                      padding=r["padding"], dilation=r["dilation"],
                                      groups=r["groups"], bias=r["bias"])
            rows.append({"layer": lid, "count": r["count"], "names": r["names"],
                         "geometry": {k: r[k] for k in ("C", "H", "W", "K", "kernel", "stride",
                                                        "padding", "groups", "bias", "out")}})
        per_net[net] = rows
    return list(cases.values()), per_net


def summarise(per_net, timed, batches_for, flops_of, strategy=None):
    """Per network: rows per (layer, batch) with times, ratios, GFLOP/s, the
    strategies convcore ran (`strategy`: case id -> {"fwd", "bwd"}) and the
    scaling columns; geomeans and the worst layers."""
    strategy = strategy or {}
    out = {}
    for net, rows in per_net.items():
        table = []
        for r in rows:
            by_batch = {}
            for n in batches_for(net):
                cid = f"{r['layer']} N{n}"
                entry = {"layer": r["layer"], "N": n, "count": r["count"],
                         "strategy": strategy.get(cid)}
                for p in ("fwd", "fwd+bwd"):
                    res = timed.get(f"{cid}|{p}", {})
                    f = flops_of(cid) * (1 if p == "fwd" else 3)
                    e = {}
                    for side, v in res.items():
                        e[side] = {"median_s": v["median_s"], "gflops": f / v["median_s"] / 1e9}
                        if "ratio_vs_convcore" in v:
                            e[side]["ratio_vs_convcore"] = v["ratio_vs_convcore"]
                    entry[p] = e
                by_batch[n] = entry
                table.append(entry)
            for entry in by_batch.values():
                for lo, hi in ((1, 8), (8, 64)):
                    if entry["N"] == hi and lo in by_batch:
                        for p in ("fwd", "fwd+bwd"):
                            a = by_batch[lo][p].get("convcore", {}).get("median_s")
                            b = entry[p].get("convcore", {}).get("median_s")
                            if a and b:
                                entry[p][f"scale_{hi}_over_{lo}"] = b / a
        summ = {}
        for p in ("fwd", "fwd+bwd"):
            rs = [(e[p]["torch"]["ratio_vs_convcore"], e["layer"], e["N"]) for e in table
                  if e[p].get("torch", {}).get("ratio_vs_convcore")]
            summ[p] = {"geomean_torch_over_convcore": geomean([x[0] for x in rs]),
                       "min_ratio": min(x[0] for x in rs) if rs else None,
                       "worst": [{"layer": l, "N": n, "ratio": v} for v, l, n in sorted(rs)[:3]],
                       "below_1": sum(1 for x in rs if x[0] < 1.0)}
        flags = [{"layer": e["layer"], "N": e["N"], "pass": p, "scale": e[p][k]}
                 for e in table for p in ("fwd", "fwd+bwd") for k in e[p]
                 if k.startswith("scale_") and e[p][k] > SCALE_LIMIT]
        summ["scaling_flags"] = flags
        out[net] = {"rows": table, "summary": summ}
    return out


def _fmt(v, spec, width):
    return f" {v:{width - 1}{spec}}" if isinstance(v, (int, float)) else f"{'-':>{width}}"


def _strategy_text(st):
    if not st:
        return "-"
    return st["fwd"] if st["fwd"] == st["bwd"] else f"{st['fwd']}/{st['bwd']}"


def print_tables(result, out=sys.stdout):
    for net, d in result["networks"].items():
        print(f"\n{net}", file=out)
        head = (f"{'layer':34s}{'N':>4s}{'#':>3s}{'fwd ms':>9s}{'t/cc':>6s}{'fb ms':>9s}"
                f"{'t/cc':>6s}{'GF/s':>7s}{'t GF/s':>7s}{'scale':>7s}  strategy fwd/bwd")
        print(head, file=out)
        print("-" * len(head), file=out)
        for e in d["rows"]:
            f, fb = e["fwd"], e["fwd+bwd"]
            sc = fb.get("scale_8_over_1", fb.get("scale_64_over_8"))
            flag = "!" if isinstance(sc, float) and sc > SCALE_LIMIT else " "
            print(f"{e['layer']:34s}{e['N']:4d}{e['count']:3d}"
                  f"{_fmt(f.get('convcore', {}).get('median_s', 0) * 1e3, '.2f', 9)}"
                  f"{_fmt(f.get('torch', {}).get('ratio_vs_convcore'), '.2f', 6)}"
                  f"{_fmt(fb.get('convcore', {}).get('median_s', 0) * 1e3, '.2f', 9)}"
                  f"{_fmt(fb.get('torch', {}).get('ratio_vs_convcore'), '.2f', 6)}"
                  f"{_fmt(fb.get('convcore', {}).get('gflops'), '.1f', 7)}"
                  f"{_fmt(fb.get('torch', {}).get('gflops'), '.1f', 7)}"
                  f"{_fmt(sc, '.2f', 6)}{flag}  {_strategy_text(e.get('strategy'))}", file=out)
        s = d["summary"]
        for p in ("fwd", "fwd+bwd"):
            g = s[p]
            if g["geomean_torch_over_convcore"]:
                worst = ", ".join(f"{w['layer']} N{w['N']} {w['ratio']:.2f}" for w in g["worst"])
                print(f"  {p}: geomean PyTorch/convcore {g['geomean_torch_over_convcore']:.2f}, "
                      f"{g['below_1']} below 1.0; worst: {worst}", file=out)
        if s["scaling_flags"]:
            print(f"  scaling above {SCALE_LIMIT}: " + ", ".join(
                f"{x['layer']} N{x['N']} {x['pass']} {x['scale']:.1f}"
                for x in s["scaling_flags"]), file=out)


def _strategies(rounds):
    """Case id -> the strategies convcore's process reported (first round)."""
    for rnd in rounds.get("convcore", []):
        if isinstance(rnd, dict) and rnd.get("_strategy"):
            return rnd["_strategy"]
    return {}


def main(argv=None):
    import _nets
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="*", choices=list(_nets.NETWORKS),
                    help="networks (default: all)")
    ap.add_argument("--batches", nargs="*", type=int,
                    help="batch sizes (default: 1 and 8 for 224x224 and 227x227, "
                         "1, 8 and 64 below)")
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke run: {', '.join(_nets.QUICK_NETWORKS)}, batches 1 and 8, "
                         "1 round, 2 repetitions")
    ap.add_argument("--no-torch", action="store_true", help="convcore alone")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "layers.json"))
    _runner.add_protocol_args(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.nets = args.nets or list(_nets.QUICK_NETWORKS)
        args.batches = args.batches or [1, 8]
        args.rounds, args.reps = min(args.rounds, 1), min(args.reps, 2)
    nets = args.nets or list(_nets.NETWORKS)
    quiet = _runner.check_quiet(args.force)

    def batches_for(net):
        if args.batches:
            return sorted(set(args.batches))
        return _nets.NETWORKS[net][3]

    script = os.path.abspath(__file__)
    layers = _runner.spawn(script, "enumerate", {"nets": nets})["nets"]
    cases, per_net = plan(layers, batches_for)
    print(f"{len(cases)} distinct (layer, batch) cases from {', '.join(nets)}", flush=True)
    limits = _runner.machine_limits(threads=args.threads)
    sides = ["convcore"] + ([] if args.no_torch else ["torch"])
    t0 = time.time()
    rounds = alternate(script, sides, {"cases": cases, "threads": args.threads,
                                       "reps": args.reps, "warmup": 1 if args.quick else 2,
                                       "seed": 0},
                       rounds=args.rounds, log=lambda m: print(m, flush=True))
    timed = combine(rounds)
    from _convcases import flops
    by_id = {c["id"]: c for c in cases}
    result = {
        "benchmark": "layers", "smoke": _runner.smoke_marker(args),
        "environment": _runner.environment(args.threads, _runner.versions_of(rounds)),
        "limits": limits, "quiet_check": quiet, "rounds": args.rounds, "reps": args.reps,
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0)),
        "ratio": "PyTorch time / convcore time, median over rounds (> 1: convcore faster)",
        "strategy": "the planner's choice without a tuned plan, float32, forward/backward "
                    "('+crop': kernel taps meeting only padding cropped away)",
        "networks": summarise(per_net, timed, batches_for, lambda cid: flops(by_id[cid]),
                              _strategies(rounds)),
        "layers": {net: rows for net, rows in per_net.items()},
    }
    print(f"\nmachine: sgemm 2048^3 {limits['sgemm_2048_gflops']:.0f} GFLOP/s, copy "
          f"{limits['copy_gbs']:.1f} GB/s; {args.threads} threads; {args.rounds} rounds x "
          f"{args.reps} reps")
    print_tables(result)
    _runner.write_json(args.out, result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    if _runner.is_child():
        from _convcases import SIDES
        _runner.child_main(dict(SIDES, enumerate=enumerate_child))
    else:
        main()
