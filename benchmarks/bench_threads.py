"""How convcore's thread team waits between calls, measured as a user runs it.

Each configuration of the OpenMP wait (the spin before a worker sleeps) runs
in its own fresh process with nothing else in it, alternating configurations
for several rounds; each process warms up and reports the median of its
repetitions.  Cases:

- ``resnet18_b1``: ResNet-18 inference, batch 1, 224x224 (back-to-back layers:
  every parallel region after a short pause);
- ``lenet_step``: a LeNet-5 training step at batch 64 in the user's own loop
  (forward, cross-entropy, backward, SGD step);
- ``numpy_between``: a convolution followed by the user's own NumPy work (a
  1024x1024 matmul on NumPy's BLAS threads) -- what the team's spinning takes
  from the user's code between calls.

The configurations are the environment a process starts with; ``default`` is
convcore's own choice (no variable set).  Reported, never asserted.

    python benchmarks/bench_threads.py [--rounds 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CONFIGS = {
    "default": {},
    "spin 10k": {"GOMP_SPINCOUNT": "10000"},
    "spin 300k": {"GOMP_SPINCOUNT": "300000"},
    "spin 3M": {"GOMP_SPINCOUNT": "3000000"},
    "active": {"OMP_WAIT_POLICY": "active"},
    "passive": {"OMP_WAIT_POLICY": "passive"},
}
TUNING = ("OMP_", "GOMP_", "KMP_", "CONVCORE_")

CHILD = r'''
import json, statistics, sys, time
import numpy as np
import convcore as cc
case, reps = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
if case == "resnet18_b1":
    net = cc.models.resnet18(rng=0).eval()
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    fn = lambda: net(x)
elif case == "lenet_step":
    net = cc.models.lenet5(rng=0)
    opt = cc.optim.SGD(net.parameters(), lr=0.01, momentum=0.9) if hasattr(cc, "optim") \
        else __import__("convcore.optim", fromlist=["SGD"]).SGD(net.parameters(), lr=0.01, momentum=0.9)
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
for _ in range(3):
    fn()
inner = 1
while True:
    t0 = time.perf_counter(); [fn() for _ in range(inner)]; dt = time.perf_counter() - t0
    if dt > 0.05: break
    inner *= 2
ts = []
for _ in range(reps):
    t0 = time.perf_counter(); [fn() for _ in range(inner)]
    ts.append((time.perf_counter() - t0) / inner)
print(json.dumps(statistics.median(ts)))
'''


def run(case, env_extra, reps):
    env = {k: v for k, v in os.environ.items() if not k.startswith(TUNING)}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", CHILD, case, str(reps)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--cases", default="resnet18_b1,lenet_step,numpy_between")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--json")
    a = p.parse_args(argv)
    cases, configs = a.cases.split(","), a.configs.split(",")
    times = {(c, k): [] for c in cases for k in configs}
    for r in range(a.rounds):
        for c in cases:
            for k in configs:
                times[c, k].append(run(c, CONFIGS[k], a.reps))
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    rows = {c: {k: statistics.median(times[c, k]) * 1e3 for k in configs} for c in cases}
    print(f"{'case':16}" + "".join(f"{k:>12}" for k in configs) + "   (ms, median of rounds)")
    for c in cases:
        print(f"{c:16}" + "".join(f"{rows[c][k]:12.2f}" for k in configs))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"ms": rows, "configs": {k: CONFIGS[k] for k in configs},
                       "rounds": a.rounds, "cpus": os.cpu_count()}, fh, indent=1)


if __name__ == "__main__":
    main()
