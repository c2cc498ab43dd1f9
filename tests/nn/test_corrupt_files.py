"""Corrupted weight files (bytes flipped, set, truncated, inserted, deleted):
loading gives the saved parameters or a ValueError, never a crash or a wrong shape.
"""
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402

from _draw import _corrupt, edits  # noqa: E402


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
