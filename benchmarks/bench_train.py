"""One LeNet-5 training epoch on Fashion-MNIST: convcore vs PyTorch CPU.

    python benchmarks/bench_train.py [--threads 2] [--reps 3] [--images 60000]
                                     [--profile]

Same architecture and initial weights (copied from the convcore model), batch
64, SGD with momentum 0.9, lr 0.01, same batch order; the two epochs run
interleaved (convcore, torch, convcore, torch ...). Prints median seconds per
epoch, images/s and the median per-pair ratio torch/convcore (> 1 means
convcore is faster), and writes benchmarks/results/train.json. With --profile,
also profiles one convcore epoch and prints where the time goes. Reported,
never asserted.
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import environment, write_json  # noqa: E402

import convcore as cc  # noqa: E402
from convcore import data, losses, optim  # noqa: E402
from convcore.train import build_model, skip_first_input_grad  # noqa: E402


def load(n_images):
    try:
        train, _ = data.load_fashion_mnist()
        x, y = train.images[:n_images], train.labels[:n_images]
        src = "fashion-mnist"
    except data.DatasetNotFoundError:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (n_images, 1, 28, 28)).astype(np.uint8)
        y = rng.integers(0, 10, n_images)
        src = "random"
    mean, std = data.channel_stats(x)
    xs = data.BatchIterator(x, y, 64, seed=0, mean=mean, std=std)
    batches = list(xs.epoch(0))
    return batches, src


def convcore_epoch(model, opt, crit, batches):
    model.train()
    for x, y in batches:
        logits = model(x)
        crit(logits, y)
        opt.zero_grad()
        model.backward(crit.backward())
        opt.step()


def torch_model(cc_model):
    import torch
    from torch import nn
    m = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    src = [np.asarray(p.data) for _, p in cc_model.named_parameters()]
    dst = list(m.parameters())
    if [tuple(a.shape) for a in src] != [tuple(p.shape) for p in dst]:
        raise SystemExit("the torch twin's parameter shapes differ from convcore's lenet5: "
                         f"{[a.shape for a in src]}")
    with torch.no_grad():
        for p, a in zip(dst, src):
            p.copy_(torch.from_numpy(a.copy()))
    return m


def torch_epoch(model, opt, batches):
    import torch
    f = torch.nn.functional
    model.train()
    for x, y in batches:
        opt.zero_grad()
        loss = f.cross_entropy(model(x), y)
        loss.backward()
        opt.step()


def profile_epoch(model, opt, crit, batches, top=25):
    pr = cProfile.Profile()
    pr.enable()
    convcore_epoch(model, opt, crit, batches)
    pr.disable()
    st = pstats.Stats(pr)
    total = st.total_tt
    rows = []
    for (fname, line, func), (cc_, nc, tt, ct, callers) in st.stats.items():
        rows.append((tt, ct, nc, f"{os.path.basename(fname)}:{line}({func})"))
    rows.sort(reverse=True)
    print(f"\nprofile of one convcore epoch ({total:.2f} s; self time, cumulative, calls):")
    for tt, ct, nc, name in rows[:top]:
        print(f"  {tt:7.3f} s {100 * tt / total:5.1f}%  cum {ct:7.3f} s  {nc:7d}  {name}")
    return [{"self_s": tt, "cum_s": ct, "calls": nc, "where": name} for tt, ct, nc, name in
            rows[:top]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="NumPy BLAS threads for convcore's linear layers")
    ap.add_argument("--images", type=int, default=60000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--model", default="lenet5", help="convcore model (module:function accepted)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "train.json"))
    args = ap.parse_args()
    cc.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits
    threadpool_limits(args.blas_threads, user_api="blas")   # as convcore train does
    batches, src = load(args.images)
    n = sum(len(y) for _, y in batches)

    model = build_model(args.model, 1, 10, 28, seed=0)
    skip_first_input_grad(model)   # as `convcore train` does; torch skips it too
    opt = optim.SGD(list(model.parameters()), lr=0.01, momentum=0.9)
    crit = losses.CrossEntropyLoss()
    peers = {"convcore": lambda: convcore_epoch(model, opt, crit, batches)}
    if not args.no_torch:
        import torch
        torch.set_num_threads(args.threads)
        tm = torch_model(model)
        topt = torch.optim.SGD(tm.parameters(), lr=0.01, momentum=0.9)
        tb = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]
        peers["torch"] = lambda: torch_epoch(tm, topt, tb)
    times = {k: [] for k in peers}
    print(f"LeNet-5, {n} {src} images, batch 64, SGD momentum 0.9, {args.threads} threads")
    for rep in range(args.reps):
        for name, fn in peers.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            print(f"  rep {rep + 1} {name:9s} {times[name][-1]:7.2f} s", flush=True)
    res = {k: {"median_s": statistics.median(v), "times_s": v,
               "images_per_s": n / statistics.median(v)} for k, v in times.items()}
    if "torch" in res:
        res["torch"]["ratio_vs_convcore"] = statistics.median(
            t / c for t, c in zip(times["torch"], times["convcore"]))
    print(f"\n{'peer':10s} {'s/epoch':>8s} {'img/s':>8s} {'torch/convcore':>15s}")
    for k, v in res.items():
        r = v.get("ratio_vs_convcore")
        print(f"{k:10s} {v['median_s']:8.2f} {v['images_per_s']:8.0f} "
              f"{'' if r is None else f'{r:15.2f}'}")
    payload = {"environment": environment(args.threads), "images": n, "data": src,
               "results": res}
    if args.profile:
        payload["profile"] = profile_epoch(model, opt, crit, batches)
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
