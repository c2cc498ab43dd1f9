#!/usr/bin/env bash
# Build the documentation, then open every page in headless Chromium with the
# network cut off: formulas typeset, no request leaving the machine, no
# JavaScript error, and a 1280-px screenshot of each page for a person to look at.
#
#   scripts/check_docs.sh [--no-build] [PAGE.html ...]
#
# Needs the docs extra (pip install ".[docs]") and Debian's chromium
# (apt-get install -y chromium). Screenshots: docs/_build/screenshots/.
# From a source tree whose extension was built in place
# (python setup.py build_ext --inplace), the tree is put first on the path.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
if [ "${1:-}" = "--no-build" ]; then build=0; shift; fi

if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  echo "check_docs: no chromium found (apt-get update && apt-get install -y chromium)" >&2
  exit 2
fi

if ls convcore/_core/*.so >/dev/null 2>&1; then
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

if [ "$build" -eq 1 ]; then
  echo "== sphinx-build -W --keep-going -b html docs docs/_build/html"
  sphinx-build -W --keep-going -q -b html docs docs/_build/html
fi

echo "== every page in headless Chromium, offline"
rm -rf docs/_build/screenshots
exec python scripts/check_docs.py --html docs/_build/html --out docs/_build/screenshots "$@"
