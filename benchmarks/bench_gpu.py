"""convcore's CUDA path against PyTorch with cuDNN on the same GPU.

The fixed layer and pooling sets, forward and forward+backward,
timed with CUDA events, interleaved (convcore, torch, convcore, torch, ...),
reporting the median time of each and the median of the per-pair ratios
(torch / convcore: > 1 means convcore is faster), GFLOP/s for convolutions
and GB/s for pooling, and a large cuBLAS sgemm and a device copy measured in
the same run as the limits.  TF32 is off on both sides.

Needs CuPy and a CUDA build of PyTorch (``pip install ".[cuda]"`` and a torch
wheel for your CUDA); without torch's CUDA build, only convcore is timed.

    python benchmarks/bench_gpu.py [--reps 9] [--only lenet.c1,pool.max2] [--json out.json]
    python benchmarks/bench_gpu.py --quick     # smoke run: three cases, 3 repetitions

On a GPU the two libraries share one process: CUDA events time the device,
where the host thread pools that make the CPU benchmarks run each library
alone do not compete.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import convcore as cc  # noqa: E402

# name, N, C, H, W, K, kernel, stride, pad, groups  (bench_conv.py's fixed layer set)
LAYERS = [
    ("lenet.c1", 64, 1, 28, 28, 6, 5, 1, 2, 1),
    ("lenet.c2", 64, 6, 14, 14, 16, 5, 1, 0, 1),
    ("alex.c1", 8, 3, 227, 227, 96, 11, 4, 0, 1),
    ("alex.c2", 8, 96, 27, 27, 256, 5, 1, 2, 1),
    ("alex.c3", 8, 256, 13, 13, 384, 3, 1, 1, 1),
    ("vgg.c1_1", 2, 3, 224, 224, 64, 3, 1, 1, 1),
    ("vgg.c2_2", 1, 128, 112, 112, 128, 3, 1, 1, 1),
    ("vgg.c3_2", 2, 256, 56, 56, 256, 3, 1, 1, 1),
    ("vgg.c5_2", 8, 512, 14, 14, 512, 3, 1, 1, 1),
    ("cifar.64", 32, 64, 32, 32, 64, 3, 1, 1, 1),
    ("res.1x1", 8, 256, 56, 56, 64, 1, 1, 0, 1),
    ("res.down", 8, 128, 56, 56, 256, 3, 2, 1, 1),
    ("mobile.dw", 8, 256, 28, 28, 256, 3, 1, 1, 256),
]
# name, kind, shape, kernel, stride
POOLS = [
    ("pool.max2", "max", (16, 64, 112, 112), 2, 2),
    ("pool.max3", "max", (8, 96, 55, 55), 3, 2),
    ("pool.avg2", "avg", (16, 64, 112, 112), 2, 2),
    ("pool.gap", "gap", (32, 512, 7, 7), None, None),
]


def event_timer(cp):
    """fn -> seconds of GPU time for one call, measured with CUDA events on
    the legacy default stream (which both CuPy and PyTorch use here)."""
    start, stop = cp.cuda.Event(), cp.cuda.Event()

    def time_it(fn):
        cp.cuda.Device().synchronize()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        return cp.cuda.get_elapsed_time(start, stop) / 1e3
    return time_it


def interleaved(timer, ours, peer, reps, warmup=3):
    for _ in range(warmup):
        ours()
        if peer is not None:
            peer()
    a, b, ratios = [], [], []
    for _ in range(reps):
        ta = timer(ours)
        a.append(ta)
        if peer is not None:
            tb = timer(peer)
            b.append(tb)
            ratios.append(tb / ta)
    return (statistics.median(a), statistics.median(b) if b else None,
            statistics.median(ratios) if ratios else None)


def limits(cp, timer):
    n = 4096
    a = cp.random.standard_normal((n, n), dtype=cp.float32)
    bm = cp.random.standard_normal((n, n), dtype=cp.float32)
    t = min(timer(lambda: cp.matmul(a, bm)) for _ in range(5))
    src = cp.empty(256 * 2**20 // 4, dtype=cp.float32)
    dst = cp.empty_like(src)
    tc = min(timer(lambda: cp.copyto(dst, src)) for _ in range(5))
    return {"sgemm_gflops": 2 * n**3 / t / 1e9, "copy_gbs": 2 * src.nbytes / tc / 1e9}


def bench_layers(cp, torch, timer, reps, only):
    rows = []
    rng = np.random.default_rng(0)
    for name, N, C, H, W, K, k, s, p, g in LAYERS:
        if only and name not in only:
            continue
        x = rng.standard_normal((N, C, H, W)).astype(np.float32)
        w = (rng.standard_normal((K, C // g, k, k)) / math.sqrt(C // g * k * k)).astype(np.float32)
        b = rng.standard_normal(K).astype(np.float32)
        xd, wd, bd = cp.asarray(x), cp.asarray(w), cp.asarray(b)
        kw = dict(stride=s, padding=p, groups=g)
        y = cc.conv2d(xd, wd, bd, **kw)
        dy = cp.asarray(rng.standard_normal(y.shape).astype(np.float32))
        OH, OW = y.shape[2:]
        flops = 2.0 * N * K * OH * OW * (C // g) * k * k

        def ours_f():
            cc.conv2d(xd, wd, bd, **kw)

        def ours_fb():
            cc.conv2d(xd, wd, bd, **kw)
            cc.conv2d_backward(dy, xd, wd, **kw)

        peer_f = peer_fb = None
        err = None
        if torch is not None:
            F = torch.nn.functional
            xt = torch.as_tensor(x, device="cuda").requires_grad_(True)
            wt = torch.as_tensor(w, device="cuda").requires_grad_(True)
            bt = torch.as_tensor(b, device="cuda").requires_grad_(True)
            dyt = torch.as_tensor(cp.asnumpy(dy), device="cuda")

            def peer_f():
                with torch.no_grad():
                    F.conv2d(xt, wt, bt, **kw)

            def peer_fb():
                xt.grad = wt.grad = bt.grad = None
                F.conv2d(xt, wt, bt, **kw).backward(dyt)

            with torch.no_grad():
                yt = F.conv2d(xt, wt, bt, **kw)
            err = float(np.abs(cp.asnumpy(y) - yt.cpu().numpy()).max())
        tf, tpf, rf = interleaved(timer, ours_f, peer_f, reps)
        tfb, tpfb, rfb = interleaved(timer, ours_fb, peer_fb, reps)
        rows.append(dict(name=name, fwd_ms=tf * 1e3, fwd_gflops=flops / tf / 1e9,
                         peer_fwd_ms=None if tpf is None else tpf * 1e3, fwd_ratio=rf,
                         fb_ms=tfb * 1e3, fb_gflops=3 * flops / tfb / 1e9,
                         peer_fb_ms=None if tpfb is None else tpfb * 1e3, fb_ratio=rfb,
                         max_abs_diff=err))
        print(_row(rows[-1]), flush=True)
    return rows


def bench_pools(cp, torch, timer, reps, only):
    rows = []
    if not hasattr(cc, "max_pool2d"):
        print("pooling: not in this build of convcore, skipped")
        return rows
    rng = np.random.default_rng(1)
    for name, kind, shape, k, s in POOLS:
        if only and name not in only:
            continue
        x = rng.standard_normal(shape).astype(np.float32)
        xd = cp.asarray(x)
        if kind == "max":
            y, idx = cc.max_pool2d(xd, k, s, return_indices=True)
            fwd = lambda: cc.max_pool2d(xd, k, s, return_indices=True)  # noqa: E731
            dy = cp.ones_like(y)
            bwd = lambda: cc.max_pool2d_backward(dy, idx, shape)  # noqa: E731
        elif kind == "avg":
            y = cc.avg_pool2d(xd, k, s)
            fwd = lambda: cc.avg_pool2d(xd, k, s)  # noqa: E731
            dy = cp.ones_like(y)
            bwd = lambda: cc.avg_pool2d_backward(dy, shape, k, s)  # noqa: E731
        else:
            y = cc.adaptive_avg_pool2d(xd, 1)
            fwd = lambda: cc.adaptive_avg_pool2d(xd, 1)  # noqa: E731
            dy = cp.ones_like(y)
            bwd = lambda: cc.adaptive_avg_pool2d_backward(dy, shape)  # noqa: E731

        def ours_fb(fwd=fwd, bwd=bwd):
            fwd()
            bwd()

        peer_f = peer_fb = None
        if torch is not None:
            F = torch.nn.functional
            xt = torch.as_tensor(x, device="cuda").requires_grad_(True)
            dyt = torch.ones(tuple(y.shape), device="cuda")
            if kind == "max":
                op = lambda t: F.max_pool2d(t, k, s, return_indices=True)[0]  # noqa: E731
            elif kind == "avg":
                op = lambda t: F.avg_pool2d(t, k, s)  # noqa: E731
            else:
                op = lambda t: F.adaptive_avg_pool2d(t, 1)  # noqa: E731

            def peer_f(op=op):
                with torch.no_grad():
                    op(xt)

            def peer_fb(op=op):
                xt.grad = None
                op(xt).backward(dyt)
        moved = (x.nbytes + int(np.prod(y.shape)) * 4
                 + (int(np.prod(y.shape)) * 8 if kind == "max" else 0))
        tf, tpf, rf = interleaved(timer, fwd, peer_f, reps)
        tfb, tpfb, rfb = interleaved(timer, ours_fb, peer_fb, reps)
        rows.append(dict(name=name, fwd_ms=tf * 1e3, fwd_gbs=moved / tf / 1e9,
                         peer_fwd_ms=None if tpf is None else tpf * 1e3, fwd_ratio=rf,
                         fb_ms=tfb * 1e3, peer_fb_ms=None if tpfb is None else tpfb * 1e3,
                         fb_ratio=rfb))
        print(_row(rows[-1]), flush=True)
    return rows


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def _row(r):
    rate = (f"{r['fwd_gflops']:8.1f} GF/s" if "fwd_gflops" in r
            else f"{r['fwd_gbs']:8.1f} GB/s")
    return (f"{r['name']:<11} fwd {r['fwd_ms']:8.3f} ms {rate}  torch {_fmt(r['peer_fwd_ms'], '8.3f')}"
            f" ms  ratio {_fmt(r['fwd_ratio'], '5.2f')} | fwd+bwd {r['fb_ms']:8.3f} ms  torch "
            f"{_fmt(r['peer_fb_ms'], '8.3f')} ms  ratio {_fmt(r['fb_ratio'], '5.2f')}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--only", default="", help="comma-separated case names")
    ap.add_argument("--json", default="benchmarks/results/gpu.json")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: lenet.c1, vgg.c1_1 and pool.max2, 3 repetitions")
    args = ap.parse_args(argv)
    if args.quick:
        args.reps = 3
        args.only = args.only or "lenet.c1,vgg.c1_1,pool.max2"
    elif args.reps < 7:
        ap.error("--reps must be >= 7 (the benchmark protocol, docs/contributing.rst)")
    from convcore.backends import cuda
    if not cuda.is_available():
        print("bench_gpu: needs CuPy and a CUDA device (pip install \"convcore[cuda]\")")
        return 2
    import cupy as cp
    try:
        import torch
        if not torch.cuda.is_available():
            print("bench_gpu: torch has no CUDA here; timing convcore alone")
            torch = None
        else:
            torch.backends.cudnn.benchmark = True
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
    except ImportError:
        torch = None
    only = {s for s in args.only.split(",") if s}
    timer = event_timer(cp)
    dev = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    lim = limits(cp, timer)
    print(f"device {dev['name'].decode()}  sgemm {lim['sgemm_gflops']:.0f} GFLOP/s  "
          f"copy {lim['copy_gbs']:.0f} GB/s")
    t0 = time.time()
    layers = bench_layers(cp, torch, timer, args.reps, only)
    pools = bench_pools(cp, torch, timer, args.reps, only)

    def gmean(vals):
        vals = [v for v in vals if v]
        return math.exp(sum(map(math.log, vals)) / len(vals)) if vals else None
    summary = {"layers_fb_ratio_gmean": gmean(r["fb_ratio"] for r in layers),
               "pools_fwd_ratio_gmean": gmean(r["fwd_ratio"] for r in pools)}
    print("geometric means (torch / convcore):", summary)
    out = {"machine": platform.node(), "device": dev["name"].decode(),
           "versions": {"convcore": cc.__version__, "cupy": cp.__version__,
                        "torch": None if torch is None else torch.__version__},
           "limits": lim, "reps": args.reps, "smoke": bool(args.quick), "layers": layers, "pools": pools,
           "summary": summary, "seconds": time.time() - t0}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
