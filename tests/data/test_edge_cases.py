"""The edge-case catalogue (docs/contributing.rst), data-file rows.

Each test names the row it covers and checks the exact behaviour the catalog
asks for (VE = ValueError, TE = TypeError, messages naming expected and given).
"""
import os
import sys

import numpy as np
import pytest

from _synthetic import Boom as _Boom


@pytest.fixture
def data():
    return pytest.importorskip("convcore.data")


def _idx(arr, magic_type=0x08):
    import struct
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return bytes([0, 0, magic_type, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) \
        + arr.tobytes()


def _write(path, payload, gz=False):
    import gzip
    with open(path, "wb") as f:
        f.write(gzip.compress(payload, mtime=0) if gz else payload)
    return str(path)


@pytest.fixture
def idx_pair(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 4, 5)).astype(np.uint8)
    labels = np.array([0, 3, 9, 1, 1, 2], np.uint8)
    return images, labels


def test_data_row_idx_wrong_magic_is_value_error_even_under_python_O(data, tmp_path, idx_pair):
    images, labels = idx_pair
    lab = _write(tmp_path / "l", _idx(labels))
    cases = {
        "twice-gzipped": _write(tmp_path / "a.gz", __import__("gzip").compress(
            __import__("gzip").compress(_idx(images))), gz=False),
        "bad magic": _write(tmp_path / "b", b"\x12\x34" + _idx(images)[2:]),
        "labels as images": lab,
        "wrong element type": _write(tmp_path / "c", _idx(images, 0x0D)),
    }
    for name, path in cases.items():
        with pytest.raises(ValueError, match=os.path.basename(path)):
            data.read_idx_pair(path, lab)
    with pytest.raises(ValueError):                       # images given as labels
        data.read_idx_pair(_write(tmp_path / "i", _idx(images)),
                           _write(tmp_path / "i2", _idx(images)))
    # plain `if`, not `assert`: the same checks hold with python -O
    code = ("import sys\nfrom convcore.data import read_idx_pair\n"
            "for p in sys.argv[2:]:\n"
            "    try:\n        read_idx_pair(p, sys.argv[1])\n"
            "    except ValueError:\n        continue\n"
            "    sys.exit('accepted ' + p)\n")
    import subprocess
    # (conftest points the children's PYTHONPATH at the convcore under test:
    # the installed one in CI, the in-place build in a checkout)
    res = subprocess.run([sys.executable, "-O", "-c", code, lab] + list(cases.values()),
                         capture_output=True, text=True, env=dict(os.environ))
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("gz", [False, True])
def test_data_row_idx_payload_short_count_mismatch_label_range_are_value_errors(
        data, tmp_path, idx_pair, gz):
    import tracemalloc
    images, labels = idx_pair
    img, lab = _idx(images), _idx(labels)
    ok_i, ok_l = _write(tmp_path / "i", img, gz), _write(tmp_path / "l", lab, gz)
    x, y = data.read_idx_pair(ok_i, ok_l)
    np.testing.assert_array_equal(x.reshape(images.shape), images)
    short = _write(tmp_path / "short", img[:-7], gz)
    with pytest.raises(ValueError, match="short"):
        data.read_idx_pair(short, ok_l)
    fewer = _write(tmp_path / "fewer", _idx(labels[:-1]), gz)
    with pytest.raises(ValueError, match="fewer"):
        data.read_idx_pair(ok_i, fewer)
    bad = labels.copy()
    bad[3] = 10
    with pytest.raises(ValueError, match="out of range"):
        data.read_idx_pair(ok_i, _write(tmp_path / "range", _idx(bad), gz))
    # a header claiming 4e9 images: refused against the file size, nothing allocated
    import struct
    huge = _write(tmp_path / "huge", bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**32 - 1, 28,
                                                                      28) + b"\0" * 100, gz)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="huge"):
            data.read_idx_pair(huge, ok_l)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20


def test_data_row_truncated_gz_is_value_error_naming_the_file(data, tmp_path, idx_pair):
    import gzip
    images, labels = idx_pair
    lab = _write(tmp_path / "l.gz", _idx(labels), gz=True)
    raw = gzip.compress(_idx(images), mtime=0)
    for cut in (5, 12, len(raw) // 2, len(raw) - 9, len(raw) - 1):
        p = _write(tmp_path / f"t{cut}.gz", raw[:cut])
        with pytest.raises(ValueError, match=f"t{cut}.gz"):
            data.read_idx_pair(p, lab)


def test_data_row_malicious_cifar_pickle_is_refused_and_not_run(data, tmp_path):
    import pickle
    marker = tmp_path / "ran"
    evil = {b"data": _Boom(str(marker)), b"labels": [1]}
    for protocol in (2, 4):
        p = str(tmp_path / f"batch{protocol}")
        with open(p, "wb") as f:
            pickle.dump(evil, f, protocol=protocol)
        with pytest.raises(ValueError):
            data.read_cifar_python(p)
    assert not marker.exists()
    # well-formed pickles with unexpected shapes/types: ValueError
    for obj in ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]},
                {b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]},
                {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]},
                {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 11]},
                [1, 2, 3], {b"labels": [0]}):
        p = str(tmp_path / "odd")
        with open(p, "wb") as f:
            pickle.dump(obj, f, protocol=2)
        with pytest.raises(ValueError):
            data.read_cifar_python(p)


def test_data_row_tar_with_parent_paths_is_refused_or_contained(data, tmp_path):
    import io
    import tarfile
    archive = str(tmp_path / "evil.tar.gz")
    with tarfile.open(archive, "w:gz") as tf:
        for name in ("../escaped.txt", "ok/../../escaped2.txt", "/abs_escaped.txt"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tf.addfile(info, io.BytesIO(b"bad"))
    dest = tmp_path / "dest"
    dest.mkdir()
    try:
        data.extract_tar(archive, str(dest))
    except (ValueError, RuntimeError, tarfile.TarError):
        pass
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "escaped2.txt").exists()
    assert not os.path.exists("/abs_escaped.txt")
