"""Pooling throughput: convcore against PyTorch CPU, interleaved.

The pooling cases of BENCHMARKS.md, forward and forward+backward, measured
A B A B ... in one process with the same inputs and thread count; reported as
median times, the median of the per-pair ratios (torch / convcore, > 1 means
convcore is faster) and GB/s moved (every array read or written once), next
to the machine's copy bandwidth (np.copyto of a large array) measured in the
same run.  Prints a table and writes benchmarks/results/pool.json.

    python benchmarks/bench_pool.py [--threads 2] [--reps 11] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import convcore as cc  # noqa: E402
from benchmarks._common import environment, write_json  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    sys.exit("bench_pool.py needs PyTorch: pip install '.[bench]'")

CASES = [
    # name, kind, shape, kernel, stride
    ("max 2x2/2", "max", (16, 64, 112, 112), 2, 2),
    ("max 3x3/2 (AlexNet)", "max", (8, 96, 55, 55), 3, 2),
    ("avg 2x2/2", "avg", (16, 64, 112, 112), 2, 2),
    ("global avg", "gap", (32, 512, 7, 7), None, None),
]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def once(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def copy_bandwidth(reps: int) -> float:
    """GB/s of np.copyto on 256 MiB (bytes read + bytes written)."""
    a = np.random.default_rng(0).random(32 * 2**20)
    b = np.empty_like(a)
    np.copyto(b, a)
    best = statistics.median(once(lambda: np.copyto(b, a)) for _ in range(reps))
    return 2 * a.nbytes / best / 1e9


def interleaved(fa, fb, reps: int, target: float = 0.02):
    """Median times of fa and fb and the median of per-pair ratios tb/ta.
    Each sample repeats the call enough times to last about `target` s."""
    for _ in range(2):
        fa()
        fb()
    single = min(once(fa), once(fb))
    inner = max(1, int(np.ceil(target / max(single, 1e-7))))

    def sample(f):
        t = time.perf_counter()
        for _ in range(inner):
            f()
        return (time.perf_counter() - t) / inner

    ta, tb, ratios = [], [], []
    for _ in range(reps):
        a = sample(fa)
        b = sample(fb)
        ta.append(a)
        tb.append(b)
        ratios.append(b / a)
    return statistics.median(ta), statistics.median(tb), statistics.median(ratios), inner


def make_case(kind, shape, k, s, rng):
    x = rng.standard_normal(shape, dtype=np.float32)
    tx = torch.from_numpy(x)
    aten = torch.ops.aten
    if kind == "max":
        y, idx = cc.max_pool2d(x, k, s, return_indices=True)
        g = rng.standard_normal(y.shape, dtype=np.float32)
        tg = torch.from_numpy(g)
        fwd_cc = lambda: cc.max_pool2d(x, k, s)                       # noqa: E731
        fwd_t = lambda: F.max_pool2d(tx, k, s)                        # noqa: E731

        def fb_cc():
            _, i = cc.max_pool2d(x, k, s, return_indices=True)
            return cc.max_pool2d_backward(g, i, x.shape)

        def fb_t():
            _, i = aten.max_pool2d_with_indices(tx, [k, k], [s, s], [0, 0], [1, 1], False)
            return aten.max_pool2d_with_indices_backward(tg, tx, [k, k], [s, s], [0, 0],
                                                         [1, 1], False, i)
        # forward: x read, y written; fwd+bwd: + idx written, dy and idx read, dx written
        fwd_bytes = x.nbytes + y.nbytes
        fb_bytes = x.nbytes + y.nbytes + idx.nbytes + g.nbytes + idx.nbytes + x.nbytes
        checks = [(cc.max_pool2d(x, k, s), F.max_pool2d(tx, k, s).numpy()),
                  (fb_cc(), fb_t().numpy())]
    elif kind == "avg":
        y = cc.avg_pool2d(x, k, s)
        g = rng.standard_normal(y.shape, dtype=np.float32)
        tg = torch.from_numpy(g)
        fwd_cc = lambda: cc.avg_pool2d(x, k, s)                       # noqa: E731
        fwd_t = lambda: F.avg_pool2d(tx, k, s)                        # noqa: E731

        def fb_cc():
            cc.avg_pool2d(x, k, s)
            return cc.avg_pool2d_backward(g, x.shape, k, s)

        def fb_t():
            aten.avg_pool2d(tx, [k, k], [s, s], [0, 0], False, True, None)
            return aten.avg_pool2d_backward(tg, tx, [k, k], [s, s], [0, 0], False, True, None)
        fwd_bytes = x.nbytes + y.nbytes
        fb_bytes = 2 * (x.nbytes + y.nbytes)
        checks = [(cc.avg_pool2d(x, k, s), F.avg_pool2d(tx, k, s).numpy()),
                  (fb_cc(), fb_t().numpy())]
    else:
        y = cc.adaptive_avg_pool2d(x, 1)
        g = rng.standard_normal(y.shape, dtype=np.float32)
        tg = torch.from_numpy(g)
        fwd_cc = lambda: cc.adaptive_avg_pool2d(x, 1)                 # noqa: E731
        fwd_t = lambda: F.adaptive_avg_pool2d(tx, 1)                  # noqa: E731

        def fb_cc():
            cc.adaptive_avg_pool2d(x, 1)
            return cc.adaptive_avg_pool2d_backward(g, x.shape)

        def fb_t():
            aten._adaptive_avg_pool2d(tx, [1, 1])
            return aten._adaptive_avg_pool2d_backward(tg, tx)
        fwd_bytes = x.nbytes + y.nbytes
        fb_bytes = 2 * (x.nbytes + y.nbytes)
        checks = [(cc.adaptive_avg_pool2d(x, 1), F.adaptive_avg_pool2d(tx, 1).numpy()),
                  (fb_cc(), fb_t().numpy())]
    for a, b in checks:   # same results, or the timings mean nothing
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    return [("forward", fwd_cc, fwd_t, fwd_bytes), ("fwd+bwd", fb_cc, fb_t, fb_bytes)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=11, help="interleaved pairs per case (>= 7)")
    ap.add_argument("--quick", action="store_true", help="3 pairs, for a smoke run")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "pool.json"))
    args = ap.parse_args(argv)
    reps = 3 if args.quick else max(7, args.reps)
    cc.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)

    copy_before = copy_bandwidth(reps)
    rows = []
    for name, kind, shape, k, s in CASES:
        for mode, fa, fb, nbytes in make_case(kind, shape, k, s, rng):
            ta, tb, ratio, inner = interleaved(fa, fb, reps)
            rows.append(dict(case=name, kind=kind, shape=list(shape), kernel=k, stride=s,
                             mode=mode, bytes=nbytes, convcore_ms=ta * 1e3, torch_ms=tb * 1e3,
                             ratio=ratio, convcore_gbs=nbytes / ta / 1e9,
                             torch_gbs=nbytes / tb / 1e9, calls_per_sample=inner))
    copy_after = copy_bandwidth(reps)
    copy = statistics.median([copy_before, copy_after])
    for r in rows:
        r["convcore_pct_of_copy"] = 100 * r["convcore_gbs"] / copy

    head = (f"{'case':<22}{'mode':<9}{'convcore ms':>12}{'torch ms':>10}{'ratio':>8}"
            f"{'cc GB/s':>9}{'torch GB/s':>11}{'% copy':>8}")
    print(f"convcore {cc.__version__}, torch {torch.__version__}, {args.threads} threads, "
          f"{reps} interleaved pairs; {cpu_name()}, {os.cpu_count()} CPUs")
    print(f"copy bandwidth (np.copyto, read+write): {copy:.1f} GB/s "
          f"(before {copy_before:.1f}, after {copy_after:.1f})")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['case']:<22}{r['mode']:<9}{r['convcore_ms']:>12.3f}{r['torch_ms']:>10.3f}"
              f"{r['ratio']:>7.1f}x{r['convcore_gbs']:>9.1f}{r['torch_gbs']:>11.1f}"
              f"{r['convcore_pct_of_copy']:>7.0f}%")
    result = dict(benchmark="pool", environment=environment(args.threads),
                  threads=args.threads, reps=reps, dtype="float32",
                  copy_gbs=copy, copy_gbs_before=copy_before, copy_gbs_after=copy_after,
                  ratio="torch time / convcore time, median of interleaved pairs",
                  cases=rows, time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
