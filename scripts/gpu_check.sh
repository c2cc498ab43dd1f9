#!/usr/bin/env bash
# One-shot GPU check, for a fresh machine with an NVIDIA GPU (about 3-8 minutes):
#   1. install the CUDA extra (skipped when CuPy already imports),
#   2. build the C extension in place,
#   3. run the GPU tests (pytest -m gpu),
#   4. run the quick GPU benchmark (benchmarks/bench_gpu.py --quick),
# then print one summary table.  Logs and the benchmark's JSON go to
# $GPU_CHECK_OUT (default gpu_check/).  Exit status 0 only if every step passed.
#
#   scripts/gpu_check.sh                 # with python3 from PATH
#   PYTHON=.venv/bin/python scripts/gpu_check.sh
#   CONVCORE_CUDA_EXTRA=cuda13 scripts/gpu_check.sh    # CuPy for CUDA 13
#   GPU_CHECK_SKIP_INSTALL=1 scripts/gpu_check.sh       # install nothing
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${GPU_CHECK_OUT:-gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
: >"$OUT/steps.tsv"

# step NAME TIMEOUT_S CMD...: run, log to $OUT/NAME.log, record status and seconds
step() {
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS rc
  echo "== $name: $*"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  rc=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >>"$OUT/steps.tsv"
  return "$rc"
}

install_cuda_extra() {
  if [ -n "${GPU_CHECK_SKIP_INSTALL:-}" ]; then
    echo "GPU_CHECK_SKIP_INSTALL set: nothing installed"
    return 0
  fi
  if "$PY" -c "import cupy" 2>/dev/null; then
    echo "CuPy $("$PY" -c 'import cupy; print(cupy.__version__)') already installed"
  else
    local extra=${CONVCORE_CUDA_EXTRA:-}
    if [ -z "$extra" ]; then
      local major
      major=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -n1)
      extra=cuda
      [ "${major:-0}" -ge 13 ] && extra=cuda13
    fi
    echo "installing the '$extra' extra"
    # the extra's requirements, read from pyproject.toml (convcore itself is built in place)
    "$PY" - "$extra" >"$OUT/requirements.txt" <<'PY' || return 1
import sys, tomllib
with open("pyproject.toml", "rb") as fh:
    print("\n".join(tomllib.load(fh)["project"]["optional-dependencies"][sys.argv[1]]))
PY
    "$PY" -m pip install -q -r "$OUT/requirements.txt" || return 1
  fi
  # build and test requirements, when missing
  "$PY" -c "import Cython, setuptools, numpy, scipy, threadpoolctl, pytest" 2>/dev/null ||
    "$PY" -m pip install -q "Cython>=3" setuptools numpy scipy threadpoolctl pytest
}

nvidia-smi -L 2>/dev/null || echo "nvidia-smi: not found (no NVIDIA driver?)"
export -f install_cuda_extra
export PY OUT
step install 240 bash -c install_cuda_extra
step build 240 "$PY" setup.py build_ext --inplace -q -j "$(nproc 2>/dev/null || echo 4)"
step tests 300 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests
step bench 150 "$PY" benchmarks/bench_gpu.py --quick --json "$OUT/bench_gpu_quick.json"

"$PY" - "$OUT" <<'PY'
import json, os, re, sys
out = sys.argv[1]
steps = [line.rstrip("\n").split("\t") for line in open(os.path.join(out, "steps.tsv"))]
def tail(name):
    try:
        lines = [l.strip() for l in open(os.path.join(out, f"{name}.log")) if l.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""
print()
print(f"{'step':<10} {'status':<8} {'seconds':>7}  result")
print("-" * 78)
total = 0
failed = []
for name, rc, secs in steps:
    total += int(secs)
    status = "ok" if rc == "0" else ("TIMEOUT" if rc == "124" else f"FAIL {rc}")
    note = tail(name)
    if name == "tests":
        m = re.search(r"(?:=+ )?(.*) in [0-9.]+s", note)
        note = m.group(1) if m else note
        if rc == "0" and " passed" not in note:      # all skipped: no GPU test ran
            status, rc = "NONE RAN", "1"
            failed.append(name)
    if rc != "0" and name not in failed:
        failed.append(name)
    print(f"{name:<10} {status:<8} {secs:>7}  {note[:50]}")
print("-" * 78)
print(f"{'total':<10} {'':<8} {total:>7}")
path = os.path.join(out, "bench_gpu_quick.json")
if os.path.exists(path):
    res = json.load(open(path))
    print(f"\nbench_gpu --quick on {res['device']} (ratio = torch / convcore, > 1: convcore faster)")
    print(f"{'case':<11} {'fwd ms':>9} {'torch':>9} {'ratio':>6} {'fwd+bwd ms':>11} {'torch':>9} {'ratio':>6}")
    f = lambda v, s: "-" if v is None else format(v, s)
    for r in res["layers"] + res["pools"]:
        print(f"{r['name']:<11} {r['fwd_ms']:>9.3f} {f(r['peer_fwd_ms'], '9.3f')} "
              f"{f(r['fwd_ratio'], '6.2f')} {r['fb_ms']:>11.3f} {f(r['peer_fb_ms'], '9.3f')} "
              f"{f(r['fb_ratio'], '6.2f')}")
    print("geometric means:", {k: None if v is None else round(v, 2)
                               for k, v in res["summary"].items()})
print("\nGPU check:", "passed" if not failed else "FAILED (" + ", ".join(failed) + ")")
sys.exit(1 if failed else 0)
PY
