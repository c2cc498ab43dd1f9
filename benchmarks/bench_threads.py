"""How convcore's thread team waits between calls, measured as a user runs it.

Each configuration of the OpenMP wait (how long a worker spins before it
sleeps) runs in its own fresh process that imports only convcore and NumPy,
alternating configurations for several rounds; each process warms up and
reports the median of its repetitions.  Cases:

- ``resnet18_b1``: ResNet-18 inference, batch 1, 224x224 -- back-to-back
  layers, every parallel region after a short pause;
- ``lenet_step``: a LeNet-5 training step at batch 64 in the user's own loop
  (forward, cross-entropy, backward, SGD with momentum);
- ``numpy_between``: a convolution, then the user's own NumPy work (a
  1024x1024 matmul on NumPy's BLAS threads) -- what a spinning team takes
  from the user's code between calls.

A configuration is the environment the process starts with (on top of the
protocol's clean one); ``default`` is convcore's own choice.  Reported,
never asserted.

    python benchmarks/bench_threads.py [--rounds 3] [--out results/threads.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import _runner

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = {
    "default": {},
    "spin 10k": {"GOMP_SPINCOUNT": "10000"},
    "spin 30k": {"GOMP_SPINCOUNT": "30000"},
    "spin 100k": {"GOMP_SPINCOUNT": "100000"},
    "spin 300k": {"GOMP_SPINCOUNT": "300000"},
    "spin 1M": {"GOMP_SPINCOUNT": "1000000"},
    "active": {"OMP_WAIT_POLICY": "active"},
    "passive": {"OMP_WAIT_POLICY": "passive"},
}
CASES = ("resnet18_b1", "lenet_step", "numpy_between")


def child(case, reps, threads):
    import numpy as np
    import convcore as cc
    cc.set_num_threads(threads)
    rng = np.random.default_rng(0)
    if case == "resnet18_b1":
        net = cc.models.resnet18(rng=0).eval()
        x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)

        def fn():
            net(x)
    elif case == "lenet_step":
        net = cc.models.lenet5(rng=0)
        from convcore.optim import SGD
        opt = SGD(net.parameters(), lr=0.01, momentum=0.9)
        x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
        t = rng.integers(0, 10, 64)

        def fn():
            net.zero_grad()
            logits = net(x)
            net.backward(cc.cross_entropy_backward(logits, t))
            opt.step()
    elif case == "numpy_between":
        w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
        x = rng.standard_normal((8, 64, 28, 28)).astype(np.float32)
        a = rng.standard_normal((1024, 1024)).astype(np.float32)

        def fn():
            cc.conv2d(x, w, padding=1)
            a @ a
    else:
        raise SystemExit(f"unknown case {case!r}")
    return _runner.measure(fn, reps=reps, warmup=3, min_time=0.05)["median_s"]


def run(case, config, reps, threads):
    env = _runner.child_env()
    env.update(CONFIGS[config])
    proc = subprocess.run([sys.executable, __file__, "--child", case, str(reps), str(threads)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{case} under {config} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _runner.add_protocol_args(ap, rounds=3, reps=7)
    ap.add_argument("--cases", nargs="*", choices=CASES, default=list(CASES))
    ap.add_argument("--configs", nargs="*", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "threads.json"))
    a = ap.parse_args(argv)
    quiet = _runner.check_quiet(a.force)
    times = {(c, k): [] for c in a.cases for k in a.configs}
    for r in range(a.rounds):
        for c in a.cases:
            for k in a.configs:
                times[c, k].append(run(c, k, a.reps, a.threads))
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr, flush=True)
    ms = {c: {k: statistics.median(times[c, k]) * 1e3 for k in a.configs} for c in a.cases}
    print(f"{'case':16}" + "".join(f"{k:>11}" for k in a.configs) + "   ms, median of rounds")
    for c in a.cases:
        print(f"{c:16}" + "".join(f"{ms[c][k]:11.2f}" for k in a.configs))
    _runner.write_json(a.out, {
        "environment": _runner.environment(a.threads), "quiet_check": quiet,
        "note": _runner.smoke_marker(a), "configs": {k: CONFIGS[k] for k in a.configs},
        "rounds": a.rounds, "reps": a.reps, "ms": ms,
        "rounds_ms": {f"{c}|{k}": [t * 1e3 for t in times[c, k]] for c, k in times}})


if __name__ == "__main__":
    main()
