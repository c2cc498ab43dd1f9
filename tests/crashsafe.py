"""Run risky calls in a child Python, so a crash is a test failure, not a dead run.

``run_cases(cases)`` sends a batch of JSON-describable cases to a child
interpreter that runs ``tests/fuzz_cases.py: run_case`` on each one.  The child
records which case it is about to run before running it; if it dies by a
signal (segfault, abort, SIGFPE) or hangs, the parent fails the test naming
that exact case.  Case outcomes that break the documented contract (a wrong
shape, a wrong value, an exception other than ValueError/TypeError) come back
as messages, and the parent fails with every one of them.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile

import pytest

import convcore

HERE = os.path.dirname(os.path.abspath(__file__))
# the convcore this test run imports (a source tree or site-packages)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(convcore.__file__)))

_CHILD = r"""
import json, os, sys, traceback
if not os.environ.get("CONVCORE_SANITIZED"):  # ASan reserves terabytes of address space
    try:
        import resource
        # a valid case never needs much: an accidental huge allocation becomes a
        # MemoryError in the child instead of memory pressure on the machine
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    except (ImportError, ValueError, OSError):
        pass
sys.path.insert(0, {here!r})
import fuzz_cases
cases = json.load(open({cases!r}))
problems = []
with open({progress!r}, "w", buffering=1) as prog:
    for i, case in enumerate(cases):
        prog.write(f"{{i}}\n")
        prog.flush()
        try:
            msg = fuzz_cases.run_case(case)
        except BaseException:
            msg = "harness error: " + traceback.format_exc()
        if msg:
            problems.append({{"case": case, "problem": msg}})
json.dump(problems, open({result!r}, "w"))
"""


def run_cases(cases, timeout: float = 300, env=None):
    """Run every case in one child process; fail the test on a crash or a problem."""
    with tempfile.TemporaryDirectory(prefix="cc-crashsafe-") as tmp:
        paths = {k: os.path.join(tmp, k + ".json") for k in ("cases", "progress", "result")}
        with open(paths["cases"], "w") as fh:
            json.dump(cases, fh)
        code = _CHILD.format(here=HERE, **paths)
        child_env = dict(os.environ)
        child_env["PYTHONPATH"] = os.pathsep.join(
            [ROOT] + [p for p in child_env.get("PYTHONPATH", "").split(os.pathsep) if p])
        child_env.setdefault("PYTHONFAULTHANDLER", "1")
        child_env.update(env or {})
        try:
            res = subprocess.run([sys.executable, "-c", code], env=child_env,
                                 capture_output=True, text=True, timeout=timeout)
            rc, tail = res.returncode, (res.stdout + res.stderr)[-3000:]
        except subprocess.TimeoutExpired as exc:
            rc, tail = "timeout", str(exc)
        if rc != 0:
            last = None
            if os.path.exists(paths["progress"]):
                lines = open(paths["progress"]).read().split()
                if lines:
                    last = cases[int(lines[-1])]
            how = (f"killed by signal {signal.Signals(-rc).name}" if isinstance(rc, int)
                   and rc < 0 else f"exited with {rc}")
            pytest.fail(f"child Python {how} while running case {json.dumps(last)}\n"
                        f"--- child output ---\n{tail}")
        problems = json.load(open(paths["result"]))
    tally = os.environ.get("CONVCORE_FUZZ_TALLY")   # a file to count cases in, for reports
    if tally:
        with open(tally, "a") as fh:
            fh.write(f"{len(cases)}\n")
    if problems:
        lines = [f"{json.dumps(p['case'])}\n    -> {p['problem']}" for p in problems[:20]]
        pytest.fail(f"{len(problems)} of {len(cases)} cases broke the contract:\n"
                    + "\n".join(lines))
    return len(cases)
