"""Convolution layers of the notes' networks: convcore vs PyTorch CPU vs NumPy.

    python benchmarks/bench_conv.py [--threads 2] [--reps 7] [--only NAME ...]

Prints a table (median time, GFLOP/s, ratio peer/convcore; > 1 means convcore
is faster) and writes benchmarks/results/conv.json.  Reported, never asserted.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import environment, geomean, interleaved, machine_limits, write_json  # noqa: E402

import convcore as cc  # noqa: E402

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


def numpy_conv(x, w, s, p):
    """The floor: what any user could write with NumPy (groups=1)."""
    N, C, H, W = x.shape
    K, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    OH, OW = win.shape[2], win.shape[3]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(N, OH * OW, C * k * k)
    y = cols @ w.reshape(K, -1).T
    return y.transpose(0, 2, 1).reshape(N, K, OH, OW), cols


def numpy_conv_fwd_bwd(x, w, s, p, gy):
    N, C, H, W = x.shape
    K, _, k, _ = w.shape
    y, cols = numpy_conv(x, w, s, p)
    g = gy.reshape(N, K, -1)
    gw = np.einsum("nkl,nlj->kj", g, cols).reshape(w.shape)
    gcols = (w.reshape(K, -1).T @ g)  # (N, CKK, L)
    OH, OW = y.shape[2], y.shape[3]
    gcols = gcols.reshape(N, C, k, k, OH, OW)
    gxp = np.zeros((N, C, H + 2 * p, W + 2 * p), x.dtype)
    for a in range(k):
        for b in range(k):
            gxp[:, :, a:a + s * OH:s, b:b + s * OW:s] += gcols[:, :, a, b]
    return y, gxp[:, :, p:p + H, p:p + W], gw


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--only", nargs="*", help="layer names to run")
    ap.add_argument("--no-numpy", action="store_true", help="skip the NumPy floor")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "conv.json"))
    args = ap.parse_args(argv)

    cc.set_num_threads(args.threads)
    try:
        import torch
        torch.set_num_threads(args.threads)
        F = torch.nn.functional
    except ImportError:
        torch = None
        print("torch not installed: PyTorch columns skipped (pip install '.[bench]')")
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)
    except ImportError:
        pass

    limits = machine_limits(args.threads)
    # (the sgemm probe leaves NumPy's BLAS threads spinning for a while:
    # let them sleep before the first layer is timed)
    time.sleep(1.0)
    print(f"machine: sgemm 2048^3 {limits['sgemm_2048_gflops']:.0f} GFLOP/s, "
          f"copy {limits['copy_gbs']:.1f} GB/s, threads {args.threads}")
    rng = np.random.default_rng(0)
    rows = []
    head = (f"{'layer':10s} {'pass':7s} {'convcore ms':>11s} {'GF/s':>6s} {'torch ms':>9s} "
            f"{'GF/s':>6s} {'torch/cc':>8s} {'numpy/cc':>8s}")
    print(head)
    print("-" * len(head))
    for name, N, C, H, K, k, s, p, g in LAYERS:
        if args.only and name not in args.only:
            continue
        x = rng.standard_normal((N, C, H, H)).astype(np.float32)
        w = (rng.standard_normal((K, C // g, k, k)) * 0.05).astype(np.float32)
        b = rng.standard_normal(K).astype(np.float32)
        y = cc.conv2d(x, w, b, s, p, 1, g)
        gy = rng.standard_normal(y.shape).astype(np.float32)
        flops = 2.0 * N * K * y.shape[2] * y.shape[3] * (C // g) * k * k
        for pass_ in ("fwd", "fwd+bwd"):
            fns = {}
            if pass_ == "fwd":
                fns["convcore"] = lambda: cc.conv2d(x, w, b, s, p, 1, g)
            else:
                def cc_fb():
                    cc.conv2d(x, w, b, s, p, 1, g)
                    cc.conv2d_backward(gy, x, w, s, p, 1, g)
                fns["convcore"] = cc_fb
            if torch is not None:
                tx = torch.from_numpy(x)
                tw = torch.from_numpy(w)
                tb = torch.from_numpy(b)
                tgy = torch.from_numpy(gy)
                if pass_ == "fwd":
                    def t_f():
                        with torch.no_grad():
                            F.conv2d(tx, tw, tb, s, p, 1, g)
                    fns["torch"] = t_f
                else:
                    txg = tx.clone().requires_grad_(True)
                    twg = tw.clone().requires_grad_(True)
                    tbg = tb.clone().requires_grad_(True)

                    def t_fb():
                        out = F.conv2d(txg, twg, tbg, s, p, 1, g)
                        torch.autograd.grad(out, (txg, twg, tbg), tgy)
                    fns["torch"] = t_fb
            res = interleaved(fns, reps=args.reps)
            if not args.no_numpy and g == 1:
                # The NumPy floor gets its own interleaved pass: OpenBLAS's
                # threads keep spinning after each call and would slow down
                # whichever peer ran next in a three-way rotation.
                floor = (lambda: numpy_conv(x, w, s, p)) if pass_ == "fwd" else \
                    (lambda: numpy_conv_fwd_bwd(x, w, s, p, gy))
                res["numpy"] = interleaved({"convcore": fns["convcore"], "numpy": floor},
                                           reps=args.reps)["numpy"]
                time.sleep(1.0)   # (and must not slow down the next pass either)
            f = flops * (1 if pass_ == "fwd" else 3)
            row = {"layer": name, "pass": pass_, "shape": [N, C, H, H, K, k, s, p, g],
                   "gflop": f / 1e9}
            for impl, r in res.items():
                row[impl] = dict(r, gflops=f / r["median_s"] / 1e9)
            rows.append(row)
            t = row.get("torch", {})
            npy = row.get("numpy", {})
            print(f"{name:10s} {pass_:7s} {row['convcore']['median_s'] * 1e3:11.2f} "
                  f"{row['convcore']['gflops']:6.1f} "
                  f"{t.get('median_s', float('nan')) * 1e3:9.2f} {t.get('gflops', float('nan')):6.1f} "
                  f"{t.get('ratio_vs_convcore', float('nan')):8.2f} "
                  f"{npy.get('ratio_vs_convcore', float('nan')):8.2f}", flush=True)

    # per-call overhead on a tiny input: users embed conv2d in their own loops
    xt = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
    wt = rng.standard_normal((1, 1, 3, 3)).astype(np.float32)
    fns = {"convcore": lambda: cc.conv2d(xt, wt)}
    if torch is not None:
        txt, twt = torch.from_numpy(xt), torch.from_numpy(wt)

        def t_tiny():
            with torch.no_grad():
                F.conv2d(txt, twt)
        fns["torch"] = t_tiny
    tiny = interleaved(fns, reps=args.reps)
    print(f"\ntiny 1x1x8x8 (3x3) per call: convcore {tiny['convcore']['median_s'] * 1e6:.1f} us"
          + (f", torch {tiny['torch']['median_s'] * 1e6:.1f} us "
             f"(ratio {tiny['torch']['ratio_vs_convcore']:.2f})" if torch is not None else ""))

    summary = {}
    if torch is not None:
        for pass_ in ("fwd", "fwd+bwd"):
            ratios = [r["torch"]["ratio_vs_convcore"] for r in rows if r["pass"] == pass_]
            summary[pass_] = {"geomean_torch_over_convcore": geomean(ratios),
                              "min_ratio": min(ratios) if ratios else None}
            print(f"{pass_}: geometric mean torch/convcore = {summary[pass_]['geomean_torch_over_convcore']:.2f}, "
                  f"lowest {summary[pass_]['min_ratio']:.2f}")
    write_json(args.out, {"benchmark": "conv", "environment": environment(args.threads),
                          "limits": limits, "layers": rows, "tiny": tiny, "summary": summary})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
