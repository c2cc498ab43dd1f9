"""Hypothesis strategies and array helpers shared by the property tests of
several families (conv, pool, every_op, nn, data).  Import it after
``pytest.importorskip("hypothesis")``."""
import contextlib

import hypothesis
import numpy as np
from hypothesis import strategies as st

import convcore as cc
from reference.pool import pool_out

DTYPES = [np.float32, np.float64]


@st.composite
def conv_geometry(draw, max_side=7):
    """A geometry that the documentation allows (sizes 1 and N = 0 included)."""
    groups = draw(st.integers(1, 3))
    cg = draw(st.integers(1, 2))
    kg = draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    # the padded input must hold one dilated kernel
    hmin = max(1, dh * (kh - 1) + 1 - 2 * ph)
    wmin = max(1, dw * (kw - 1) + 1 - 2 * pw)
    h = draw(st.integers(hmin, max(hmin, max_side)))
    w = draw(st.integers(wmin, max(wmin, max_side)))
    n = draw(st.integers(0, 2))
    return dict(N=n, C=cg * groups, H=h, W=w, K=kg * groups, KH=kh, KW=kw,
                stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=groups)


def make(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def relayout(a, how):
    """The same values in another memory layout."""
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "reversed":
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    if how == "strided":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1] + 1,), dtype=a.dtype)
        big[..., 1::2] = a
        return big[..., 1::2]
    if how == "transposed":
        return np.ascontiguousarray(a.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    return a


def float32_bound_ok(y, ref, bound, k):
    y = np.asarray(y, np.float64)
    return np.all(np.abs(y - ref) <= 2 * k * 2.0**-24 * bound + 1e-30)


@contextlib.contextmanager
def threads_restored():
    n = cc.get_num_threads()
    try:
        yield
    finally:
        cc.set_num_threads(n)


@st.composite
def pool_geometry(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 8))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 8))
    g = dict(N=draw(st.integers(0, 2)), C=draw(st.integers(1, 3)), H=h, W=w,
             k=(kh, kw), s=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
             p=(ph, pw), d=(dh, dw), ceil=draw(st.booleans()))
    # documented: every max-pool window must hold an input element (else ValueError)
    for size, k, s_, p_, d in zip((h, w), g["k"], g["s"], g["p"], g["d"]):
        for o in range(pool_out(size, k, s_, p_, d, g["ceil"])):
            hypothesis.assume(any(0 <= o * s_ - p_ + t * d < size for t in range(k)))
    return g


def _corrupt(raw: bytes, edits):
    b = bytearray(raw)
    for kind, pos, val in edits:
        if not b:
            break
        pos %= len(b)
        if kind == "flip":
            b[pos] ^= 1 + val % 255
        elif kind == "set":
            b[pos] = val % 256
        elif kind == "truncate":
            del b[pos:]
        elif kind == "insert":
            b[pos:pos] = bytes([val % 256]) * (1 + val % 7)
        elif kind == "delete":
            del b[pos:pos + 1 + val % 9]
    return bytes(b)


edits = st.lists(st.tuples(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]),
                           st.integers(0, 2**20), st.integers(0, 2**16)), min_size=1,
                 max_size=4)
