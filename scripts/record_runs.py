"""Record the short training runs the docs quote (pruning and ensembles) in
docs/_data/runs.json.

    python scripts/record_runs.py [--out runs/docs] [--epochs 3] [--threads 1]

Trains LeNet-5 on Fashion-MNIST with three seeds (``convcore train``),
evaluates their ensemble (``convcore evaluate RUN1 RUN2 RUN3``), prunes the
first run to 90 % sparsity with a two-epoch fine-tune (``convcore prune``),
and channel-prunes a trained ``cnn_bn`` by half (``convcore prune
--structured``), and runs a small block search (``convcore search --budget
8``).  Every step is the command line a user would type; each
training run is a few epochs (about a minute on two cores).
"""
import argparse
import contextlib
import io
import json
import os
import platform
import sys
import time


def train(argv, out, reuse):
    if reuse and os.path.exists(os.path.join(out, "checkpoint.npz")):
        print(f"reusing {out}", file=sys.stderr)
        return
    run(argv + ["--out", out])


def run(argv):
    from convcore.cli import main
    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    if rc:
        raise SystemExit(f"convcore {' '.join(argv)} exited with {rc}")
    print(f"$ convcore {' '.join(argv)}   ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return buf.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/docs")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reuse", action="store_true", help="keep trained runs already in --out")
    ap.add_argument("--steps", default="ensemble,prune,search",
                    help="which records to (re)make; the others are kept from --data")
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "docs",
                                                   "_data", "runs.json"))
    args = ap.parse_args()
    o, th = args.out, ["--threads", str(args.threads)]
    steps = set(args.steps.split(","))
    rec = {}
    if os.path.exists(args.data):
        with open(args.data) as f:
            rec = json.load(f)
    rec.update({"python": platform.python_version(), "machine": platform.machine(),
                "epochs": args.epochs, "threads": args.threads})
    if "search" in steps:
        run(["search", "--budget", "8", "--epochs", "2", "--lr", "0.1", "--out", f"{o}/search"]
            + th)
        with open(f"{o}/search/search.json") as f:
            rec["search"] = json.load(f)
    if steps & {"ensemble", "prune"}:
        record_training(args, o, th, rec)
    text = json.dumps(rec, indent=1)
    for prefix in (os.path.abspath(o), o):   # paths as in the docs, not this machine's
        text = text.replace(prefix, "runs/docs")
    with open(args.data, "w") as f:
        f.write(text + "\n")
    print(f"wrote {args.data}", file=sys.stderr)


def record_training(args, o, th, rec):
    members = []
    for seed in (0, 1, 2):
        d = f"{o}/lenet5-s{seed}"
        train(["train", "--model", "lenet5", "--epochs", str(args.epochs), "--seed", str(seed)]
              + th, d, args.reuse)
        members.append(d)
    ens = json.loads(run(["evaluate", *members, "--json"] + th))
    rec["ensemble"] = {"command": f"convcore evaluate {' '.join(members)}",
                       "members": [{k: m[k] for k in ("path", "accuracy", "loss")}
                                   for m in ens["members"]],
                       "accuracy": ens["accuracy"], "loss": ens["loss"]}
    run(["prune", members[0], "--amount", "0.9", "--epochs", "2", "--out",
         f"{o}/lenet5-pruned"] + th)
    with open(f"{o}/lenet5-pruned/prune.json") as f:
        rec["prune_lenet5"] = json.load(f)
    train(["train", "--model", "cnn_bn", "--epochs", str(args.epochs), "--lr", "0.05"] + th,
          f"{o}/cnn_bn", args.reuse)
    run(["prune", f"{o}/cnn_bn", "--structured", "--amount", "0.5", "--epochs", "2",
         "--out", f"{o}/cnn_bn-pruned"] + th)
    with open(f"{o}/cnn_bn-pruned/prune.json") as f:
        rec["prune_cnn_bn"] = json.load(f)


if __name__ == "__main__":
    main()
