"""One LeNet-5 training epoch on Fashion-MNIST: convcore vs PyTorch CPU.

    python benchmarks/bench_train.py [--threads 2] [--rounds 3] [--reps 5] [--images 60000]
                                     [--profile] [--quick] [--force]
    python benchmarks/bench_train.py --out docs/_data/train.json   # the docs' snapshot

Same architecture and initial weights (convcore's ``lenet5``, its weights
handed to a hand-written PyTorch twin by name), batch 64, SGD with momentum
0.9, lr 0.01, the same batches in the same order.  Each library runs alone in
its own fresh process (``_runner.py``, docs/contributing.rst) with its defaults --
the user's own loop, no thread settings beyond the thread count -- warms up on
a few batches, then trains ``--reps`` epochs and reports their median; the
processes alternate for ``--rounds`` rounds.  Prints median seconds per
epoch, images/s and the median over rounds of torch/convcore (> 1 means
convcore is faster), and writes benchmarks/results/train.json.  With
--profile, also profiles one convcore epoch and prints where the time goes.
Reported, never asserted.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _runner  # noqa: E402
from _runner import alternate, combine  # noqa: E402

WARMUP_BATCHES = 20


def prepare_child(p):
    """(convcore process, not timed) the normalised batches in order and the
    initial weights, written to ``.npz`` files for both sides."""
    from convcore import data
    from convcore.train import build_model
    try:
        train, _ = data.load_fashion_mnist()
        x, y = train.images[:p["images"]], train.labels[:p["images"]]
        src = "fashion-mnist"
    except data.DatasetNotFoundError:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (p["images"], 1, 28, 28)).astype(np.uint8)
        y = rng.integers(0, 10, p["images"])
        src = "random"
    mean, std = data.channel_stats(x)
    batches = list(data.BatchIterator(x, y, 64, seed=0, mean=mean, std=std).epoch(0))
    np.savez(p["data"], x=np.concatenate([b[0] for b in batches]).astype(np.float32),
             y=np.concatenate([b[1] for b in batches]).astype(np.int64),
             sizes=np.array([len(b[1]) for b in batches]))
    model = build_model(p["model"], 1, 10, 28, seed=0)
    np.savez(p["weights"], **{k: np.asarray(v) for k, v in model.state_dict().items()})
    return {"data": src, "images": int(sum(len(b[1]) for b in batches))}


def _batches(path):
    with np.load(path) as z:
        x, y, sizes = z["x"], z["y"], z["sizes"]
    edges = np.concatenate([[0], np.cumsum(sizes)])
    return [(x[a:b], y[a:b]) for a, b in zip(edges[:-1], edges[1:])]


def convcore_child(p):
    import convcore as cc
    from convcore import losses, optim
    from convcore.train import build_model, skip_first_input_grad
    cc.set_num_threads(p["threads"])
    if p.get("blas_threads"):
        from threadpoolctl import threadpool_limits
        threadpool_limits(p["blas_threads"], user_api="blas")
    batches = _batches(p["data"])
    model = build_model(p["model"], 1, 10, 28, seed=0)
    with np.load(p["weights"]) as z:
        model.load_state_dict({k: z[k] for k in z.files})
    skip_first_input_grad(model)   # the data needs no gradient; torch skips it too
    opt = optim.SGD(list(model.parameters()), lr=0.01, momentum=0.9)
    crit = losses.CrossEntropyLoss()

    def epoch(bs=batches):
        model.train()
        for x, y in bs:
            logits = model(x)
            crit(logits, y)
            opt.zero_grad()
            model.backward(crit.backward())
            opt.step()
    epoch(batches[:WARMUP_BATCHES])
    out = {"epoch": _epochs(epoch, p["reps"])}
    if p.get("profile"):
        out["_profile"] = profile_epoch(epoch)
    out["_versions"] = {"convcore": cc.__version__}
    return out


def _epochs(epoch, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - t0)
    return {"median_s": float(np.median(times)), "times_s": times}


def torch_child(p):
    import torch
    from torch import nn
    torch.set_num_threads(p["threads"])
    F = torch.nn.functional
    batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in _batches(p["data"])]
    m = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    names = ["conv1", "conv2", "fc1", "fc2", "fc3"]
    layers = [mod for mod in m if isinstance(mod, (nn.Conv2d, nn.Linear))]
    with np.load(p["weights"]) as z, torch.no_grad():
        for name, mod in zip(names, layers):
            mod.weight.copy_(torch.from_numpy(z[f"{name}.weight"]))
            mod.bias.copy_(torch.from_numpy(z[f"{name}.bias"]))
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

    def epoch(bs=batches):
        m.train()
        for x, y in bs:
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            opt.step()
    epoch(batches[:WARMUP_BATCHES])
    return {"epoch": _epochs(epoch, p["reps"]), "_versions": {"torch": torch.__version__}}


def profile_epoch(epoch, top=25):
    import cProfile
    import pstats
    pr = cProfile.Profile()
    pr.enable()
    epoch()
    pr.disable()
    st = pstats.Stats(pr)
    rows = []
    for (fname, line, func), (_, nc, tt, ct, _) in st.stats.items():
        rows.append((tt, ct, nc, f"{os.path.basename(fname)}:{line}({func})"))
    rows.sort(reverse=True)
    return {"total_s": st.total_tt,
            "rows": [{"self_s": tt, "cum_s": ct, "calls": nc, "where": w}
                     for tt, ct, nc, w in rows[:top]]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=60000)
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="limit NumPy's BLAS threads in convcore's process (default: the "
                         "library defaults, as a user's own loop runs)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2,000 images, 1 round, 1 epoch")
    ap.add_argument("--model", default="lenet5", help="convcore model (module:function accepted)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "train.json"))
    _runner.add_protocol_args(ap, reps=5)
    args = ap.parse_args(argv)
    if args.quick:
        args.images = min(args.images, 2000)
        args.rounds, args.reps = min(args.rounds, 1), min(args.reps, 1)
    if args.model != "lenet5" and not args.no_torch:
        ap.error("the PyTorch twin is LeNet-5's: give --no-torch with another --model")
    quiet = _runner.check_quiet(args.force)
    script = os.path.abspath(__file__)
    work = tempfile.mkdtemp(prefix="cc-bench-train-")
    try:
        base = {"data": os.path.join(work, "batches.npz"),
                "weights": os.path.join(work, "weights.npz"), "model": args.model,
                "images": args.images, "threads": args.threads, "reps": args.reps,
                "blas_threads": args.blas_threads}
        info = _runner.spawn(script, "prepare", base)
        n = info["images"]
        print(f"{args.model}, {n} {info['data']} images, batch 64, SGD momentum 0.9, "
              f"{args.threads} threads, each library alone in its process", flush=True)
        sides = ["convcore"] + ([] if args.no_torch else ["torch"])

        def payload(side):
            return dict(base, profile=args.profile and side == "convcore")
        t0 = time.time()
        rounds = alternate(script, sides, payload, rounds=args.rounds,
                           log=lambda m: print(m, flush=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    timed = combine(rounds)["epoch"]
    res = {}
    for side, r in timed.items():
        res[side] = {"median_s": r["median_s"], "rounds_s": r["rounds_s"],
                     "times_s": [t for rr in rounds[side] for t in rr["epoch"]["times_s"]],
                     "images_per_s": n / r["median_s"]}
        if "ratio_vs_convcore" in r:
            res[side]["ratio_vs_convcore"] = r["ratio_vs_convcore"]
    print(f"\n{'peer':10s} {'s/epoch':>8s} {'img/s':>8s} {'torch/convcore':>15s}")
    for k, v in res.items():
        r = v.get("ratio_vs_convcore")
        print(f"{k:10s} {v['median_s']:8.2f} {v['images_per_s']:8.0f} "
              f"{'' if r is None else f'{r:15.2f}'}")
    payload = {"benchmark": "train", "smoke": _runner.smoke_marker(args),
               "environment": _runner.environment(args.threads, _runner.versions_of(rounds)),
               "quiet_check": quiet, "rounds": args.rounds, "reps": args.reps,
               "blas_threads": args.blas_threads,
               "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0)),
               "images": n, "data": info["data"], "results": res}
    if args.profile:
        prof = rounds["convcore"][-1].get("_profile")
        payload["profile"] = prof
        print(f"\nprofile of one convcore epoch ({prof['total_s']:.2f} s; self time, "
              "cumulative, calls):")
        for r in prof["rows"]:
            print(f"  {r['self_s']:7.3f} s {100 * r['self_s'] / prof['total_s']:5.1f}%  "
                  f"cum {r['cum_s']:7.3f} s  {r['calls']:7d}  {r['where']}")
    _runner.write_json(args.out, payload)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    if _runner.is_child():
        _runner.child_main({"prepare": prepare_child, "convcore": convcore_child,
                            "torch": torch_child})
    else:
        main()
