"""Measure which convolution strategy is fastest for each layer of a network.

Like FFTW's wisdom: :func:`tune` runs every applicable strategy for each
distinct convolution of a model, forward and backward, on this machine and
thread count, keeps the fastest in the active plan, and
:func:`save_plan` / :func:`load_plan` keep it across processes
(``$CONVCORE_PLAN`` loads one at import).  See the docs' Tuning section.
"""
from __future__ import annotations

import time

import numpy as np

from convcore import _config, _plan
from convcore._plan import clear_plan, cpu_model, load_plan, save_plan

__all__ = ["tune", "save_plan", "load_plan", "clear_plan", "conv_geometries"]


def _model(model, in_channels):
    if isinstance(model, str):
        from convcore import models
        return models.get_model(model, in_channels=in_channels, rng=0)
    return model


def conv_geometries(model, input_shape, dtype=np.float32):
    """The distinct convolution geometries a forward pass of `model` (a
    module or a model name) on a batch of `input_shape` ((C, H, W): batch 1,
    or (N, C, H, W)) runs, in order, found by running it on zeros."""
    from convcore.backends import cpu
    shape = tuple(int(v) for v in input_shape)
    if len(shape) == 3:
        shape = (1,) + shape
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) or (N, C, H, W) of positive "
                         f"sizes, got {tuple(input_shape)}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    net = _model(model, shape[1])
    seen = []
    real = cpu.conv2d_forward

    def record(x, w, b, y, geom):
        if geom not in seen:
            seen.append(geom)
        real(x, w, b, y, geom)

    cpu.conv2d_forward = record
    try:
        was_training = getattr(net, "training", None)
        if hasattr(net, "eval"):
            net.eval()
        try:
            net(np.zeros(shape, dtype=dtype))
        finally:
            if was_training and hasattr(net, "train"):
                net.train()
    finally:
        cpu.conv2d_forward = real
    return seen


def _time(fn, repeat):
    fn()   # warm-up (and workspace)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _candidates(geom, dtype):
    """The strategies that run `geom` themselves (not through a fallback)."""
    from convcore._core import _conv
    out = []
    for name in _conv.STRATEGIES:
        if _conv.plan(geom, dtype, name).split("+")[0] == name:
            out.append(name)
    return out


def tune(model, input_shape, dtype=np.float32, repeat=3, backward=True, verbose=False):
    """Time every applicable convolution strategy for each convolution of
    `model` and keep the fastest, per geometry, in the active plan.

    Parameters
    ----------
    model : Module or str
        A network, or a name of :mod:`convcore.models` (built with seed 0).
    input_shape : tuple
        (C, H, W) for batch 1, or (N, C, H, W).
    dtype : float32 or float64
    repeat : int
        Timed runs per strategy and pass (the fastest counts), after one
        warm-up run.
    backward : bool
        Tune the backward pass too (input and weight gradients).
    verbose : bool
        Print one line per geometry.

    Returns
    -------
    list of dict
        One entry per geometry: ``geom``, ``dtype``, ``threads``, the
        ``forward`` and ``backward`` strategy names and ``times`` (seconds,
        per strategy and pass).  They are also in the active plan, which
        :func:`save_plan` writes.

    Notes
    -----
    A plan holds for the thread count it was measured with
    (:func:`convcore.set_num_threads`) and for this CPU model.  A strategy
    the plan picks may round differently from the one the heuristics pick;
    results stay deterministic for a given plan and thread count.
    """
    from convcore._core import _conv
    from convcore.backends import cpu
    dtype = np.dtype(dtype)
    repeat = int(repeat)
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    geoms = conv_geometries(model, input_shape, dtype)
    threads = _config.get_num_threads()
    limit = _config.get_workspace_limit()
    rng = np.random.default_rng(0)
    entries = []
    for geom in geoms:
        N, C, H, W, K, KH, KW = geom[:7]
        OH, OW, groups = geom.OH, geom.OW, geom.groups
        names = _candidates(geom, dtype)
        if len(names) < 2:
            continue
        x = rng.standard_normal((N, C, H, W)).astype(dtype)
        w = rng.standard_normal((K, C // groups, KH, KW)).astype(dtype)
        b = rng.standard_normal(K).astype(dtype)
        dy = rng.standard_normal((N, K, OH, OW)).astype(dtype)
        y = np.empty((N, K, OH, OW), dtype)
        dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
        cpu._blas_context()   # (binds the BLAS thread functions)
        times = {"forward": {}, "backward": {}}
        for name in names:
            s = _conv.STRATEGIES[name]
            work = np.empty(_conv.make_plan(geom, dtype.itemsize, s, False,
                                            limit // dtype.itemsize)[3], dtype)
            times["forward"][name] = _time(
                lambda: _conv.conv2d_forward(x, w, b, True, s, work, y, geom, threads), repeat)
            if backward:
                times["backward"][name] = _time(
                    lambda: _conv.conv2d_backward(dy, x, w, s, work, dx, dw, db, geom, threads),
                    repeat)
        entry = {"geom": list(geom), "dtype": dtype.name, "threads": threads,
                 "forward": min(times["forward"], key=times["forward"].get),
                 "backward": min(times["backward"], key=times["backward"].get) if backward
                 else None, "times": times}
        entries.append(entry)
        if verbose:
            heur = _conv.plan(geom, dtype)
            print(f"{geom}: heuristics {heur}; fastest forward {entry['forward']}"
                  + (f", backward {entry['backward']}" if backward else ""))
    _plan.set_entries(entries)
    return entries
