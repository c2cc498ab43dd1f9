"""Weights on disk: .npz without pickle, validated before allocation,
atomic writes (the edge-case catalogue's file rows, docs/contributing.rst)."""
import io
import os
import zipfile

import numpy as np
import pytest
from numpy.lib import format as npformat

from convcore import models, nn


def _net(seed=0):
    return nn.Sequential(nn.Conv2d(1, 2, 3, rng=seed), nn.BatchNorm2d(2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8, 3, rng=seed))


def _member(name, header, payload):
    buf = io.BytesIO()
    npformat.write_array_header_1_0(buf, header)
    return name, buf.getvalue() + payload


def _write_zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)


def test_save_load_round_trip_restores_parameters_and_buffers(tmp_path):
    a = _net(0)
    a(np.random.default_rng(0).standard_normal((4, 1, 4, 4)).astype(np.float32))  # stats
    p = tmp_path / "w.npz"
    a.save(p)
    b = _net(1).load(p)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_array_equal(v, w, err_msg=k)
        assert v.dtype == w.dtype
    assert int(b[1].num_batches_tracked) == 1
    assert sorted(os.listdir(tmp_path)) == ["w.npz"]  # no temporary file left


def test_lenet5_weights_round_trip(tmp_path):
    a, b = models.lenet5(rng=0), models.lenet5(rng=1)
    a.save(tmp_path / "lenet.npz")
    b.load(tmp_path / "lenet.npz")
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(a(x), b(x))


def test_failed_save_leaves_the_old_file_untouched(tmp_path):
    p = tmp_path / "w.npz"
    _net(0).save(p)
    before = p.read_bytes()
    with pytest.raises(ValueError, match="object"):
        nn.save_state_dict({"bad": np.array([object()], dtype=object)}, p)
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["w.npz"]


def test_object_array_in_file_is_refused_without_unpickling(tmp_path):
    p = tmp_path / "w.npz"
    sd = {k: v.copy() for k, v in _net().state_dict().items()}
    sd["0.bias"] = np.array([1, "x"], dtype=object)
    np.savez(p, **sd)
    with pytest.raises(ValueError, match="object array"):
        _net().load(p)


def test_header_claiming_a_huge_shape_is_refused_before_allocating(tmp_path):
    p = tmp_path / "w.npz"
    sd = _net().state_dict()
    members = []
    for k, v in sd.items():
        if k == "4.weight":
            members.append(_member(k + ".npy", {"descr": "<f4", "fortran_order": False,
                                                "shape": (2**40, 2**20)}, b"\0" * 16))
        else:
            buf = io.BytesIO()
            np.save(buf, v)
            members.append((k + ".npy", buf.getvalue()))
    _write_zip(p, members)
    with pytest.raises(ValueError, match=r"'4.weight': expected shape \(3, 8\)"):
        _net().load(p)


def test_member_shorter_than_its_header_is_refused(tmp_path):
    p = tmp_path / "w.npz"
    members = []
    for k, v in _net().state_dict().items():
        buf = io.BytesIO()
        np.save(buf, v)
        data = buf.getvalue()
        members.append((k + ".npy", data[:-8] if k == "4.weight" else data))
    _write_zip(p, members)
    with pytest.raises(ValueError, match="4.weight.*truncated"):
        _net().load(p)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.1])
def test_truncated_file_is_a_value_error_naming_the_file(tmp_path, keep):
    p = tmp_path / "w.npz"
    _net().save(p)
    data = p.read_bytes()
    p.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ValueError, match="w.npz"):
        _net().load(p)


def test_missing_extra_wrong_shape_and_dtype_keys_are_all_listed(tmp_path):
    p = tmp_path / "w.npz"
    sd = {k: v.copy() for k, v in _net().state_dict().items()}
    del sd["0.weight"]
    sd["surplus"] = np.zeros(3)
    sd["4.weight"] = np.zeros((8, 3), np.float32)
    sd["1.running_var"] = sd["1.running_var"].astype(np.float64)
    np.savez(p, **sd)
    with pytest.raises(ValueError) as e:
        _net().load(p)
    msg = str(e.value)
    assert "w.npz" in msg
    for key in ("'0.weight'", "'surplus'", "'4.weight'", "'1.running_var'"):
        assert key in msg, key


def test_load_does_not_change_the_module_when_the_file_is_bad(tmp_path):
    p = tmp_path / "w.npz"
    sd = {k: v.copy() + 1 for k, v in _net().state_dict().items()}
    sd["4.bias"] = np.zeros(4, np.float32)
    np.savez(p, **sd)
    net = _net()
    before = {k: v.copy() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError):
        net.load(p)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_not_a_zip_file(tmp_path):
    p = tmp_path / "w.npz"
    p.write_bytes(b"\x93NUMPY not a zip")
    with pytest.raises(ValueError, match="w.npz"):
        _net().load(p)
