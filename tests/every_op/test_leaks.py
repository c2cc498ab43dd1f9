"""No leaks in any op family: after a warm-up, many calls of each op (and of each
error path that raises after allocating) leave the resident set size where it
was.  The cases are a table per family (FAMILIES); the property is written once
and parametrised over all of them (ids ``family-case``).

The default run makes 500 calls per case; `pytest -m slow` makes 10,000.
A leak of one small buffer per call (a few hundred bytes and up) shows as
megabytes here; allocator noise stays well below the threshold.
"""
import ctypes
import ctypes.util
import gc
import os
import sys

import numpy as np
import pytest

import convcore as cc
from convcore._core import _conv, _norm

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads RSS from /proc/self/statm")
LIMIT_MB = 3.0


try:
    _trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc
    _trim = None


def rss_mb():
    """Resident set size, after handing free heap memory back to the system
    (otherwise a leak could hide in memory that earlier tests freed)."""
    gc.collect()
    if _trim is not None:
        _trim(0)
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _inputs(dtype=np.float32):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 12, 12)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    dy = rng.standard_normal((2, 4, 12, 12)).astype(dtype)
    return x, w, b, dy


def _raises(exc, f):
    def call():
        try:
            f()
        except exc:
            return
        raise AssertionError(f"expected {exc.__name__}")
    return call


def _conv_cases():
    x, w, b, dy = _inputs()
    xd, wd, bd, dyd = _inputs(np.float64)
    cols = cc.im2col(x, 3, padding=1)
    geom = (2, 3, 12, 12, 4, 3, 3, 1, 1, 1, 1, 1, 1, 12, 12, 1)
    yield "conv2d", lambda: cc.conv2d(x, w, b, padding=1)
    yield "conv2d f64 strided view", lambda: cc.conv2d(xd[..., ::-1], wd, bd, padding=1)
    yield "conv2d depthwise", lambda: cc.conv2d(x, w[:3, :1], padding=1, groups=3)
    yield "conv2d 1x1", lambda: cc.conv2d(x, w[:, :, :1, :1])
    yield "conv2d_backward", lambda: cc.conv2d_backward(dy, x, w, padding=1)
    yield "conv2d_backward f64", lambda: cc.conv2d_backward(dyd, xd, wd, padding=1)
    yield "im2col", lambda: cc.im2col(x, 3, padding=1)
    yield "col2im", lambda: cc.col2im(cols, 12, 3, padding=1)
    # error paths that raise after something was allocated
    yield "backward, 'same' even kernel (x padded), wrong grad_output", _raises(
        ValueError, lambda: cc.conv2d_backward(dy[:, :, :5], x, w[:, :, :2, :2],
                                               padding="same"))
    yield "binding: geometry refused after outputs exist", _raises(
        ValueError, lambda: _conv.im2col(x, np.empty((2, 27, 144), np.float32),
                                         geom[:7] + (0,) + geom[8:], 1))
    yield "binding: buffer size mismatch", _raises(
        ValueError, lambda: _conv.col2im(cols[:, :, :-1].copy(), np.empty_like(x), geom, 1))
    yield "validation errors", _raises(
        (ValueError, TypeError), lambda: cc.conv2d(x, w, stride=0))


def _pool_cases():
    x, w, b, dy = _inputs()
    yield "max_pool2d + backward", lambda: cc.max_pool2d_backward(
        *cc.max_pool2d(x, 3, 2, 1, return_indices=True), x.shape)
    yield "avg_pool2d + backward", lambda: cc.avg_pool2d_backward(
        cc.avg_pool2d(x, 3, 2, 1, ceil_mode=True), x.shape, 3, 2, 1, ceil_mode=True)
    yield "adaptive_avg_pool2d + backward", lambda: cc.adaptive_avg_pool2d_backward(
        cc.adaptive_avg_pool2d(x, (5, 3)), x.shape)
    # an error path that raises after something was allocated
    bad_idx = cc.max_pool2d(x, 2, return_indices=True)[1].copy()
    bad_idx[0, 0, 0, 0] = 10**6
    yield "max_pool2d_backward, index out of range (C refuses after dx exists)", _raises(
        ValueError, lambda: cc.max_pool2d_backward(np.ones(bad_idx.shape, np.float32),
                                                   bad_idx, x.shape))


def _norm_cases():
    x, w, b, dy = _inputs()
    xd, wd, bd, dyd = _inputs(np.float64)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    yield "batch_norm + backward, training", lambda: cc.batch_norm_backward(
        cc.batch_norm(x, rm, rv, b[:3], b[:3], training=True), x, None, None, b[:3],
        training=True)
    yield "batch_norm + backward f64, eval, view", lambda: cc.batch_norm_backward(
        cc.batch_norm(xd[..., ::-1], rm.astype(np.float64), rv.astype(np.float64)), xd,
        rm.astype(np.float64), rv.astype(np.float64))
    yield "relu + backward", lambda: cc.relu_backward(cc.relu(x), x)
    # an error path that raises after something was allocated
    e = np.empty(0)
    yield "binding: batch-norm workspace too short", _raises(
        ValueError, lambda: _norm.batch_norm_forward(
            xd.reshape(2, 3, -1), e, e, e, e, False, False, True, 1e-5, np.empty(3),
            np.empty((2, 3, 144)), np.empty(3), np.empty(3), 1))


# family -> its cases (name, call)
FAMILIES = {"conv": _conv_cases, "pool": _pool_cases, "norm": _norm_cases}


def cases():
    for family, family_cases in FAMILIES.items():
        for name, call in family_cases():
            yield f"{family}-{name}", call


CASES = list(cases())


def _growth(call, n):
    for _ in range(200):        # warm-up: caches, BLAS buffers, OpenMP pools
        call()
    before = rss_mb()
    for _ in range(n):
        call()
    return rss_mb() - before


def _check(name, call, n):
    grew = _growth(call, n)
    if grew >= LIMIT_MB:          # one retry: a late-arriving arena is not a leak
        grew = min(grew, _growth(call, n))
    print(f"\n{name}: {n} calls grew RSS by {grew:.2f} MB")
    assert grew < LIMIT_MB, f"{name}: RSS grew {grew:.2f} MB over {n} calls"


@pytest.mark.parametrize("name, call", CASES, ids=[c[0] for c in CASES])
def test_repeated_calls_do_not_grow_rss(name, call):
    _check(name, call, 500)


@pytest.mark.slow
@pytest.mark.parametrize("name, call", CASES, ids=[c[0] for c in CASES])
def test_ten_thousand_calls_do_not_grow_rss(name, call):
    _check(name, call, 10000)


def test_rss_probe_sees_a_real_leak():
    """The measurement can fail: keeping 1 KB per call is plainly visible."""
    kept = []
    grew = _growth(lambda: kept.append(np.ones(128)), 10000)
    assert grew > LIMIT_MB / 2
