"""Batch norm and ReLU: the C core against the NumPy expressions it replaced.

The activations of ``models.cnn_bn_wide`` at batch 128 on 28x28 input
((128, 32, 28, 28), (128, 64, 14, 14), (128, 128, 7, 7), float32), batch norm
in training mode and ReLU, forward and backward; the NumPy version (single
threaded) against the C core on 1 and 2 threads, measured interleaved in one
process (see BENCHMARKS.md).  With ``--step`` also one training step of
``cnn_bn_wide`` (forward, loss, backward, SGD update) with the NumPy and the C
versions of these two ops.  Prints a table and writes
benchmarks/results/norm.json.  Timings are reported, never asserted.

    python benchmarks/bench_norm.py [--reps 5] [--step | --step-only] [--dtype float32]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import convcore as cc  # noqa: E402
from convcore import optim  # noqa: E402
from convcore._ops import layers as L  # noqa: E402
from benchmarks._common import environment, write_json  # noqa: E402

SHAPES = [(128, 32, 28, 28), (128, 64, 14, 14), (128, 128, 7, 7)]


def _numpy_ops(x, g, w, b):
    """The NumPy expressions (the path CuPy arrays still take)."""
    axes, bshape = L._bn_check(x, None, None, w, b, 1e-5)
    return {
        "bn fwd": lambda: L._batch_norm_xp(x, axes, bshape, None, None, w, b, True, 0.1,
                                           1e-5),
        "bn bwd": lambda: L._batch_norm_backward_xp(g, x, axes, bshape, None, None, w, True,
                                                    1e-5),
        "relu fwd": lambda: L._relu_xp(np, x),
        "relu bwd": lambda: L._relu_backward_xp(np, g, x),
    }


def _c_ops(x, g, w, b):
    return {
        "bn fwd": lambda: cc.batch_norm(x, None, None, w, b, training=True),
        "bn bwd": lambda: cc.batch_norm_backward(g, x, None, None, w, training=True),
        "relu fwd": lambda: cc.relu(x),
        "relu bwd": lambda: cc.relu_backward(g, x),
    }


def _time(fn, min_time):
    fn()
    reps, t0 = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        t = time.perf_counter() - t0
        if t >= min_time:
            return t / reps


def _with_threads(fn, n):
    def run():
        old = cc.get_num_threads()
        cc.set_num_threads(n)
        try:
            fn()
        finally:
            cc.set_num_threads(old)
    return run


def interleaved(fns, reps, min_time):
    """Median seconds of each variant, measured A B C A B C ...; the median of
    the per-round ratios first / other (> 1: the other is faster)."""
    times = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(reps):
        for k, f in fns.items():
            times[k].append(_time(f, min_time))
    first = next(iter(fns))
    out = {}
    for k in fns:
        out[k] = {"median_ms": 1e3 * statistics.median(times[k]),
                  "speedup_vs_numpy": statistics.median(
                      a / b for a, b in zip(times[first], times[k]))}
    return out


def bench_ops(dtype, reps, min_time):
    rng = np.random.default_rng(0)
    results = []
    for shape in SHAPES:
        C = shape[1]
        x = rng.standard_normal(shape).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        w = (rng.random(C) + 0.5).astype(dtype)
        b = rng.standard_normal(C).astype(dtype)
        npo, co = _numpy_ops(x, g, w, b), _c_ops(x, g, w, b)
        for op in npo:
            r = interleaved({"numpy": npo[op], "C 1 thread": _with_threads(co[op], 1),
                             "C 2 threads": _with_threads(co[op], 2)}, reps, min_time)
            results.append({"op": op, "shape": list(shape), "dtype": np.dtype(dtype).name,
                            **{k: v for k, v in r.items()}})
            print(f"{op:9s} {str(shape):18s} " + "  ".join(
                f"{k} {v['median_ms']:7.2f} ms ({v['speedup_vs_numpy']:4.1f}x)"
                for k, v in r.items()), flush=True)
    return results


def bench_step(dtype, reps, threads):
    """One SGD step of cnn_bn_wide at batch 128, NumPy vs C batch norm and ReLU."""
    rng = np.random.default_rng(0)
    x = rng.random((128, 1, 28, 28)).astype(dtype)
    t = rng.integers(0, 10, 128)
    net = cc.models.cnn_bn_wide(rng=0, dtype=dtype)
    opt = optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    real = L._c_core

    def step():
        net.zero_grad()
        logits = net(x)
        net.backward(cc.cross_entropy_backward(logits, t))
        opt.step()

    def numpy_step():
        L._c_core = lambda be, *a: False
        try:
            step()
        finally:
            L._c_core = real

    cc.set_num_threads(threads)
    r = interleaved({"numpy": numpy_step, "C": step}, reps, 0.0)
    print(f"training step, {threads} thread(s): numpy bn/relu {r['numpy']['median_ms']:.0f} ms, "
          f"C bn/relu {r['C']['median_ms']:.0f} ms ({r['C']['speedup_vs_numpy']:.2f}x)",
          flush=True)
    return {"threads": threads, **r}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.02)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--step", action="store_true", help="also time one training step")
    ap.add_argument("--step-only", action="store_true", help="only the training step")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "norm.json"))
    args = ap.parse_args()
    dtype = np.dtype(args.dtype).type
    res = {"env": environment(cc.get_num_threads())}
    if not args.step_only:
        res["ops"] = bench_ops(dtype, args.reps, args.min_time)
    if args.step or args.step_only:
        res["step"] = [bench_step(dtype, args.reps, n) for n in (1, 2)]
    write_json(args.out, res)


if __name__ == "__main__":
    main()
