#!/usr/bin/env bash
# Build convcore's C core with AddressSanitizer + UndefinedBehaviorSanitizer and
# run the C-core tests under it; exits non-zero on any sanitizer report.
#
#   scripts/sanitize.sh                 # C test program + the C-core pytest files
#   SANITIZE_TESTS="tests/conv/test_conv.py" scripts/sanitize.sh   # a chosen subset
#
# The instrumented extension is built in a copy of the source tree
# (build/sanitize/src), so the normal in-place build is left untouched.
# Python is not built with ASan: the runtime is LD_PRELOADed, PYTHONMALLOC=malloc
# routes Python's allocations through it, and leak detection is off for the
# Python run (the interpreter leaks at exit by design); the pure-C program runs
# with leak detection on.  Needs gcc (or clang) with the sanitizer runtimes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
OUT=${SANITIZE_DIR:-$ROOT/build/sanitize}
CC=${CC:-gcc}
TESTS=${SANITIZE_TESTS:-"tests/conv/test_conv.py tests/conv/test_winograd.py tests/conv/test_depthwise.py
  tests/conv/test_edge_cases.py tests/pool/test_edge_cases.py tests/nn/test_edge_cases.py
  tests/data/test_edge_cases.py tests/conv/test_properties.py tests/pool/test_properties.py
  tests/every_op/test_arbitrary_options.py tests/nn/test_corrupt_files.py
  tests/data/test_corrupt_files.py tests/norm/test_norm_kernels.py tests/norm/test_linear.py
  tests/norm/test_cross_entropy.py tests/pool/test_pool.py tests/conv/test_regions.py
  tests/conv/test_unrolled.py
  tests/norm/test_layers_functional.py tests/conv/test_direct_rows.py
  tests/conv/test_packed_gemm.py"}
FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"

libasan=$($CC -print-file-name=libasan.so)
libubsan=$($CC -print-file-name=libubsan.so)
for lib in "$libasan" "$libubsan"; do
  [ -e "$lib" ] || { echo "sanitize: $CC has no $(basename "$lib") (install libasan/libubsan)"; exit 2; }
done
export ASAN_OPTIONS_C="detect_leaks=1:abort_on_error=0:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

start=$(date +%s)
echo "== sanitize: canary (the sanitizers must catch a planted bug)"
mkdir -p "$OUT"
cat > "$OUT/canary.c" <<'EOF'
#include <stdlib.h>
int main(int argc, char **argv) { int *p = malloc(4 * sizeof *p); (void)argv;
  p[argc + 3] = 1; int r = p[0]; free(p); return r; }
EOF
$CC $FLAGS "$OUT/canary.c" -o "$OUT/canary"
if ASAN_OPTIONS="$ASAN_OPTIONS_C" "$OUT/canary" 2>/dev/null; then
  echo "sanitize: ASan did not catch a heap overflow: the toolchain is not sanitizing"; exit 2
fi

echo "== sanitize: pure-C core tests (tests/c/test_core.c, naive GEMM injected)"
$CC -std=c99 $FLAGS -fopenmp -Wall -Wextra -Isrc_c tests/c/test_core.c src_c/*.c -lm \
    -o "$OUT/test_core"
ASAN_OPTIONS="$ASAN_OPTIONS_C" OMP_NUM_THREADS=4 "$OUT/test_core"

echo "== sanitize: build the extension with CONVCORE_SANITIZE=1 in $OUT/src"
rm -rf "$OUT/src"
mkdir -p "$OUT/src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z -co --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$OUT/src"
else
  tar --exclude=./build --exclude=./.venv --exclude='*.so' -cf - . | tar -xf - -C "$OUT/src"
fi
(cd "$OUT/src" && CONVCORE_SANITIZE=1 "$PY" setup.py build_ext --inplace -q >"$OUT/build.log" 2>&1) \
  || { tail -30 "$OUT/build.log"; exit 1; }
for so in "$OUT"/src/convcore/_core/*.so; do
  nm -D "$so" | grep __asan_report >/dev/null || { echo "sanitize: $so is not instrumented"; exit 1; }
done

echo "== sanitize: pytest under ASan+UBSan: $TESTS"
# A sanitizer report aborts the process, failing the run (or, inside the
# crash-isolated tests, failing the test with the input that triggered it).
cd "$OUT/src"
set +e
env LD_PRELOAD="$libasan $libubsan" PYTHONMALLOC=malloc \
  ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:allocator_may_return_null=1" \
  UBSAN_OPTIONS="$UBSAN_OPTIONS" CONVCORE_SANITIZED=1 \
  "$PY" -m pytest -q -p no:cacheprovider -x $TESTS 2>&1 | tee "$OUT/pytest.log"
rc=${PIPESTATUS[0]}
set -e
if grep -qE "ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer" "$OUT/pytest.log"; then
  echo "sanitize: sanitizer report in the pytest run (see $OUT/pytest.log)"; exit 1
fi
[ "$rc" -eq 0 ] || { echo "sanitize: pytest failed under the sanitizers (rc $rc)"; exit "$rc"; }
echo "== sanitize: clean ($(( $(date +%s) - start )) s)"
