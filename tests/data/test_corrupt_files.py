"""Corrupted data files (IDX, gzip, CIFAR binary and python versions): loading
gives the data or a ValueError, never a crash, a hang or unpickled code.
"""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from _draw import _corrupt, edits  # noqa: E402


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
