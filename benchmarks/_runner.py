"""The benchmark protocol (docs/contributing.rst): each side alone in its own process.

Every benchmark script is both a parent and a child.  The parent (the script
run by hand) never times anything: it checks that the machine is quiet, then
starts one fresh Python process per side (convcore, PyTorch, ONNX Runtime, the
NumPy floor) and round, alternating ``convcore, peer, convcore, peer, ...``.
A child imports only its own library (and NumPy), sets the thread count
through that library's own API, builds the same inputs from the same seed,
warms up, and reports the median of its repetitions as JSON.  The parent then
takes, per case, the median over rounds of each side's time and of the ratio
``peer time / convcore time`` of the same round (> 1: convcore is faster).

A child's environment is the parent's without the OpenMP and convcore tuning
variables (``OMP_*``, ``GOMP_*``, ``KMP_*``, ``CONVCORE_*``): every library runs
with its defaults, as a user gets it.  Other variables (``OPENBLAS_*``,
``PYTHONPATH``) pass through unchanged.

``OPENBLAS_CORETYPE`` deserves a word: it replaces the kernels OpenBLAS picks
for the CPU by those of another (some machines set it to work around old
builds).  convcore's GEMMs run on SciPy's OpenBLAS, so a forced older kernel
slows convcore and not PyTorch: on a CPU with AVX-512, the Haswell kernels
multiplied convcore's GEMM tiles at 117 GFLOP/s a core against 199 for the
AVX-512 ones.  The parent warns when it is set, and every child records the
kernel each loaded BLAS runs (``blas_<side>`` in the JSON's environment).

A script becomes a child when started as ``script.py --child SIDE``: it reads a
JSON payload on stdin and writes its JSON result to the file named by
``payload["out"]``.  Helpers below are plain functions so that the tests can
check the median and ratio logic on made-up timings.
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TUNING_PREFIXES = ("OMP_", "GOMP_", "KMP_", "CONVCORE_")
BASE = "convcore"


# ------------------------------------------------------------------ parent side
def child_env(environ=None):
    """The environment of a child: the parent's minus the tuning variables."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if not k.startswith(TUNING_PREFIXES)}


def _cpu_times():
    with open("/proc/stat") as fh:
        fields = fh.readline().split()[1:]
    vals = [int(v) for v in fields]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)   # idle + iowait
    return sum(vals[:8]), idle


def busy_fraction(seconds=1.0):
    """Fraction of all CPUs busy over ``seconds`` (sampled /proc/stat), or None."""
    try:
        t0, i0 = _cpu_times()
        time.sleep(seconds)
        t1, i1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    total = t1 - t0
    return None if total <= 0 else max(0.0, 1.0 - (i1 - i0) / total)


def check_quiet(force=False, threshold=0.15, seconds=1.0, out=None):
    """Refuse (SystemExit) to measure on a busy machine unless ``force``.

    Busy means more than ``threshold`` of all CPUs in use while this process
    sleeps.  Returns what was seen, for the JSON."""
    busy = busy_fraction(seconds)
    try:
        with open("/proc/loadavg") as fh:
            load = [float(v) for v in fh.read().split()[:3]]
    except (OSError, ValueError):
        load = None
    quiet = busy is None or busy <= threshold
    info = {"busy_fraction": busy, "loadavg": load, "threshold": threshold,
            "quiet": quiet, "forced": bool(force and not quiet)}
    forced_blas = blas_environment()
    if forced_blas:
        info["blas_environment"] = forced_blas
        print("note: " + ", ".join(f"{k}={v}" for k, v in forced_blas.items())
              + " set: OpenBLAS runs the kernels named there, not the ones it picks "
              "for this CPU, and convcore's GEMMs with them (PyTorch's do not use "
              "OpenBLAS).  A user without it gets OpenBLAS's own choice; to measure that, "
              "unset these variables in this command alone.", file=out or sys.stderr, flush=True)
    if not quiet:
        bar = "!" * 72
        msg = (f"{bar}\nTHE MACHINE IS NOT QUIET: {100 * busy:.0f}% of its CPUs were busy "
               f"while nothing was measured (load average {load}).\nTimings taken now "
               f"measure the other work as much as the libraries.\n{bar}")
        if not force:
            raise SystemExit(msg + "\nStop the other work (check `top`), or pass --force "
                             "to measure anyway (the JSON records it).")
        print(msg + "\n(--force: measuring anyway; the JSON records it)",
              file=out or sys.stderr, flush=True)
    return info


def spawn(script, side, payload, timeout=None):
    """Run ``script --child side`` in a fresh process with ``payload``; its result."""
    fd, path = tempfile.mkstemp(prefix=f"cc-bench-{side}-", suffix=".json")
    os.close(fd)
    try:
        payload = dict(payload, out=path)
        proc = subprocess.run([sys.executable, script, "--child", side],
                              input=json.dumps(payload), capture_output=True, text=True,
                              env=child_env(), timeout=timeout)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise RuntimeError(f"{os.path.basename(script)} --child {side} failed "
                               f"(exit {proc.returncode}):\n{tail}")
        with open(path) as fh:
            return json.load(fh)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def alternate(script, sides, payload, rounds=3, log=None):
    """``rounds`` rounds of one fresh process per side, in the order given
    (convcore first).  ``payload`` is a dict or a function of the side.
    Returns ``{side: [result of round 0, round 1, ...]}``."""
    out = {s: [] for s in sides}
    for r in range(rounds):
        for side in sides:
            p = payload(side) if callable(payload) else payload
            t0 = time.perf_counter()
            out[side].append(spawn(script, side, p))
            if log:
                log(f"  round {r + 1}/{rounds} {side:12s} {time.perf_counter() - t0:6.1f} s")
    return out


def combine(per_round, base=BASE):
    """Per case, each side's time and ratio from the rounds' results.

    ``per_round`` is ``{side: [{case: {"median_s": t, ...}}, ...]}`` (one dict
    per round).  For each case and side: ``median_s`` = median over rounds of
    the round's median, ``rounds_s`` the round medians; for each peer
    ``ratio_vs_convcore`` = median over rounds of ``peer / convcore`` taken
    within the same round (> 1: convcore is faster).  A case a side did not
    run (or returned ``None`` for) is left out of that side.

    This machine has slow periods of seconds to minutes in which compute runs
    up to 1.5x slower for any library (a ResNet-18 step of one build took 234
    and 353 ms in back-to-back processes); a round that falls in one moves its
    ratio by as much.  So each side also gets ``spread`` (its slowest round
    over its fastest) and each peer ``ratio_best_rounds``, its fastest round
    over convcore's: the ratio of the two sides' quiet moments, reported
    beside the protocol's median, never instead of it."""
    cases = []
    for results in per_round.values():
        for rnd in results:
            for case in rnd:
                if not case.startswith("_") and case not in cases:
                    cases.append(case)
    out = {}
    for case in cases:
        row = {}
        for side, results in per_round.items():
            times = [rnd[case]["median_s"] if isinstance(rnd.get(case), dict) else None
                     for rnd in results]
            good = [t for t in times if t is not None]
            if not good:
                continue
            row[side] = {"median_s": statistics.median(good), "rounds_s": times,
                         "spread": max(good) / min(good) if min(good) > 0 else None}
        if base in row:
            best = min(t for t in row[base]["rounds_s"] if t is not None)
            for side, r in row.items():
                if side == base:
                    continue
                pairs = [p / c for p, c in zip(r["rounds_s"], row[base]["rounds_s"])
                         if p is not None and c]
                r["ratio_vs_convcore"] = statistics.median(pairs) if pairs else None
                mine = [t for t in r["rounds_s"] if t is not None]
                r["ratio_best_rounds"] = min(mine) / best if mine and best else None
        out[case] = row
    return out


def geomean(values):
    values = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return float(math.exp(sum(math.log(v) for v in values) / len(values))) if values \
        else None


BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def blas_environment(environ=None):
    """The OpenBLAS variables that override its choice of kernel and cache
    size, as set in ``environ`` (children inherit them)."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in BLAS_VARIABLES if k in environ}


def blas_kernels():
    """``"library (kernel)"`` for each BLAS loaded in this process, as
    threadpoolctl reports it; None without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return "; ".join(sorted(f"{os.path.basename(i.get('filepath', '?'))} "
                            f"({i.get('architecture') or i.get('internal_api', '?')})"
                            for i in threadpool_info() if i.get("user_api") == "blas")) or None


def environment(threads, versions=None):
    """Machine, CPU model, Python and the libraries' versions (from the children)."""
    env = {"machine": platform.machine(), "platform": platform.platform(),
           "cpus": os.cpu_count(), "python": platform.python_version(),
           "numpy": np.__version__, "threads": threads,
           "protocol": "each library alone in its own fresh process, alternating, "
                       "library defaults (no OMP_/GOMP_/KMP_/CONVCORE_ variables)",
           "blas_environment": blas_environment()}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    env["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    env.update(versions or {})
    return env


def versions_of(per_round):
    """``{library: version}`` merged from the children's ``versions`` entries."""
    out = {}
    for results in per_round.values():
        for rnd in results:
            out.update(rnd.get("_versions", {}))
    return out


def machine_limits(reps=3, threads=2):
    """sgemm 2048³ GFLOP/s and np.copyto GB/s, measured now in a NumPy-only process."""
    return spawn(os.path.abspath(__file__), "limits", {"reps": reps, "threads": threads})


def write_json(path, payload):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(payload, fh, indent=1, default=_jsonable)
    os.replace(tmp, path)


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (tuple, set)):
        return list(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def add_protocol_args(ap, rounds=3, reps=5):
    """The options every script shares."""
    ap.add_argument("--threads", type=int, default=2, help="threads of every side (default 2)")
    ap.add_argument("--rounds", type=int, default=rounds,
                    help=f"alternating process rounds per side (default {rounds}, >= 3 "
                         "for a result)")
    ap.add_argument("--reps", type=int, default=reps,
                    help=f"timed repetitions in each process, median taken (default {reps})")
    ap.add_argument("--force", action="store_true",
                    help="measure even when the machine is busy (recorded in the JSON)")


def smoke_marker(args):
    """The JSON's note when the run is too short to be a result."""
    if getattr(args, "quick", False) or args.rounds < 3 or args.reps < 5:
        return ("SMOKE RUN: too few rounds or repetitions (or --quick) to be a "
                "measurement; a placeholder until a full run on a quiet machine")
    return None


# ------------------------------------------------------------------- child side
def once(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(fn, reps=5, warmup=2, min_time=0.005):
    """Median seconds per call of ``fn`` after ``warmup`` calls.  Calls shorter
    than ``min_time`` are repeated within a sample (time divided by the count)."""
    t = min_time
    for _ in range(max(1, warmup)):
        t = once(fn)
    inner = max(1, int(math.ceil(min_time / max(t, 1e-7)))) if t < min_time else 1
    times = []
    for _ in range(max(1, reps)):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return {"median_s": statistics.median(times), "times_s": times, "calls_per_sample": inner}


def rss_bytes(field="VmRSS"):
    """This process's resident set (or its peak, ``VmHWM``) in bytes, or None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux clear_refs 5); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def child_main(sides):
    """Entry point of ``script.py --child SIDE``: run ``sides[SIDE](payload)``
    and write its dict (plus the ``_versions`` it declares) as JSON."""
    side = sys.argv[sys.argv.index("--child") + 1]
    payload = json.loads(sys.stdin.read())
    result = sides[side](payload)
    if isinstance(result, dict):   # (after the work: every BLAS it loaded)
        kernels = blas_kernels()
        if kernels:
            result.setdefault("_versions", {})[f"blas_{side}"] = kernels
    with open(payload["out"], "w") as fh:
        json.dump(result, fh, default=_jsonable)


def is_child():
    return "--child" in sys.argv


def _limits_child(payload):
    """A large sgemm and a large copy: the machine's own ceilings (NumPy only)."""
    try:   # NumPy's BLAS at the benchmark's thread count, when threadpoolctl is there
        from threadpoolctl import threadpool_limits
        threadpool_limits(payload.get("threads", 2), user_api="blas")
    except ImportError:
        pass
    reps = payload.get("reps", 3)
    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    b = np.random.default_rng(1).random((2048, 2048), dtype=np.float32)
    t = measure(lambda: a @ b, reps=reps, warmup=1)["median_s"]
    src = np.random.default_rng(2).random(32 * 2**20)   # 256 MiB
    dst = np.empty_like(src)
    tc = measure(lambda: np.copyto(dst, src), reps=reps, warmup=1)["median_s"]
    return {"sgemm_2048_gflops": 2 * 2048**3 / t / 1e9, "copy_gbs": 2 * src.nbytes / tc / 1e9,
            "_versions": {"numpy": np.__version__}}


if __name__ == "__main__" and is_child():
    child_main({"limits": _limits_child})
