"""Measured convolution plans: which strategy each convolution runs.

A plan maps (geometry, dtype, thread count) to the strategy that
:func:`convcore.tune` measured fastest for the forward and the backward
pass on this machine.  AUTO takes the plan's strategy where it has an entry
for a call and the built-in heuristics elsewhere.  A plan is saved as JSON
with the CPU model and thread count it was measured on; one measured
elsewhere is ignored, with a warning, when loaded.  ``$CONVCORE_PLAN`` names
a plan file that ``import convcore`` loads.

For a given plan and thread count results are deterministic, but a plan may
pick another strategy than the heuristics, which changes float rounding as
a different chunk size does (agreement with PyTorch stays within rounding).
"""
from __future__ import annotations

import json
import os
import platform
import warnings

FORMAT = "convcore-conv-plan"
VERSION = 1

# (geom tuple, itemsize, backward, threads) -> strategy number; the backend
# reads it on every call, so it is a plain dict, empty when no plan is active
active: dict = {}
# the entries of the active plan, as saved
_entries: list = []


def cpu_model() -> str:
    """The processor's model name (as /proc/cpuinfo gives it), or the
    platform's description where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _strategy_number(name):
    from convcore._core import _conv
    if name not in _conv.STRATEGIES:
        raise ValueError(f"plan entry names strategy {name!r}; expected one of "
                         f"{sorted(_conv.STRATEGIES)}")
    return _conv.STRATEGIES[name]


def set_entries(entries, replace=False):
    """Make `entries` (dicts with geom, dtype, threads, forward, backward)
    part of the active plan (or the whole of it with replace)."""
    import numpy as np
    new = {}
    for e in entries:
        geom = tuple(int(v) for v in e["geom"])
        if len(geom) != 16:
            raise ValueError(f"plan entry geometry must have 16 numbers, got {len(geom)}")
        itemsize = np.dtype(e["dtype"]).itemsize
        threads = int(e["threads"])
        for backward, key in ((False, "forward"), (True, "backward")):
            if e.get(key):
                new[(geom, itemsize, backward, threads)] = _strategy_number(e[key])
    if replace:
        active.clear()
        _entries.clear()
    keys = {(tuple(e["geom"]), e["dtype"], int(e["threads"])) for e in entries}
    _entries[:] = [e for e in _entries
                   if (tuple(e["geom"]), e["dtype"], int(e["threads"])) not in keys]
    _entries.extend(dict(e) for e in entries)
    active.update(new)


def clear_plan():
    """Forget the active plan: every call takes the heuristics again."""
    active.clear()
    _entries.clear()


def save_plan(path):
    """Write the active plan (from :func:`convcore.tune` or
    :func:`load_plan`) to `path` as JSON."""
    doc = {"format": FORMAT, "version": VERSION, "cpu": cpu_model(),
           "entries": sorted(_entries, key=lambda e: (e["threads"], e["dtype"], e["geom"]))}
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    try:
        head = {k: v for k, v in doc.items() if k != "entries"}
        with open(tmp, "w", encoding="utf-8") as fh:
            # one line per entry: a plan diffs and greps by geometry
            fh.write(json.dumps(head)[:-1] + ', "entries": [\n')
            fh.write(",\n".join(json.dumps(e) for e in doc["entries"]))
            fh.write("\n]}\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_plan(path) -> bool:
    """Load a plan saved by :func:`save_plan` and make it the active one.

    Returns True; returns False and warns (leaving the active plan as it
    was) when the plan was measured on another CPU model.  Its entries are
    keyed by thread count: those of other thread counts stay unused until
    :func:`convcore.set_num_threads` selects theirs.  ValueError for a file
    that is not a plan."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a convcore plan (invalid JSON: {e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path}: not a convcore plan (expected format {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise ValueError(f"{path}: plan version {doc.get('version')!r}, expected {VERSION}")
    entries = doc.get("entries")
    if not isinstance(entries, list):
        raise ValueError(f"{path}: plan has no list of entries")
    here = cpu_model()
    if doc.get("cpu") != here:
        warnings.warn(f"convolution plan {path} was measured on {doc.get('cpu')!r}, "
                      f"not on this machine's {here!r}: ignored (run convcore.tune again)",
                      RuntimeWarning, stacklevel=2)
        return False
    try:
        set_entries(entries, replace=True)
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: malformed plan entry ({e!r})") from None
    return True


def load_from_environment():
    """Load $CONVCORE_PLAN, if set (a warning, never an error, at import)."""
    path = os.environ.get("CONVCORE_PLAN")
    if not path:
        return
    try:
        load_plan(path)
    except (OSError, ValueError) as e:
        warnings.warn(f"CONVCORE_PLAN: {e}; running without a plan", RuntimeWarning,
                      stacklevel=2)
