"""Property tests: random shapes (0 and 1 included) and random options, valid or not.

Every property is checked against the independent oracles in tests/reference/.
The hypothesis profile (tests/conftest.py) is derandomized when CI is set.
Calls whose options are arbitrary (possibly huge, negative, wrong types) run in
a child Python (crashsafe.py), so a crash names its input instead of killing
the test run.
"""
import contextlib

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import convcore as cc  # noqa: E402
from crashsafe import run_cases  # noqa: E402
from reference.conv import (col2im_naive, conv2d_backward_naive, conv2d_naive,  # noqa: E402
                       im2col_naive, out_len)

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


@given(g=conv_geometry(), dtype=st.sampled_from(DTYPES), bias=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_conv2d_has_documented_shape_and_matches_reference(g, dtype, bias, seed):
    rng = np.random.default_rng(seed)
    x = make(rng, (g["N"], g["C"], g["H"], g["W"]), dtype)
    w = make(rng, (g["K"], g["C"] // g["groups"], g["KH"], g["KW"]), dtype)
    b = make(rng, (g["K"],), dtype) if bias else None
    y = cc.conv2d(x, w, b, g["stride"], g["padding"], g["dilation"], g["groups"])
    oh = out_len(g["H"], g["KH"], g["stride"][0], g["padding"][0], g["dilation"][0])
    ow = out_len(g["W"], g["KW"], g["stride"][1], g["padding"][1], g["dilation"][1])
    assert y.shape == (g["N"], g["K"], oh, ow)
    assert y.dtype == dtype
    ref = conv2d_naive(x, w, b, g["stride"], g["padding"], g["dilation"], g["groups"])
    if dtype == np.float64:
        np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    else:
        bound = conv2d_naive(np.abs(x), np.abs(w), None if b is None else np.abs(b),
                             g["stride"], g["padding"], g["dilation"], g["groups"])
        assert float32_bound_ok(y, ref, bound, 1 + w[0].size)


@given(g=conv_geometry(max_side=6), seed=st.integers(0, 2**32 - 1))
def test_conv2d_backward_matches_reference_and_adjoint_identities(g, seed):
    rng = np.random.default_rng(seed)
    x = make(rng, (g["N"], g["C"], g["H"], g["W"]), np.float64)
    w = make(rng, (g["K"], g["C"] // g["groups"], g["KH"], g["KW"]), np.float64)
    y = cc.conv2d(x, w, None, g["stride"], g["padding"], g["dilation"], g["groups"])
    dy = make(rng, y.shape, np.float64)
    gx, gw, gb = cc.conv2d_backward(dy, x, w, g["stride"], g["padding"], g["dilation"],
                                    g["groups"])
    rx, rw, rb = conv2d_backward_naive(dy, x, w, g["stride"], g["padding"],
                                       g["dilation"], g["groups"])
    np.testing.assert_allclose(gx, rx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, rw, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gb, rb, rtol=1e-12, atol=1e-12)
    # <conv(x, w), dy> = <x, dX(dy)> = <w, dW(dy)>
    lhs = np.vdot(y, dy)
    scale = 1 + np.vdot(np.abs(y), np.abs(dy))
    assert abs(lhs - np.vdot(x, gx)) <= 1e-12 * scale
    assert abs(lhs - np.vdot(w, gw)) <= 1e-12 * scale


@given(g=conv_geometry(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_im2col_matches_naive_and_col2im_is_its_adjoint(g, dtype, seed):
    rng = np.random.default_rng(seed)
    k, s, p, d = (g["KH"], g["KW"]), g["stride"], g["padding"], g["dilation"]
    x = make(rng, (g["N"], g["C"], g["H"], g["W"]), dtype)
    cols = cc.im2col(x, k, s, p, d)
    np.testing.assert_array_equal(cols, im2col_naive(x, k, s, p, d))
    c = make(rng, cols.shape, dtype)
    back = cc.col2im(c, (g["H"], g["W"]), k, s, p, d)
    ref = col2im_naive(c, (g["H"], g["W"]), k, s, p, d)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(back, ref, rtol=tol, atol=tol)
    x64 = make(rng, x.shape, np.float64)
    c64 = make(rng, cols.shape, np.float64)
    lhs = np.vdot(cc.im2col(x64, k, s, p, d), c64)
    rhs = np.vdot(x64, cc.col2im(c64, (g["H"], g["W"]), k, s, p, d))
    assert abs(lhs - rhs) <= 1e-12 * (1 + abs(lhs))


@given(g=conv_geometry(), dtype=st.sampled_from(DTYPES),
       layouts=st.tuples(*[st.sampled_from(["c", "fortran", "reversed", "strided",
                                             "transposed"])] * 3),
       seed=st.integers(0, 2**32 - 1))
def test_results_do_not_depend_on_memory_layout(g, dtype, layouts, seed):
    rng = np.random.default_rng(seed)
    x = make(rng, (g["N"], g["C"], g["H"], g["W"]), dtype)
    w = make(rng, (g["K"], g["C"] // g["groups"], g["KH"], g["KW"]), dtype)
    opts = (g["stride"], g["padding"], g["dilation"], g["groups"])
    y = cc.conv2d(x, w, None, *opts)
    dy = make(rng, y.shape, dtype)
    lx, lw, ldy = (relayout(a, how) for a, how in zip((x, w, dy), layouts))
    np.testing.assert_array_equal(cc.conv2d(lx, lw, None, *opts), y)
    for got, want in zip(cc.conv2d_backward(ldy, lx, lw, *opts),
                         cc.conv2d_backward(dy, x, w, *opts)):
        np.testing.assert_array_equal(got, want)


@contextlib.contextmanager
def threads_restored():
    n = cc.get_num_threads()
    try:
        yield
    finally:
        cc.set_num_threads(n)


@settings(max_examples=25)
@given(g=conv_geometry(max_side=9), dtype=st.sampled_from(DTYPES),
       threads=st.integers(2, 5), seed=st.integers(0, 2**32 - 1))
def test_results_do_not_depend_on_thread_count(g, dtype, threads, seed):
    with threads_restored():
        _thread_check(g, dtype, threads, seed)


def _thread_check(g, dtype, threads, seed):
    rng = np.random.default_rng(seed)
    x = make(rng, (g["N"] + 2, g["C"], g["H"], g["W"]), dtype)
    w = make(rng, (g["K"], g["C"] // g["groups"], g["KH"], g["KW"]), dtype)
    opts = (g["stride"], g["padding"], g["dilation"], g["groups"])
    cc.set_num_threads(1)
    y1 = cc.conv2d(x, w, None, *opts)
    dy = make(rng, y1.shape, dtype)
    b1 = cc.conv2d_backward(dy, x, w, *opts)
    c1 = cc.col2im(cc.im2col(x, (g["KH"], g["KW"]), *opts[:3]), (g["H"], g["W"]),
                   (g["KH"], g["KW"]), *opts[:3])
    cc.set_num_threads(threads)
    np.testing.assert_array_equal(cc.conv2d(x, w, None, *opts), y1)
    for got, want in zip(cc.conv2d_backward(dy, x, w, *opts), b1):
        np.testing.assert_array_equal(got, want)
    c2 = cc.col2im(cc.im2col(x, (g["KH"], g["KW"]), *opts[:3]), (g["H"], g["W"]),
                   (g["KH"], g["KW"]), *opts[:3])
    np.testing.assert_array_equal(c2, c1)


# ---- pooling -------------------------------------------------------------------

from reference.pool import (adaptive_avg_backward_naive, adaptive_avg_naive,  # noqa: E402
                            avg_pool_naive, max_pool_backward_naive, max_pool_naive,
                            pool_out)


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


@given(g=pool_geometry(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1),
       threads=st.integers(1, 4))
def test_max_pool_has_documented_shape_and_matches_reference(g, dtype, seed, threads):
    rng = np.random.default_rng(seed)
    x = make(rng, (g["N"], g["C"], g["H"], g["W"]), dtype)
    if g["N"] and rng.random() < 0.3:
        x[x > 1.0] = np.nan          # NaN wins its window
    args = (g["k"], g["s"], g["p"], g["d"], g["ceil"])
    oh = pool_out(g["H"], g["k"][0], g["s"][0], g["p"][0], g["d"][0], g["ceil"])
    ow = pool_out(g["W"], g["k"][1], g["s"][1], g["p"][1], g["d"][1], g["ceil"])
    with threads_restored():
        cc.set_num_threads(threads)
        y, idx = cc.max_pool2d(x, *args, return_indices=True)
        dy = make(rng, y.shape, dtype)
        dx = cc.max_pool2d_backward(dy, idx, x.shape)
    assert y.shape == idx.shape == (g["N"], g["C"], oh, ow)
    ry, ridx = max_pool_naive(x, *args)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_array_equal(dx, max_pool_backward_naive(dy, idx, x.shape))


@given(g=pool_geometry(), seed=st.integers(0, 2**32 - 1), cip=st.booleans(),
       div=st.sampled_from([None, 1, 5]), threads=st.integers(1, 4))
def test_avg_pool_matches_reference_and_its_backward_is_the_adjoint(g, seed, cip, div,
                                                                    threads):
    rng = np.random.default_rng(seed)
    x = make(rng, (g["N"], g["C"], g["H"], g["W"]), np.float64)
    kw = dict(kernel_size=g["k"], stride=g["s"], padding=g["p"], ceil_mode=g["ceil"],
              count_include_pad=cip, divisor_override=div)
    with threads_restored():
        cc.set_num_threads(threads)
        y = cc.avg_pool2d(x, **kw)
        dy = make(rng, y.shape, np.float64)
        dx = cc.avg_pool2d_backward(dy, x.shape, **kw)
    ref = avg_pool_naive(x, g["k"], g["s"], g["p"], g["ceil"], cip, div)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    assert abs(np.vdot(y, dy) - np.vdot(x, dx)) <= 1e-12 * (1 + np.vdot(abs(y), abs(dy)))


@given(n=st.integers(0, 2), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       oh=st.integers(1, 10), ow=st.integers(1, 10), seed=st.integers(0, 2**32 - 1))
def test_adaptive_avg_pool_matches_reference(n, c, h, w, oh, ow, seed):
    rng = np.random.default_rng(seed)
    x = make(rng, (n, c, h, w), np.float64)
    y = cc.adaptive_avg_pool2d(x, (oh, ow))
    np.testing.assert_allclose(y, adaptive_avg_naive(x, oh, ow), rtol=1e-12, atol=1e-12)
    dy = make(rng, y.shape, np.float64)
    np.testing.assert_allclose(cc.adaptive_avg_pool2d_backward(dy, x.shape),
                               adaptive_avg_backward_naive(dy, x.shape), rtol=1e-12,
                               atol=1e-12)


# ---- arbitrary (mostly invalid) options, run in a child Python ------------------

EXTREME = [0, -1, -(2**31), 2**31 - 1, 2**31, 2**32 + 1, 2**62, 2**63 - 1, 2**63, 2**64]
small_int = st.integers(-1, 4)
odd_value = st.one_of(st.sampled_from(EXTREME), st.booleans(), st.floats(-3, 3),
                      st.just(None), st.just("same"), st.just("valid"), st.just("x"),
                      st.lists(st.integers(-1, 3), min_size=0, max_size=3))


def option():
    """Mostly small valid ints/pairs, sometimes something odd."""
    return st.one_of(small_int, st.lists(small_int, min_size=2, max_size=2), odd_value)


def option_weights():
    return st.one_of(st.integers(1, 3), st.integers(1, 3), option())


dim = st.integers(0, 5)
shape4 = st.lists(dim, min_size=4, max_size=4)
any_shape = st.one_of(shape4, shape4, st.lists(dim, min_size=2, max_size=5))
dtype_name = st.sampled_from(["float64", "float32", "float32", "float64", "float16",
                              "int64", "complex128", "bool"])
pattern = st.sampled_from(["normal", "normal", "nan", "inf", "tiny"])
layout = st.sampled_from(["c", "fortran", "reversed", "strided", "readonly"])


MUTATIONS = {
    "x": any_shape, "w": any_shape, "dy": any_shape, "cols": any_shape,
    "bias": st.one_of(st.lists(dim, min_size=0, max_size=2), st.just([])),
    "dtype": dtype_name, "wdtype": dtype_name, "bdtype": dtype_name,
    "stride": option(), "padding": st.one_of(option(), st.just("same")),
    "dilation": option(), "groups": option(), "kernel_size": option(),
    "output_size": option(),
}


def mutated(draw, case, fields):
    """The case with 0, 1 or 2 of its fields replaced by something arbitrary."""
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
        f = draw(st.sampled_from(fields))
        case[f] = draw(MUTATIONS[f])
    return case


@st.composite
def conv_case(draw):
    g = draw(conv_geometry(max_side=5))
    dt = draw(st.sampled_from(["float64", "float32"]))
    x = [g["N"], g["C"], g["H"], g["W"]]
    if draw(st.booleans()):
        x = x[1:]  # unbatched
    pad = list(g["padding"])
    if g["stride"] == (1, 1) and draw(st.booleans()):
        pad = draw(st.sampled_from(["same", "valid"]))
    case = dict(op=draw(st.sampled_from(["conv2d", "conv2d", "conv2d_backward"])), x=x,
                w=[g["K"], g["C"] // g["groups"], g["KH"], g["KW"]], dtype=dt, wdtype=dt,
                bdtype=dt, bias=draw(st.sampled_from([None, [g["K"]]])),
                stride=list(g["stride"]), padding=pad, dilation=list(g["dilation"]),
                groups=g["groups"], dy=draw(any_shape), layout=draw(layout),
                pattern=draw(pattern), seed=draw(st.integers(0, 2**31)))
    return mutated(draw, case, ["x", "w", "bias", "dtype", "wdtype", "bdtype", "stride",
                                "padding", "dilation", "groups"])


@st.composite
def unfold_case(draw):
    g = draw(conv_geometry(max_side=5))
    dt = draw(st.sampled_from(["float64", "float32"]))
    opts = dict(kernel_size=[g["KH"], g["KW"]], stride=list(g["stride"]),
                padding=list(g["padding"]), dilation=list(g["dilation"]), dtype=dt,
                layout=draw(layout), pattern=draw(pattern), seed=draw(st.integers(0, 2**31)))
    fields = ["kernel_size", "stride", "padding", "dilation", "dtype"]
    if draw(st.booleans()):
        x = [g["N"], g["C"], g["H"], g["W"]]
        return mutated(draw, dict(op="im2col", x=x if draw(st.booleans()) else x[1:],
                                  **opts), fields + ["x"])
    oh = out_len(g["H"], g["KH"], g["stride"][0], g["padding"][0], g["dilation"][0])
    ow = out_len(g["W"], g["KW"], g["stride"][1], g["padding"][1], g["dilation"][1])
    cols = [g["N"], g["C"] * g["KH"] * g["KW"], oh * ow]
    return mutated(draw, dict(op="col2im", cols=cols if draw(st.booleans()) else cols[1:],
                              output_size=[g["H"], g["W"]], **opts),
                   fields + ["cols", "output_size"])


@st.composite
def pool_case(draw):
    """Mostly valid pooling arguments, sometimes mutated into anything."""
    x = draw(st.sampled_from([[1, 2, 7, 6], [2, 1, 5, 9], [3, 4, 4], [0, 2, 6, 6],
                              [1, 1, 1, 1], [1, 3, 3, 8]]))
    k = [draw(st.integers(1, 4)), draw(st.integers(1, 4))]
    op = draw(st.sampled_from(["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"]))
    case = dict(op=op, x=x, dtype=draw(st.sampled_from(["float64", "float32"])),
                kernel_size=k, stride=draw(st.one_of(st.none(), st.integers(1, 3))),
                padding=[draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2))],
                dilation=draw(st.sampled_from([1, 1, 2, [1, 2]])),
                ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()),
                divisor_override=draw(st.sampled_from([None, None, 1, 3])),
                output_size=draw(st.one_of(st.integers(1, 5),
                                           st.lists(st.one_of(st.none(), st.integers(1, 6)),
                                                    min_size=2, max_size=2))),
                layout=draw(layout), pattern=draw(st.sampled_from(
                    ["normal", "nan", "inf", "tiny", "normal"])),
                seed=draw(st.integers(0, 2**31)))
    MUTATIONS.setdefault("ceil_mode", st.one_of(st.booleans(), st.just(1), st.just(None),
                                                st.just("yes")))
    MUTATIONS.setdefault("count_include_pad", MUTATIONS["ceil_mode"])
    MUTATIONS.setdefault("divisor_override", option())
    return mutated(draw, case, ["x", "dtype", "kernel_size", "stride", "padding", "dilation",
                                "ceil_mode", "count_include_pad", "divisor_override",
                                "output_size"])


# The child names each failing case itself: no shrinking (each step is a new child).
@settings(max_examples=12, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(cases=st.lists(st.one_of(conv_case(), unfold_case(), pool_case()), min_size=40,
                      max_size=60))
def test_arbitrary_options_give_documented_result_or_value_type_error(cases):
    run_cases(cases)


def test_crash_in_child_fails_the_test_naming_the_input():
    # (under the sanitizers ASan catches the signal and exits with 1 instead)
    with pytest.raises(pytest.fail.Exception, match=r"(killed by signal SIGSEGV|exited "
                       r"with 1) while running case \{\"op\": \"_selftest_crash\", \"tag\": 7\}"):
        run_cases([{"op": "conv2d_backward", "x": [1, 1, 2, 2], "w": [1, 1, 1, 1],
                    "dtype": "float64", "stride": 1, "padding": 0, "dilation": 1,
                    "groups": 1}, {"op": "_selftest_crash", "tag": 7}],
                  env={"PYTHONFAULTHANDLER": ""})


def test_broken_contract_in_child_fails_the_test_naming_the_input():
    with pytest.raises(pytest.fail.Exception, match="deliberately wrong"):
        run_cases([{"op": "_selftest_wrong"}])


# ---- corrupted weight and data files: loading gives the data or a ValueError ------

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


@pytest.fixture(scope="module")
def weight_file_bytes(tmp_path_factory):
    nn = pytest.importorskip("convcore.nn")
    conv = nn.Conv2d(3, 4, 3, rng=0)
    path = str(tmp_path_factory.mktemp("w") / "w.npz")
    nn.save_state_dict(conv.state_dict(), path)
    return open(path, "rb").read(), {k: v.copy() for k, v in conv.state_dict().items()}


@given(e=edits)
def test_corrupted_weights_file_loads_or_raises_value_error(weight_file_bytes, e, tmp_path_factory):
    from convcore.nn import load_state_dict_file
    raw, expected = weight_file_bytes
    path = str(tmp_path_factory.getbasetemp() / "corrupt.npz")
    with open(path, "wb") as f:
        f.write(_corrupt(raw, e))
    try:
        out = load_state_dict_file(path, expected)
    except ValueError:
        return
    assert set(out) == set(expected)
    for k in expected:
        assert out[k].shape == expected[k].shape and out[k].dtype == expected[k].dtype


@pytest.fixture(scope="module")
def data_file_bytes():
    pytest.importorskip("convcore.data")
    import gzip
    import pickle
    import struct
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 6, 7)).astype(np.uint8)
    labels = np.array([0, 9, 3, 3, 1], np.uint8)

    def idx(a):
        return bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
    batch = {b"data": rng.integers(0, 256, (3, 3072)).astype(np.uint8),
             b"labels": [1, 2, 3], b"batch_label": b"x"}
    return {"images": idx(images), "images.gz": gzip.compress(idx(images), mtime=0),
            "labels": idx(labels), "labels.gz": gzip.compress(idx(labels), mtime=0),
            "cifar-bin": bytes(rng.integers(0, 10, 3 * 3073).astype(np.uint8)),
            "cifar-py": pickle.dumps(batch, protocol=2)}


@given(which=st.sampled_from(["images", "images.gz", "labels", "labels.gz", "cifar-bin",
                              "cifar-py"]), e=edits)
def test_corrupted_data_files_load_or_raise_value_error(data_file_bytes, which, e,
                                                        tmp_path_factory):
    from convcore import data
    d = tmp_path_factory.getbasetemp()
    good = {k: str(d / f"good-{k}") for k in data_file_bytes}
    for k, p in good.items():
        with open(p, "wb") as f:
            f.write(data_file_bytes[k])
    bad = str(d / f"bad-{which}")
    with open(bad, "wb") as f:
        f.write(_corrupt(data_file_bytes[which], e))
    try:
        if which.startswith("images"):
            data.read_idx_pair(bad, good["labels"])
        elif which.startswith("labels"):
            data.read_idx_pair(good["images"], bad)
        elif which == "cifar-bin":
            data.read_cifar_binary(bad)
        else:
            data.read_cifar_python(bad)
    except ValueError:
        pass
