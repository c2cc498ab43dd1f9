"""Data-parallel scaling on one machine: 1 rank x T threads vs T ranks x 1 thread.

For each network, alternates jobs of three configurations (1 rank x T
threads, T ranks x 1 thread, and 1 rank x 1 thread as the baseline; A B C A B C
..., ``--pairs`` times), each job training ``--steps`` timed steps of SGD on a
synthetic batch of global size ``--batch`` after ``--warmup`` steps, and
reports images/s (median over jobs), the median of the per-pair speed ratios,
and the share of a step spent in the gradient allreduce: as measured inside
training (it includes waiting for the slower rank) and for the allreduce alone
after a barrier.  Timings are reported, never asserted.

    pip install ".[mpi]"
    python benchmarks/bench_distributed.py --json dist.json

The networks come from ``convcore.models`` when it exists; otherwise the
script builds the same layer stacks itself from ``convcore.conv2d`` and NumPy
(``"impl"`` in the JSON says which).
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _runner  # noqa: E402

# VGG-11 (configuration 'A' of the notes' table) for 32x32 CIFAR-sized input,
# with a 512 -> 10 classifier.
VGG_A = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


# ---------------------------------------------------------------------------
# Stand-alone layers (used when convcore.nn / convcore.models are absent)
# ---------------------------------------------------------------------------

class _P:
    def __init__(self, data):
        self.data = data
        self.grad = np.zeros_like(data)


class _Conv:
    def __init__(self, rng, cin, cout, k, pad):
        std = np.sqrt(2.0 / (cin * k * k))
        self.w = _P((rng.standard_normal((cout, cin, k, k)) * std).astype(np.float32))
        self.b = _P(np.zeros(cout, np.float32))
        self.pad = pad

    def params(self):
        return [self.w, self.b]

    def forward(self, x):
        import convcore as cc
        self.x = x
        return cc.conv2d(x, self.w.data, self.b.data, padding=self.pad)

    def backward(self, g):
        import convcore as cc
        gx, gw, gb = cc.conv2d_backward(g, self.x, self.w.data, padding=self.pad)
        self.w.grad += gw
        self.b.grad += gb
        return gx


class _ReLU:
    def params(self):
        return []

    def forward(self, x):
        self.m = x > 0
        return x * self.m

    def backward(self, g):
        return g * self.m


class _MaxPool2:
    def params(self):
        return []

    def forward(self, x):
        N, C, H, W = x.shape
        v = x.reshape(N, C, H // 2, 2, W // 2, 2)
        y = v.max(axis=(3, 5))
        self.shape = x.shape
        self.mask = v == y[:, :, :, None, :, None]
        return y

    def backward(self, g):
        return (self.mask * g[:, :, :, None, :, None]).reshape(self.shape)


class _Linear:
    def __init__(self, rng, fin, fout):
        self.w = _P((rng.standard_normal((fout, fin)) * np.sqrt(2.0 / fin)).astype(np.float32))
        self.b = _P(np.zeros(fout, np.float32))

    def params(self):
        return [self.w, self.b]

    def forward(self, x):
        self.shape = x.shape
        self.x = x.reshape(len(x), -1)
        return self.x @ self.w.data.T + self.b.data

    def backward(self, g):
        self.w.grad += g.T @ self.x
        self.b.grad += g.sum(axis=0)
        return (g @ self.w.data).reshape(self.shape)


class _Seq:
    def __init__(self, layers):
        self.layers = layers

    def parameters(self):
        return [p for l in self.layers for p in l.params()]

    def zero_grad(self):
        for p in self.parameters():
            p.grad[...] = 0

    def forward(self, x):
        for l in self.layers:
            x = l.forward(x)
        return x

    def backward(self, g):
        for l in reversed(self.layers):
            g = l.backward(g)
        return g

    __call__ = forward


def _standalone(name, rng):
    if name == "lenet5":
        return _Seq([_Conv(rng, 1, 6, 5, 2), _ReLU(), _MaxPool2(),
                     _Conv(rng, 6, 16, 5, 0), _ReLU(), _MaxPool2(),
                     _Linear(rng, 400, 120), _ReLU(), _Linear(rng, 120, 84), _ReLU(),
                     _Linear(rng, 84, 10)]), (1, 28, 28)
    layers, c = [], 3
    for v in VGG_A:
        if v == "M":
            layers.append(_MaxPool2())
        else:
            layers += [_Conv(rng, c, v, 3, 1), _ReLU()]
            c = v
    layers.append(_Linear(rng, 512, 10))
    return _Seq(layers), (3, 32, 32)


def build(name, seed=0):
    """(model, input shape, impl) for ``lenet5`` or ``vgg11-cifar``."""
    rng = np.random.default_rng(seed)
    try:
        import convcore.models as models   # noqa: F401
        import convcore.nn as nn
    except ImportError:
        model, shape = _standalone(name, rng)
        return model, shape, "standalone"
    if name == "lenet5":
        return models.lenet5(), (1, 28, 28), "convcore.models"
    layers, c = [], 3
    for v in VGG_A:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
            c = v
    layers += [nn.Flatten(), nn.Linear(512, 10)]
    return nn.Sequential(*layers), (3, 32, 32), "convcore.nn"


# ---------------------------------------------------------------------------
# One job (each rank runs this)
# ---------------------------------------------------------------------------

def worker(args):
    import convcore as cc
    import convcore.distributed as dist
    dist.init()
    r, w = dist.rank(), dist.world_size()
    cc.set_num_threads(args.threads)
    model, shape, impl = build(args.model)
    dist.broadcast_parameters(model)
    a, b = dist.shard_bounds(args.batch)
    rng = np.random.default_rng(1 + r)
    x = rng.standard_normal((b - a, *shape)).astype(np.float32)
    y = rng.integers(0, 10, b - a)
    params = list(model.parameters())
    step_t, comm_t = [], []
    for i in range(args.warmup + args.steps):
        dist.barrier()
        t0 = time.perf_counter()
        model.zero_grad()
        logits = model.forward(x)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        model.backward((p / len(y)).astype(np.float32))
        t1 = time.perf_counter()
        dist.allreduce_gradients(model, local_batch=len(y))
        t2 = time.perf_counter()
        for q in params:
            q.data -= 0.01 * q.grad
        t3 = time.perf_counter()
        if i >= args.warmup:
            step_t.append(t3 - t0)
            comm_t.append(t2 - t1)
    # The allreduce alone, all ranks lined up by a barrier first.
    pure = []
    for _ in range(5):
        dist.barrier()
        t0 = time.perf_counter()
        dist.allreduce_gradients(model, local_batch=len(y))
        pure.append(time.perf_counter() - t0)
    if r == 0:
        nparams = sum(q.data.size for q in params)
        print("RESULT " + json.dumps({
            "ranks": w, "threads": args.threads, "impl": impl, "params": int(nparams),
            "step_s": statistics.median(step_t), "allreduce_s": statistics.median(comm_t),
            "allreduce_alone_s": statistics.median(pure),
            "images_per_s": args.batch / statistics.median(step_t)}), flush=True)


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------

def _mpiexec():
    cand = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return cand if os.access(cand, os.X_OK) else shutil.which("mpiexec")


def run_job(model, ranks, threads, args):
    # convcore's kernels get the threads; NumPy's BLAS (the small linear layers)
    # stays at one thread, as in `convcore train` (--blas-threads 1).
    # Nothing else of the caller's OpenMP or convcore tuning reaches the job.
    env = dict(_runner.child_env(), CONVCORE_NUM_THREADS=str(threads),
               OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(HERE), env.get("PYTHONPATH")]))
    cmd = [_mpiexec(), "-n", str(ranks), sys.executable, os.path.abspath(__file__), "--worker",
           "--model", model, "--threads", str(threads), "--batch", str(args.batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"job failed: {' '.join(cmd)}\n{out.stdout}\n{out.stderr}")
    line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[7:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="all", choices=["all", "lenet5", "vgg11-cifar"])
    ap.add_argument("--threads", type=int, default=2, help="cores to share (T)")
    ap.add_argument("--batch", type=int, default=0, help="global batch (default 64 / 32)")
    ap.add_argument("--steps", type=int, default=0, help="timed steps per job")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if _mpiexec() is None:
        sys.exit('needs mpiexec: pip install "convcore[mpi]"')
    T = args.threads
    results = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "loadavg_at_start": os.getloadavg(),
               "python": platform.python_version(), "numpy": np.__version__, "cases": []}
    models = ["lenet5", "vgg11-cifar"] if args.model == "all" else [args.model]
    print(f"{'network':<12} {'config':<18} {'img/s':>8} {'step ms':>9} "
          f"{'allreduce ms':>13} {'share':>6} {'alone ms':>9} {'alone share':>11}")
    for m in models:
        a = argparse.Namespace(**vars(args))
        a.batch = args.batch or (64 if m == "lenet5" else 32)
        a.steps = args.steps or (30 if m == "lenet5" else 6)
        runs = {"1x%d" % T: [], "%dx1" % T: [], "1x1": []}
        for _ in range(args.pairs):
            runs["1x%d" % T].append(run_job(m, 1, T, a))
            runs["%dx1" % T].append(run_job(m, T, 1, a))
            runs["1x1"].append(run_job(m, 1, 1, a))
        ratios = [b["images_per_s"] / a_["images_per_s"]
                  for a_, b in zip(runs["1x%d" % T], runs["%dx1" % T])]
        ratios1 = [b["images_per_s"] / a_["images_per_s"]
                   for a_, b in zip(runs["1x1"], runs["%dx1" % T])]
        for cfg, rs in runs.items():
            med = lambda k: statistics.median(r[k] for r in rs)   # noqa: E731
            row = {"network": m, "config": f"{cfg[0]} rank(s) x {cfg[-1]} thread(s)",
                   "ranks": rs[0]["ranks"], "threads": rs[0]["threads"], "impl": rs[0]["impl"],
                   "params": rs[0]["params"], "batch": a.batch,
                   "images_per_s": med("images_per_s"), "step_s": med("step_s"),
                   "allreduce_s": med("allreduce_s"), "allreduce_alone_s": med("allreduce_alone_s"),
                   "jobs": rs}
            row["allreduce_share"] = row["allreduce_s"] / row["step_s"]
            row["allreduce_alone_share"] = row["allreduce_alone_s"] / row["step_s"]
            results["cases"].append(row)
            print(f"{m:<12} {row['config']:<18} {row['images_per_s']:8.1f} "
                  f"{1e3 * row['step_s']:9.1f} {1e3 * row['allreduce_s']:13.2f} "
                  f"{100 * row['allreduce_share']:5.1f}% {1e3 * row['allreduce_alone_s']:9.2f} "
                  f"{100 * row['allreduce_alone_share']:10.1f}%")
        results["cases"][-1]["median_ratio_vs_1_rank"] = statistics.median(ratios)
        results["cases"][-1]["median_ratio_vs_1_rank_1_thread"] = statistics.median(ratios1)
        print(f"{m:<12} {T} ranks x 1 thread vs 1 rank x {T} threads, median of per-job "
              f"ratios: {statistics.median(ratios):.2f}x; vs 1 rank x 1 thread: "
              f"{statistics.median(ratios1):.2f}x")
    results["loadavg_at_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
