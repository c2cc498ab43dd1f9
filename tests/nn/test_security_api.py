"""Uniform argument errors across the public API: ``None`` where an array
belongs is a TypeError in every functional op, mixed float dtypes are refused,
thread counts are bounded, and gradcheck says what it needs."""
import inspect

import numpy as np
import pytest

import convcore as cc
import convcore.functional as F
from convcore import _config

f4 = np.float32


def _valid_calls():
    """One valid positional call of every functional op (arrays first)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6)).astype(f4)
    w = rng.standard_normal((4, 3, 3, 3)).astype(f4)
    y = F.conv2d(x, w)
    p, idx = F.max_pool2d(x, 2, return_indices=True)
    cols = F.im2col(x, 3)
    a = rng.standard_normal((5, 3)).astype(f4)
    lw = rng.standard_normal((2, 3)).astype(f4)
    t = np.array([0, 1, 2, 0, 1])
    m = np.ones(3, f4)
    _, mask = F.dropout(x, 0.5, rng=0, return_mask=True)
    sm = F.softmax(a)
    wt = rng.standard_normal((3, 4, 3, 3)).astype(f4)        # (C_in, C_out, KH, KW)
    yt = F.conv_transpose2d(x, wt)
    _, mask2 = F.dropout2d(x, 0.5, rng=0, return_mask=True)
    up = F.interpolate(x, scale_factor=2)
    return {
        "conv_transpose2d": (x, wt),
        "conv_transpose2d_backward": (yt, x, wt),
        "tanh": (x,),
        "tanh_backward": (x, F.tanh(x)),
        "sigmoid": (x,),
        "sigmoid_backward": (x, F.sigmoid(x)),
        "leaky_relu": (x,),
        "leaky_relu_backward": (x, x),
        "dropout2d": (x,),
        "dropout2d_backward": (x, mask2),
        "interpolate": (x, None, 2),
        "interpolate_backward": (up, x.shape, None, 2),
        "conv2d": (x, w),
        "conv2d_backward": (y, x, w),
        "im2col": (x, 3),
        "col2im": (cols, (6, 6), 3),
        "max_pool2d": (x, 2),
        "max_pool2d_backward": (p, idx, x.shape),
        "avg_pool2d": (x, 2),
        "avg_pool2d_backward": (p, x.shape, 2),
        "adaptive_avg_pool2d": (x, 2),
        "adaptive_avg_pool2d_backward": (p[..., :2, :2], x.shape),
        "linear": (a, lw),
        "linear_backward": (np.ones((5, 2), f4), a, lw),
        "relu": (x,),
        "relu_backward": (x, x),
        "batch_norm": (x, m, m),
        "batch_norm_backward": (x, x, m, m),
        "local_response_norm": (x, 2),
        "local_response_norm_backward": (x, x, 2),
        "dropout": (x,),
        "dropout_backward": (x, mask),
        "softmax": (a,),
        "softmax_backward": (a, sm),
        "log_softmax": (a,),
        "log_softmax_backward": (a, np.log(sm)),
        "cross_entropy": (a, t),
        "cross_entropy_backward": (a, t),
    }


CALLS = _valid_calls()
OPS = [n for n in F.__all__ if not n.startswith(("set_", "get_"))]


def test_every_functional_op_is_in_the_table():
    assert sorted(OPS) == sorted(CALLS)


@pytest.mark.parametrize("name", OPS)
def test_valid_call_runs(name):
    getattr(F, name)(*CALLS[name])


def _array_slots(name):
    """Positions of the required (no default) array arguments."""
    params = list(inspect.signature(getattr(F, name)).parameters.values())
    return [i for i, v in enumerate(CALLS[name])
            if isinstance(v, np.ndarray) and params[i].default is inspect.Parameter.empty
            and (name, params[i].name) not in (("dropout_backward", "mask"),
                                               ("dropout2d_backward", "mask"))]  # None: identity


@pytest.mark.parametrize("name, slot", [(n, i) for n in OPS for i in _array_slots(n)])
def test_none_for_an_array_is_a_type_error(name, slot):
    args = list(CALLS[name])
    args[slot] = None
    with pytest.raises(TypeError, match="None"):
        getattr(F, name)(*args)


@pytest.mark.parametrize("name", ["softmax_backward", "log_softmax_backward"])
@pytest.mark.parametrize("slot", [0, 1])
def test_mixed_float_dtypes_are_refused(name, slot):
    args = list(CALLS[name])
    args[slot] = args[slot].astype(np.float64)
    with pytest.raises(TypeError, match="dtype"):
        getattr(F, name)(*args)


def test_float64_batch_into_a_float32_layer_suggests_astype():
    conv = cc.nn.Conv2d(3, 4, 3, rng=0)
    with pytest.raises(TypeError, match=r"astype\(np\.float32\)"):
        conv(np.zeros((1, 3, 8, 8)))


@pytest.mark.parametrize("n", [0, -1, _config.MAX_THREADS + 1, 2**40])
def test_set_num_threads_is_bounded(n):
    with pytest.raises(ValueError, match="n must be"):
        cc.set_num_threads(n)


@pytest.mark.parametrize("n", [1.5, "2", None, True])
def test_set_num_threads_wants_an_int(n):
    with pytest.raises(TypeError):
        cc.set_num_threads(n)


def test_set_num_threads_accepts_the_maximum():
    old = cc.get_num_threads()
    try:
        cc.set_num_threads(np.int64(_config.MAX_THREADS))
        assert cc.get_num_threads() == _config.MAX_THREADS
    finally:
        cc.set_num_threads(old)


@pytest.mark.parametrize("value", ["1099511627776", "0", "-3", "two", "1e3"])
def test_bad_thread_environment_variable_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv("CONVCORE_NUM_THREADS", value)
    with pytest.raises(ValueError, match="CONVCORE_NUM_THREADS"):
        _config._default_threads()


def test_thread_environment_variable_in_range_is_used(monkeypatch):
    monkeypatch.setenv("CONVCORE_NUM_THREADS", "3")
    assert _config._default_threads() == 3


def test_workspace_limit_is_bounded():
    with pytest.raises(ValueError):
        cc.set_workspace_limit(2**70)


def test_gradcheck_with_a_plain_function_says_what_it_needs():
    with pytest.raises(TypeError, match="backward"):
        cc.gradcheck(lambda x: x, np.ones(3))
