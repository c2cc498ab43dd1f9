"""Arbitrary (mostly invalid) options for every op family (conv2d and its
backward, im2col/col2im, the pools), each batch run in a child Python
(crashsafe.py), so a crash names its input instead of killing the test run.
Each case gives the documented result (checked in fuzz_cases.py against
tests/reference/) or a ValueError/TypeError.
"""
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from _draw import conv_geometry  # noqa: E402
from crashsafe import run_cases  # noqa: E402
from reference.conv import out_len  # noqa: E402

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
