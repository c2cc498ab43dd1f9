"""The edge-case catalogue (docs/contributing.rst), layer and weight-file rows.

Each test names the row it covers and checks the exact behaviour the catalog
asks for (VE = ValueError, TE = TypeError, messages naming expected and given).
"""
import numpy as np
import pytest

from _synthetic import Boom as _Boom


@pytest.fixture
def nn():
    return pytest.importorskip("convcore.nn")


@pytest.mark.parametrize("kwargs, exc", [
    (dict(out_channels=0), ValueError), (dict(out_channels=-2), ValueError),
    (dict(in_channels=0), ValueError),
    (dict(kernel_size=0), ValueError), (dict(kernel_size=-1), ValueError),
    (dict(kernel_size=2.5), TypeError), (dict(kernel_size=True), TypeError),
    (dict(kernel_size=(3, 3, 3)), ValueError), (dict(kernel_size="3"), TypeError),
    (dict(stride=0), ValueError), (dict(padding=-1), ValueError),
    (dict(groups=2), ValueError), (dict(out_channels=2.0), TypeError),
])
def test_layers_row_conv2d_constructor_refuses_bad_arguments(nn, kwargs, exc):
    args = dict(in_channels=3, out_channels=4, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(exc):
        nn.Conv2d(**args)


def test_layers_row_numpy_integers_are_accepted(nn):
    conv = nn.Conv2d(np.int64(3), np.int32(4), (np.int16(3), np.uint8(2)), stride=np.int64(2),
                     padding=np.int64(1))
    assert conv.weight.data.shape == (4, 3, 3, 2)
    assert conv(np.zeros((1, 3, 6, 6), np.float32)).shape == (1, 4, 3, 4)


def _module_cases(nn):
    yield "Conv2d", nn.Conv2d(3, 4, 3, padding=1, rng=0), (2, 3, 6, 6)
    yield "Linear", nn.Linear(5, 3, rng=0), (2, 5)
    yield "MaxPool2d", nn.MaxPool2d(2), (2, 3, 6, 6)
    yield "AvgPool2d", nn.AvgPool2d(3, 2, 1), (2, 3, 6, 6)
    yield "AdaptiveAvgPool2d", nn.AdaptiveAvgPool2d(2), (2, 3, 6, 6)
    yield "ReLU", nn.ReLU(), (2, 3, 4)
    yield "BatchNorm2d", nn.BatchNorm2d(3), (2, 3, 4, 4)
    yield "Sequential", nn.Sequential(nn.Conv2d(3, 4, 3, rng=1), nn.ReLU(), nn.Flatten(),
                                      nn.Linear(4 * 4 * 4, 2, rng=2)), (2, 3, 6, 6)


def test_layers_row_backward_before_forward_is_runtime_error(nn):
    for name, module, shape in _module_cases(nn):
        with pytest.raises(RuntimeError, match="before forward"):
            module.backward(np.ones(shape, np.float32))


def test_layers_row_backward_twice_after_one_forward_gives_identical_results(nn):
    rng = np.random.default_rng(0)
    for name, module, shape in _module_cases(nn):
        x = rng.standard_normal(shape).astype(np.float32)
        y = module(x)
        g = rng.standard_normal(y.shape).astype(np.float32)
        grads0 = {k: p.grad.copy() for k, p in module.named_parameters()}
        g1 = module.backward(g)
        grads1 = {k: p.grad.copy() for k, p in module.named_parameters()}
        g2 = module.backward(g)
        np.testing.assert_array_equal(g1, g2, err_msg=name)
        for k, p in module.named_parameters():   # the same increment, accumulated (+=)
            np.testing.assert_array_equal(p.grad - grads1[k], grads1[k] - grads0[k],
                                          err_msg=f"{name}.{k}")


def test_weights_row_object_array_is_value_error_and_never_unpickled(nn, tmp_path):
    marker = tmp_path / "ran"
    path = str(tmp_path / "evil.npz")
    obj = np.empty(1, dtype=object)
    obj[0] = _Boom(str(marker))
    np.savez(path, weight=obj)              # the plain writer pickles object arrays
    with pytest.raises(ValueError, match="object array"):
        nn.load_state_dict_file(path, {"weight": np.zeros(1)})
    with pytest.raises(ValueError):
        nn.save_state_dict({"weight": obj}, str(tmp_path / "out.npz"))
    assert not marker.exists()


def _npz_with_header(path, key, shape, dtype="<f4", payload=b"\0" * 64):
    """An .npz whose member's header claims `shape`, followed by `payload` bytes."""
    import zipfile
    header = {"descr": dtype, "fortran_order": False, "shape": tuple(shape)}
    from numpy.lib import format as npformat
    import io
    buf = io.BytesIO()
    npformat.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(key + ".npy", buf.getvalue() + payload)


@pytest.mark.parametrize("shape", [(2**40, 2**20), (2**31, 8), (4, 2**62), (3, 3, 3, 3)])
def test_weights_row_header_claiming_a_huge_shape_is_value_error_before_allocating(
        nn, tmp_path, shape):
    import tracemalloc
    path = str(tmp_path / "huge.npz")
    _npz_with_header(path, "weight", shape)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="weight"):
            nn.load_state_dict_file(path, {"weight": np.zeros((8, 3, 3, 3), np.float32)})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20


def test_weights_row_header_matching_but_member_short_is_value_error(nn, tmp_path):
    path = str(tmp_path / "short.npz")
    _npz_with_header(path, "weight", (8, 3, 3, 3), payload=b"\0" * 100)   # needs 864
    with pytest.raises(ValueError, match="truncated"):
        nn.load_state_dict_file(path, {"weight": np.zeros((8, 3, 3, 3), np.float32)})


def test_weights_row_truncated_file_is_value_error_naming_the_file(nn, tmp_path):
    conv = nn.Conv2d(3, 8, 3, rng=0)
    path = str(tmp_path / "w.npz")
    nn.save_state_dict(conv.state_dict(), path)
    raw = open(path, "rb").read()
    for cut in (0, 10, len(raw) // 3, len(raw) // 2, len(raw) - 30, len(raw) - 1):
        bad = str(tmp_path / f"cut{cut}.npz")
        with open(bad, "wb") as f:
            f.write(raw[:cut])
        with pytest.raises(ValueError, match=f"cut{cut}.npz"):
            nn.load_state_dict_file(bad, conv.state_dict())


def test_weights_row_missing_extra_wrong_keys_listed_in_one_value_error(nn, tmp_path):
    conv = nn.Conv2d(3, 8, 3, rng=0)
    expected = conv.state_dict()
    path = str(tmp_path / "mixed.npz")
    nn.save_state_dict({"weight": np.zeros((8, 3, 5, 5), np.float32),       # wrong shape
                        "extra.thing": np.zeros(2, np.float32)}, path)      # extra; bias missing
    with pytest.raises(ValueError) as err:
        nn.load_state_dict_file(path, expected)
    msg = str(err.value)
    assert "weight" in msg and "bias" in msg and "extra.thing" in msg
    nn.save_state_dict({"weight": expected["weight"].astype(np.float64),
                        "bias": expected["bias"].astype(np.float64)}, path)
    with pytest.raises(ValueError) as err:
        nn.load_state_dict_file(path, expected)
    assert "weight" in str(err.value) and "bias" in str(err.value)
    with pytest.raises(ValueError) as err:
        conv.load_state_dict({"weight": np.zeros((8, 3, 3, 3), np.float64)})
    assert "weight" in str(err.value) and "bias" in str(err.value)
