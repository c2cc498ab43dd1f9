"""Whole networks: a training step and inference, convcore vs PyTorch vs ONNX Runtime.

A training step is zero_grad, forward, the cross-entropy loss and its
gradient, and backward (no optimiser update); inference is the forward pass
in eval mode, as each library's users write it for output only
(``convcore.no_grad()``, ``torch.inference_mode()``).  The PyTorch side runs hand-written twins (``_twins.py``) with
convcore's weights copied by state-dict name; ONNX Runtime (inference only)
runs the twin exported with ``torch.onnx.export``, with 2 intra-op threads
(the run's thread count).  Before timing a network, one process that imports
both libraries checks in float64 that the logits and the input gradient
agree; a pair that does not is refused, not timed.

Each library then runs alone in its own process (``_runner.py``,
docs/contributing.rst), alternating, one process per side, network and round.  Each
process also reports its peak memory: the peak RSS over building the network
and running its steps, above the RSS after its imports.

    python benchmarks/bench_nets.py [--nets NAME ...] [--quick] [--profile] [--memory-cache MIB]
                                    [--rounds 3] [--reps 5] [--threads 2] [--force]
    python benchmarks/bench_nets.py --out docs/_data/nets.json    # the docs' snapshot

``--profile`` adds, per network, convcore's time by layer type (one more
training step and inference with every module timed, exclusive of its
children).  Writes benchmarks/results/nets.json.  Reported, never asserted.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _runner  # noqa: E402
from _runner import alternate, combine, geomean  # noqa: E402

# network (a key of _nets.NETWORKS), training batches, inference batches
CASES = [
    ("lenet5", (64, 256), (1000,)),
    ("alexnet", (8,), (1,)),
    ("vgg11-32", (16,), ()),
    ("vgg16", (), (1,)),
    ("googlenet", (4,), (1,)),
    ("resnet18-32", (32,), ()),
    ("resnet18", (4, 16), (1, 16)),
    ("resnet50", (4,), (1,)),
]
QUICK_CASES = [("lenet5", (64,), (100,)), ("resnet18-32", (8,), (1,))]
TOLERANCE = 1e-8   # float64, relative to the largest magnitude


def _inputs(shape, n, seed, num_classes):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + tuple(shape), dtype=np.float32)
    t = rng.integers(0, num_classes, n)
    return x, t


def _spec(net):
    import _nets
    fn, kw, shape, _ = _nets.NETWORKS[net]
    return fn, kw.get("num_classes", 1000), shape


# ----------------------------------------------------------------- the check
def check_child(p):
    """(imports convcore and torch; nothing timed) float64 parity, then the
    float32 weights for the timed processes and the ONNX files."""
    import convcore as cc
    import torch
    import _nets
    import _twins
    fn, ncls, shape = _spec(p["net"])
    net = _nets.build(p["net"], rng=0, dtype=np.float64)
    twin = _twins.build(fn, ncls, shape[0]).double()
    state = {k: np.asarray(v) for k, v in net.state_dict().items()}
    np.savez(p["npz64"], **state)
    _twins.load_npz(twin, p["npz64"])
    os.unlink(p["npz64"])
    np.savez(p["npz"], **{k: v.astype(np.float32) if v.dtype.kind == "f" else v
                          for k, v in state.items()})
    del state
    for m in net.modules():       # dropout off on both sides: same function
        if type(m).__name__ == "Dropout":
            m.p = 0.0
    for m in twin.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2,) + tuple(shape))
    t = rng.integers(0, ncls, 2)
    out = {}
    net.train()
    twin.train()
    logits = net(x)
    gx = net.backward(cc.cross_entropy_backward(logits, t))
    tx = torch.from_numpy(x).requires_grad_(True)
    tl = twin(tx)
    torch.nn.functional.cross_entropy(tl, torch.from_numpy(t)).backward()

    def rel(a, b):
        b = np.asarray(b)
        return float(np.max(np.abs(np.asarray(a) - b)) / max(np.max(np.abs(b)), 1e-300))
    out["train_logits_rel_err"] = rel(logits, tl.detach().numpy())
    out["input_grad_rel_err"] = rel(gx, tx.grad.numpy())
    net.eval()
    twin.eval()
    with torch.no_grad():
        out["eval_logits_rel_err"] = rel(net(x), twin(torch.from_numpy(x)).numpy())
    errs = [out[k] for k in ("train_logits_rel_err", "input_grad_rel_err",
                             "eval_logits_rel_err")]
    out["ok"] = all(e <= TOLERANCE for e in errs)
    out["onnx"] = {}
    if out["ok"] and p.get("onnx_batches"):
        twin = twin.float().eval()
        for n in p["onnx_batches"]:
            path = os.path.join(p["dir"], f"{p['net']}-{n}.onnx")
            try:
                import warnings
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(twin, (torch.zeros((n,) + tuple(shape)),), path,
                                      input_names=["x"], output_names=["logits"])
                out["onnx"][str(n)] = path
            except Exception as e:   # reported in the table, not fatal
                out["onnx"][str(n)] = f"export failed: {type(e).__name__}: {e}"[:300]
    return out


# ------------------------------------------------------------- timed children
def _memory(rss0, peak_reset):
    peak = _runner.rss_bytes("VmHWM")
    return {"rss_after_imports": rss0, "peak_rss": peak, "peak_reset": peak_reset,
            "peak_above_imports": None if peak is None or rss0 is None else peak - rss0}


def _profiled(net):
    """Wrap every module's forward/backward with exclusive timers by type."""
    totals, stack = {}, []

    def wrap(m, kind):
        orig = getattr(m, kind)
        typ = type(m).__name__

        def timed(*a, **k):
            stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                dt = time.perf_counter() - t0
                child = stack.pop()
                totals[typ] = totals.get(typ, 0.0) + dt - child
                if stack:
                    stack[-1] += dt
        object.__setattr__(m, kind, timed)
    for m in net.modules():
        wrap(m, "forward")
        wrap(m, "backward")
    return totals


def convcore_child(p):
    import convcore as cc
    rss0 = _runner.rss_bytes()
    reset = _runner.reset_peak_rss()
    cc.set_num_threads(p["threads"])
    if p.get("memory_cache"):    # (--memory-cache: not the default)
        cc.set_memory_cache(p["memory_cache"] << 20)
    import _nets
    _, ncls, shape = _spec(p["net"])
    net = _nets.build(p["net"], rng=0)
    with np.load(p["npz"]) as z:      # the checked weights, one array at a time
        for key, owner, attr, is_param in net._named_state():
            a = z[key]
            dst = getattr(owner, attr)
            (dst.data if is_param else dst)[...] = a
            del a
    first = next((m for m in net.modules() if type(m).__name__ == "Conv2d"), None)
    if first is not None:     # the data needs no gradient (PyTorch skips it too)
        first.needs_input_grad = False
    out = {}
    steps = {}
    for n in p["train"]:
        x, t = _inputs(shape, n, p["seed"], ncls)

        def step(x=x, t=t):
            net.zero_grad()
            logits = net(x)
            cc.cross_entropy(logits, t)
            net.backward(cc.cross_entropy_backward(logits, t))
        steps[f"train N{n}"] = step
    for n in p["infer"]:
        x, _ = _inputs(shape, n, p["seed"], ncls)

        def infer(x=x):
            with cc.no_grad():
                net(x)
        steps[f"infer N{n}"] = infer
    for name, fn in steps.items():
        (net.eval() if name.startswith("infer") else net.train())
        out[name] = _runner.measure(fn, p["reps"], p["warmup"])
    out["_memory"] = _memory(rss0, reset)
    if p.get("profile"):
        totals = _profiled(net)
        prof = {}
        for name, fn in steps.items():
            (net.eval() if name.startswith("infer") else net.train())
            totals.clear()
            t0 = time.perf_counter()
            fn()
            wall = time.perf_counter() - t0
            prof[name] = {"wall_s": wall, "by_type_s": dict(totals)}
        out["_profile"] = prof
    out["_versions"] = {"convcore": cc.__version__}
    return out


def torch_child(p):
    import torch
    rss0 = _runner.rss_bytes()
    reset = _runner.reset_peak_rss()
    torch.set_num_threads(p["threads"])
    import _twins
    fn, ncls, shape = _spec(p["net"])
    net = _twins.load_npz(_twins.build(fn, ncls, shape[0]), p["npz"])
    F = torch.nn.functional
    out, steps = {}, {}
    for n in p["train"]:
        x, t = _inputs(shape, n, p["seed"], ncls)
        x, t = torch.from_numpy(x), torch.from_numpy(t)

        def step(x=x, t=t):
            net.zero_grad()
            F.cross_entropy(net(x), t).backward()
        steps[f"train N{n}"] = step
    for n in p["infer"]:
        x = torch.from_numpy(_inputs(shape, n, p["seed"], ncls)[0])

        def infer(x=x):
            with torch.inference_mode():
                net(x)
        steps[f"infer N{n}"] = infer
    for name, f in steps.items():
        (net.eval() if name.startswith("infer") else net.train())
        out[name] = _runner.measure(f, p["reps"], p["warmup"])
    out["_memory"] = _memory(rss0, reset)
    out["_versions"] = {"torch": torch.__version__}
    return out


def onnxruntime_child(p):
    import onnxruntime as ort
    rss0 = _runner.rss_bytes()
    reset = _runner.reset_peak_rss()
    _, ncls, shape = _spec(p["net"])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = p["threads"]
    opts.inter_op_num_threads = 1
    out = {}
    for n in p["infer"]:
        path = p["onnx"].get(str(n), "")
        if not path.endswith(".onnx"):
            continue
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        x, _ = _inputs(shape, n, p["seed"], ncls)
        name = sess.get_inputs()[0].name
        out[f"infer N{n}"] = _runner.measure(lambda: sess.run(None, {name: x}), p["reps"],
                                             p["warmup"])
    out["_memory"] = _memory(rss0, reset)
    out["_versions"] = {"onnxruntime": ort.__version__}
    return out


# -------------------------------------------------------------------- parent
def onnx_status():
    """None when ONNX Runtime and the exporter's packages are importable, else why not."""
    missing = [m for m in ("onnxruntime", "onnx", "onnxscript")
               if importlib.util.find_spec(m) is None]
    return f"not installed ({', '.join(missing)}; pip install '.[bench]')" if missing else None


def summarise(results):
    """Geomeans of the ratios over all cases, per kind and overall."""
    train, infer, ort, best = [], [], [], []
    for net in results.values():
        for case, row in net.get("cases", {}).items():
            r = row.get("torch", {}).get("ratio_vs_convcore")
            (train if case.startswith("train") else infer).append(r)
            ort.append(row.get("onnxruntime", {}).get("ratio_vs_convcore"))
            best.append(row.get("torch", {}).get("ratio_best_rounds"))
    return {"train_geomean_torch_over_convcore": geomean(train),
            "infer_geomean_torch_over_convcore": geomean(infer),
            "infer_geomean_onnxruntime_over_convcore": geomean(ort),
            "all_geomean_torch_over_convcore": geomean(train + infer),
            # (the fastest rounds' ratio: see _runner.combine)
            "all_geomean_torch_over_convcore_best_rounds": geomean(best)}


def _ms(v):
    return f"{v * 1e3:10.2f}" if isinstance(v, float) else f"{'-':>10s}"


def _ratio(v, missing="-"):
    return f"{v:8.2f}" if isinstance(v, float) else f"{missing:>8s}"


def print_tables(res, out=sys.stdout):
    head = (f"{'network':14s}{'case':12s}{'convcore ms':>11s}{'torch ms':>10s}{'t/cc':>8s}"
            f"{'best':>6s}{'ORT ms':>10s}{'ORT/cc':>8s}")
    print(head, file=out)
    print("-" * len(head), file=out)
    for net, d in res["networks"].items():
        if not d.get("check", {}).get("ok", False):
            print(f"{net:14s}REFUSED: the float64 check failed {d.get('check')}", file=out)
            continue
        for case, row in d["cases"].items():
            o = row.get("onnxruntime", {})
            miss = "n/a" if case.startswith("train") else (
                "absent" if res["onnxruntime"] != "installed" else "-")
            print(f"{net:14s}{case:12s}{_ms(row.get('convcore', {}).get('median_s')):>11s}"
                  f"{_ms(row.get('torch', {}).get('median_s'))}"
                  f"{_ratio(row.get('torch', {}).get('ratio_vs_convcore'))}"
                  f"{_ratio(row.get('torch', {}).get('ratio_best_rounds'))[2:]}"
                  f"{_ms(o.get('median_s'))}{_ratio(o.get('ratio_vs_convcore'), miss)}",
                  file=out)
    print("(t/cc: median over rounds of the per-round ratio; best: PyTorch's fastest round "
          "over convcore's, the two sides' quiet moments)", file=out)
    if res["onnxruntime"] != "installed":
        print(f"ONNX Runtime: {res['onnxruntime']}", file=out)
    if res.get("convcore_memory_cache_mib"):
        print(f"convcore ran with a {res['convcore_memory_cache_mib']} MiB memory cache "
              "(cc.set_memory_cache; off by default)", file=out)
    print("\npeak memory above imports (MiB): network, convcore, torch, torch/convcore",
          file=out)
    for net, d in res["networks"].items():
        m = d.get("memory", {})
        c, t = m.get("convcore"), m.get("torch")
        if c and t:
            print(f"  {net:14s}{c / 2**20:9.1f}{t / 2**20:9.1f}{t / c:8.2f}", file=out)
    s = res["summary"]
    print("\ngeomeans: " + ", ".join(f"{k} {v:.2f}" for k, v in s.items() if v), file=out)
    for net, d in res["networks"].items():
        for case, p in (d.get("profile") or {}).items():
            tot = sum(p["by_type_s"].values()) or 1.0
            parts = sorted(p["by_type_s"].items(), key=lambda kv: -kv[1])
            print(f"\nconvcore profile, {net} {case} ({p['wall_s'] * 1e3:.1f} ms): " + ", ".join(
                f"{k} {100 * v / tot:.0f}%" for k, v in parts if v / tot >= 0.005), file=out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="*", choices=[c[0] for c in CASES],
                    help="networks (default: all of the table)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: LeNet-5 and ResNet-18 on 32x32 at small batches, "
                         "1 round, 2 repetitions")
    ap.add_argument("--profile", action="store_true",
                    help="convcore's time per layer type, per network")
    ap.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime")
    ap.add_argument("--memory-cache", type=int, default=0, metavar="MIB",
                    help="convcore with cc.set_memory_cache(MIB MiB) (default 0: off, "
                         "convcore's default; recorded in the JSON)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "nets.json"))
    _runner.add_protocol_args(ap)
    args = ap.parse_args(argv)
    cases = QUICK_CASES if args.quick else CASES
    if args.quick:
        args.rounds, args.reps = min(args.rounds, 1), min(args.reps, 2)
    if args.nets:
        cases = [c for c in cases if c[0] in args.nets] or \
            [c for c in CASES if c[0] in args.nets]
    quiet = _runner.check_quiet(args.force)
    ort_missing = "skipped (--no-onnx)" if args.no_onnx else onnx_status()
    script = os.path.abspath(__file__)
    limits = _runner.machine_limits(threads=args.threads)
    work = tempfile.mkdtemp(prefix="cc-bench-nets-")
    t0 = time.time()
    networks, versions = {}, {}
    try:
        for net, train, infer in cases:
            print(f"{net}: float64 check", flush=True)
            base = dict(net=net, threads=args.threads, reps=args.reps, seed=0,
                        memory_cache=args.memory_cache,
                        warmup=1 if args.quick else 2, train=list(train), infer=list(infer),
                        npz=os.path.join(work, f"{net}.npz"), dir=work)
            check = _runner.spawn(script, "check", dict(
                base, npz64=os.path.join(work, f"{net}-64.npz"),
                onnx_batches=[] if ort_missing else list(infer)))
            networks[net] = {"train_batches": list(train), "infer_batches": list(infer),
                             "check": check}
            if not check["ok"]:
                print(f"  REFUSED: float64 logits or input gradient differ: {check}", flush=True)
                continue
            sides = ["convcore", "torch"]
            if infer and not ort_missing and any(v.endswith(".onnx")
                                                 for v in check["onnx"].values()):
                sides.append("onnxruntime")

            def payload(side, base=base, check=check):
                p = dict(base, onnx=check["onnx"])
                if side == "onnxruntime":
                    p["train"] = []
                if side == "convcore" and args.profile:
                    p["profile"] = True
                return p
            rounds = alternate(script, sides, payload, rounds=args.rounds,
                               log=lambda m: print(m, flush=True))
            versions.update(_runner.versions_of(rounds))
            networks[net]["cases"] = combine(rounds)
            mem = {}
            for side, rs in rounds.items():
                vals = [r["_memory"]["peak_above_imports"] for r in rs
                        if r.get("_memory", {}).get("peak_above_imports") is not None]
                if vals:
                    mem[side] = float(np.median(vals))
            networks[net]["memory"] = mem
            networks[net]["memory_detail"] = {s: [r.get("_memory") for r in rs]
                                              for s, rs in rounds.items()}
            if args.profile:
                networks[net]["profile"] = rounds["convcore"][-1].get("_profile")
            os.unlink(base["npz"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res = {"benchmark": "nets", "smoke": _runner.smoke_marker(args),
           "environment": _runner.environment(args.threads, versions), "limits": limits,
           "quiet_check": quiet, "rounds": args.rounds, "reps": args.reps,
           "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0)),
           "ratio": "peer time / convcore time, median over rounds (> 1: convcore faster)",
           "onnxruntime": ort_missing or "installed",
           "convcore_memory_cache_mib": args.memory_cache,
           "networks": networks}
    res["summary"] = summarise(networks)
    print()
    print_tables(res)
    _runner.write_json(args.out, res)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    if _runner.is_child():
        _runner.child_main({"check": check_child, "convcore": convcore_child,
                            "torch": torch_child, "onnxruntime": onnxruntime_child})
    else:
        main()
