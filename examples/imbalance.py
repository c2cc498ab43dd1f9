"""
The imbalance study: cross-entropy, focal and class-balanced focal loss
=======================================================================

Long-tailed Fashion-MNIST::

    python examples/imbalance.py [--ratio 100] [--epochs 10] [--model lenet5]
                                 [--losses ce focal cb-focal] [--out runs/imbalance]

Subsamples the training set to Cui et al.'s exponential long-tailed profile
(the largest class ``ratio`` times the smallest), trains one model per loss with
the same seed, and prints per-class and mean per-class test accuracy on the
balanced test set as a Markdown table (also written to ``<out>/table.md``).
The guide's page *Imbalanced data and focal loss* explains the losses.

The documentation build does not run this script (three trainings); the output
below was recorded from ``python examples/imbalance.py --threads 1``.
"""
import argparse
import json
import os

import numpy as np

from convcore.train import TrainConfig, fit


def main():
    ap = argparse.ArgumentParser(description="Long-tailed Fashion-MNIST: cross-entropy "
                                 "vs focal vs class-balanced focal loss.")
    ap.add_argument("--ratio", type=float, default=100.0)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--losses", nargs="+", default=["ce", "focal", "cb-focal"])
    ap.add_argument("--gamma", type=float, default=2.0)
    ap.add_argument("--beta", type=float, default=0.9999)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/imbalance")
    args = ap.parse_args()
    results = {}
    for loss in args.losses:
        cfg = TrainConfig(model=args.model, data_dir=args.data_dir, epochs=args.epochs,
                          loss=loss, gamma=args.gamma, beta=args.beta, lr=args.lr,
                          imbalance_ratio=args.ratio, threads=args.threads, seed=args.seed,
                          out=os.path.join(args.out, loss))
        r = fit(cfg, plots=False)
        results[loss] = {"history": r["history"], "classes": r["classes"],
                         "train_counts": r["train_counts"]}
    first = results[args.losses[0]]
    names = {"ce": "CE", "focal": f"focal (γ={args.gamma:g})", "cb-ce": "CB CE",
             "cb-focal": f"CB focal (γ={args.gamma:g}, β={args.beta:g})"}
    lines = [f"Long-tailed Fashion-MNIST (imbalance ratio {args.ratio:g}, "
             f"{sum(first['train_counts'])} training images), {args.model}, "
             f"{args.epochs} epochs; test accuracy (%) on the balanced test set", "",
             "| class | train images | " + " | ".join(names.get(l, l) for l in args.losses)
             + " |", "|---|---:|" + "---:|" * len(args.losses)]
    for c, name in enumerate(first["classes"]):
        accs = [results[l]["history"][-1]["per_class_acc"][c] * 100 for l in args.losses]
        lines.append(f"| {name} | {first['train_counts'][c]} | "
                     + " | ".join(f"{a:.1f}" for a in accs) + " |")
    for key, label in (("mean_class_acc", "**mean per-class**"), ("test_acc", "overall")):
        lines.append(f"| {label} | | " + " | ".join(
            f"{results[l]['history'][-1][key] * 100:.1f}" for l in args.losses) + " |")
    few = [c for c in range(len(first["classes"])) if c >= len(first["classes"]) - 3]
    lines.append(f"| rarest 3 classes (mean) | | " + " | ".join(
        f"{np.mean([results[l]['history'][-1]['per_class_acc'][c] for c in few]) * 100:.1f}"
        for l in args.losses) + " |")
    table = "\n".join(lines)
    print("\n" + table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

# %%
# Recorded output
# ---------------
#
# .. literalinclude:: /_recorded/imbalance/output.txt
#    :language: none
#    :class: cc-wrap
