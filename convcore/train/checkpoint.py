"""Training checkpoints on disk: one ``.npz`` (no pickle) holding the model,
optimizer and schedule states, the random states and a JSON metadata string,
written atomically and checked field by field when read; the random states
(NumPy's global generator and each module's own) that make a resumed run
end with the same weights as an uninterrupted one."""
from __future__ import annotations

import json
import math
import os

import numpy as np

from convcore.nn._io import read_npz, write_npz_atomic
from convcore.train.build import _shown
from convcore.train.config import TrainConfig, check_config, field_kinds

CHECKPOINT = "checkpoint.npz"
FORMAT_VERSION = 1


def _host(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def _state_arrays(model, opt, sched):
    arrays = {}
    for k, v in model.state_dict().items():
        arrays["model/" + k] = _host(v)
    for k, v in opt.state_dict().items():
        arrays["optim/" + k] = _host(v)
    if sched is not None:
        for k, v in sched.state_dict().items():
            arrays["sched/" + k] = np.asarray(v)
    return arrays


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"rng/legacy_keys": keys, "rng/legacy_pos": np.int64(pos),
            "rng/legacy_has_gauss": np.int64(has_gauss),
            "rng/legacy_cached": np.float64(cached)}


def _set_rng_state(arrs) -> None:
    missing = [k for k in _RNG_KEYS if k not in arrs]
    if missing:
        raise ValueError(f"the checkpoint lacks its random-generator state ({missing[0]!r}); "
                         f"it cannot be resumed exactly")
    np.random.set_state(("MT19937", np.asarray(arrs["rng/legacy_keys"], np.uint32),
                         int(arrs["rng/legacy_pos"]), int(arrs["rng/legacy_has_gauss"]),
                         float(arrs["rng/legacy_cached"])))


def _module_generators(model):
    """(name, Generator) of every module holding its own random generator
    (Dropout masks), in module order; a shared generator is listed once."""
    out, seen = [], set()
    named = model.named_modules() if hasattr(model, "named_modules") else [("", model)]
    for name, mod in named:
        g = getattr(mod, "rng", None)
        if isinstance(g, np.random.Generator) and id(g) not in seen:
            seen.add(id(g))
            out.append((name, g))
    return out


def module_rng_states(model) -> list:
    return [{"module": n, "state": g.bit_generator.state} for n, g in _module_generators(model)]


def set_module_rng_states(model, states) -> None:
    gens = _module_generators(model)
    if [n for n, _ in gens] != [s["module"] for s in states]:
        raise ValueError(f"checkpoint has random generators for modules "
                         f"{[s['module'] for s in states]}, the model has {[n for n, _ in gens]}")
    for (name, g), st in zip(gens, states):
        try:
            g.bit_generator.state = st["state"]
        except (TypeError, ValueError, KeyError, OverflowError) as e:
            raise ValueError(f"checkpoint's random-generator state of module {name!r} is "
                             f"invalid ({type(e).__name__}: {_shown(str(e))})") from None


def save_checkpoint(path: str, model, opt, sched, meta: dict) -> None:
    """Write a checkpoint atomically: a temporary file in the same directory,
    flushed and fsynced, then renamed over `path`. Plain ``.npz``, no pickle."""
    arrays = _state_arrays(model, opt, sched)
    arrays.update(_rng_state())
    meta = dict(meta, module_rngs=module_rng_states(model))
    arrays["meta"] = np.array(json.dumps(meta))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_npz_atomic(path, arrays)


def _split(arrays, prefix):
    n = len(prefix)
    return {k[n:]: v for k, v in arrays.items() if k.startswith(prefix)}


def restore_model(model, arrays, path) -> None:
    """Load the checkpoint's ``model/`` arrays into `model`; ValueError naming `path`."""
    try:
        model.load_state_dict(_split(arrays, "model/"))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def restore_training_state(arrays, module_rngs, path, model, opt, sched) -> None:
    """Load the optimizer, schedule and random states of a checkpoint (read
    from `path`) for resuming; ValueError naming `path` when one is unusable."""
    try:
        opt.load_state_dict(_split(arrays, "optim/"))
        if sched is not None:
            sched.load_state_dict(_split(arrays, "sched/"))
        _set_rng_state(arrays)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as e:
        raise ValueError(f"{path}: its optimizer, schedule or random state cannot be "
                         f"restored: {e}") from None
    try:
        set_module_rng_states(model, module_rngs)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _checkpoint_path(path) -> str:
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    return path


def read_checkpoint(path: str):
    """(meta dict, arrays dict) of a checkpoint; ValueError naming the file and
    what is wrong when it is not a well-formed one (object arrays are
    refused, never unpickled; the metadata is checked field by field)."""
    path = _checkpoint_path(path)
    arrays = read_npz(path)
    if "meta" not in arrays:
        raise ValueError(f"{path}: not a convcore checkpoint (no 'meta' entry)")
    m = arrays.pop("meta")
    if m.dtype.kind != "U" or m.shape != ():
        raise ValueError(f"{path}: not a convcore checkpoint ('meta' is a {m.dtype} array of "
                         f"shape {m.shape}, expected a JSON string)")
    try:
        meta = json.loads(str(m[()]))
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{path}: the checkpoint's metadata is not valid JSON "
                         f"({type(e).__name__}: {_shown(str(e), 120)})") from None
    problem = _meta_problem(meta)
    if problem:
        raise ValueError(f"{path}: not a valid convcore checkpoint: {problem}")
    try:
        check_config(TrainConfig(**meta["config"]))
    except ValueError as e:
        raise ValueError(f"{path}: not a valid convcore checkpoint: {e}") from None
    problem = _rng_problem(arrays)
    if problem:
        raise ValueError(f"{path}: not a valid convcore checkpoint: {problem}")
    return meta, arrays


_RNG_KEYS = ("rng/legacy_keys", "rng/legacy_pos", "rng/legacy_has_gauss", "rng/legacy_cached")


def _rng_problem(arrays):
    have = [k for k in _RNG_KEYS if k in arrays]
    if not have:
        return None                       # checked when resuming
    if len(have) != len(_RNG_KEYS):
        return f"random-generator state incomplete (missing {sorted(set(_RNG_KEYS) - set(have))})"
    keys = arrays["rng/legacy_keys"]
    if keys.shape != (624,) or keys.dtype.kind not in "iu":
        return f"'rng/legacy_keys' must be 624 integers, got {keys.dtype} {keys.shape}"
    for k, kinds in (("rng/legacy_pos", "iu"), ("rng/legacy_has_gauss", "iub"),
                     ("rng/legacy_cached", "f")):
        if arrays[k].shape != () or arrays[k].dtype.kind not in kinds:
            return f"{k!r} must be a scalar, got {arrays[k].dtype} {arrays[k].shape}"
    if not 0 <= int(arrays["rng/legacy_pos"]) <= 624 or \
            int(keys.min(initial=0)) < 0 or int(keys.max(initial=0)) >= 2**32 or \
            int(arrays["rng/legacy_has_gauss"]) not in (0, 1) or \
            not math.isfinite(float(arrays["rng/legacy_cached"])):
        return "random-generator state out of range"
    return None


def _meta_problem(meta):
    """What is wrong with a checkpoint's metadata, or None."""
    if not isinstance(meta, dict):
        return f"metadata must be a JSON object, got {type(meta).__name__}"
    if meta.get("format") != FORMAT_VERSION:
        return f"format {_shown(meta.get('format'))}, expected {FORMAT_VERSION}"
    missing = [k for k in ("config", "epoch", "classes", "mean", "std") if k not in meta]
    if missing:
        return f"metadata lacks {', '.join(missing)}"
    cfg = meta["config"]
    if not isinstance(cfg, dict):
        return f"'config' must be an object, got {type(cfg).__name__}"
    kinds = field_kinds()
    unknown = [k for k in cfg if k not in kinds]
    if unknown:
        return f"unknown configuration keys {_shown(sorted(map(str, unknown)))}"
    for k, v in cfg.items():
        typ, optional = kinds[k]
        if (v is None and optional) or (k == "augment" and v == "pca"):
            continue
        ok = (isinstance(v, bool) if typ is bool else
              isinstance(v, int) and not isinstance(v, bool) if typ is int else
              isinstance(v, (int, float)) and not isinstance(v, bool) if typ is float else
              isinstance(v, str) and len(v) <= 4096)
        if not ok:
            return f"configuration {k!r} must be {'an optional ' if optional else ''}" \
                   f"{typ.__name__}, got {_shown(v)}"
    ep = meta["epoch"]
    if isinstance(ep, bool) or not isinstance(ep, int) or not 0 <= ep <= 10**9:
        return f"'epoch' must be a non-negative int, got {_shown(ep)}"
    classes = meta["classes"]
    if (not isinstance(classes, list) or not 1 <= len(classes) <= 100000
            or not all(isinstance(c, str) and len(c) <= 200 for c in classes)):
        return f"'classes' must be a list of class names, got {_shown(classes)}"
    for k in ("mean", "std"):
        v = meta[k]
        if (not isinstance(v, list) or not 1 <= len(v) <= 4096
                or not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                           and math.isfinite(a) for a in v)):
            return f"{k!r} must be a list of finite numbers, got {_shown(v)}"
    if not all(a > 0 for a in meta["std"]):
        return "'std' must be positive"
    hist = meta.get("history", [])
    if not isinstance(hist, list) or not all(isinstance(h, dict) for h in hist):
        return f"'history' must be a list of objects, got {_shown(hist)}"
    rngs = meta.get("module_rngs", [])
    if not isinstance(rngs, list) or not all(
            isinstance(r, dict) and isinstance(r.get("module"), str)
            and isinstance(r.get("state"), dict) for r in rngs):
        return f"'module_rngs' must be a list of {{module, state}} objects, got {_shown(rngs)}"
    return None
