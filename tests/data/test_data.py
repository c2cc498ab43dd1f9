"""Dataset readers against files built byte by byte in tests/_synthetic.py,
including every bad-file row of the edge-case catalogue
(docs/contributing.rst)."""
import gzip
import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from convcore import data
from _synthetic import (idx_bytes, learnable_images, write, write_cifar_binary,
                              write_cifar_python, write_idx_dataset)


# ---------------------------------------------------------------- good files

@pytest.mark.parametrize("gz", [True, False])
def test_idx_dataset_loads_exactly_what_was_written(tmp_path, gz):
    write_idx_dataset(str(tmp_path), n_train=50, n_test=20, size=8, gz=gz)
    train, test = data.load_mnist(str(tmp_path))
    x, y = learnable_images(50, 10, 8, 0)
    assert train.images.shape == (50, 1, 8, 8) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(train.images, x)
    np.testing.assert_array_equal(train.labels, y.astype(np.int64))
    assert len(test) == 20 and test.num_classes == 10


def test_fashion_mnist_found_through_env_and_subdirectory(tmp_path, monkeypatch):
    write_idx_dataset(str(tmp_path / "fashion-mnist"), n_train=10, n_test=5)
    monkeypatch.setenv("CONVCORE_DATA", str(tmp_path))
    train, test = data.load_fashion_mnist()
    assert len(train) == 10 and train.classes[0] == "T-shirt/top"


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("CONVCORE_DATA", raising=False)
    with pytest.raises(data.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist(str(tmp_path))
    with pytest.raises(data.DatasetNotFoundError, match="--data-dir"):
        data.load_cifar10(str(tmp_path))


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_dataset("imagenet")


def _cifar_dir(d, writer, suffix, n=12):
    os.makedirs(d, exist_ok=True)
    got = []
    for i in range(1, 6):
        got.append(writer(os.path.join(d, f"data_batch_{i}{suffix}"), n, seed=i))
    test = writer(os.path.join(d, f"test_batch{suffix}"), n, seed=9)
    return got, test


@pytest.mark.parametrize("kind", ["bin", "py"])
def test_cifar10_loads_both_versions(tmp_path, kind):
    writer, suffix = (write_cifar_binary, ".bin") if kind == "bin" else (write_cifar_python, "")
    parts, (tx, ty) = _cifar_dir(str(tmp_path), writer, suffix)
    train, test = data.load_cifar10(str(tmp_path))
    assert train.images.shape == (60, 3, 32, 32)
    np.testing.assert_array_equal(train.images[:12], parts[0][0])
    np.testing.assert_array_equal(train.labels[12:24], parts[1][1])
    np.testing.assert_array_equal(test.images, tx)


def test_cifar10_archive_is_extracted_with_the_data_filter(tmp_path):
    src = tmp_path / "src" / "cifar-10-batches-bin"
    _cifar_dir(str(src), write_cifar_binary, ".bin", n=3)
    arc = tmp_path / "root" / "cifar-10-binary.tar.gz"
    arc.parent.mkdir()
    with tarfile.open(arc, "w:gz") as tf:
        tf.add(src, arcname="cifar-10-batches-bin")
    train, _ = data.load_cifar10(str(tmp_path / "root"))
    assert len(train) == 15


# ---------------------------------------------------------------- bad IDX files

def _pair(tmp_path, images=None, labels=None, n=6, gz=False):
    x, y = learnable_images(n, 10, 4, 0)
    ip = write(str(tmp_path / "img"), idx_bytes(x[:, 0]) if images is None else images, gz)
    lp = write(str(tmp_path / "lab"), idx_bytes(y) if labels is None else labels, gz)
    return ip, lp


def test_idx_wrong_magic_number(tmp_path):
    x, y = learnable_images(6, 10, 4, 0)
    bad = b"\x12\x34" + idx_bytes(x[:, 0])[2:]
    ip, lp = _pair(tmp_path, images=bad)
    with pytest.raises(ValueError, match="img: not an IDX file"):
        data.read_idx_pair(ip, lp)


def test_idx_still_gzipped_after_decompression(tmp_path):
    x, y = learnable_images(6, 10, 4, 0)
    twice = gzip.compress(gzip.compress(idx_bytes(x[:, 0])))
    ip, lp = _pair(tmp_path, images=twice)
    with pytest.raises(ValueError, match="still gzip-compressed"):
        data.read_idx_pair(ip, lp)


def test_idx_images_and_labels_swapped(tmp_path):
    ip, lp = _pair(tmp_path)
    with pytest.raises(ValueError, match="swapped"):
        data.read_idx_pair(lp, ip)


def test_idx_wrong_element_type(tmp_path):
    x, _ = learnable_images(6, 10, 4, 0)
    b = bytearray(idx_bytes(x[:, 0]))
    b[2] = 0x0D                                   # float
    ip, lp = _pair(tmp_path, images=bytes(b))
    with pytest.raises(ValueError, match="unsigned byte"):
        data.read_idx_pair(ip, lp)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_payload_shorter_than_header(tmp_path, gz):
    x, _ = learnable_images(6, 10, 4, 0)
    ip, lp = _pair(tmp_path, images=idx_bytes(x[:, 0])[:-5], gz=gz)
    with pytest.raises(ValueError, match="img"):
        data.read_idx_pair(ip, lp)


def test_idx_header_claiming_a_huge_shape_is_refused_before_allocating(tmp_path):
    head = bytes([0, 0, 8, 3]) + (2**31).to_bytes(4, "big") + (2**15).to_bytes(4, "big") * 2
    for gz in (False, True):
        ip, lp = _pair(tmp_path, images=head + b"\0" * 100, gz=gz)
        with pytest.raises(ValueError, match="img"):
            data.read_idx_header(ip, 3)


def test_idx_label_count_differs_from_image_count(tmp_path):
    _, y = learnable_images(5, 10, 4, 0)
    ip, lp = _pair(tmp_path, labels=idx_bytes(y), n=6)
    with pytest.raises(ValueError, match="5 labels.*6 images"):
        data.read_idx_pair(ip, lp)


def test_idx_label_out_of_range(tmp_path):
    y = np.array([0, 1, 2, 10, 3, 4], np.uint8)
    ip, lp = _pair(tmp_path, labels=idx_bytes(y))
    with pytest.raises(ValueError, match="label 10 at index 3"):
        data.read_idx_pair(ip, lp)


def test_idx_truncated_gz_names_the_file(tmp_path):
    x, _ = learnable_images(200, 10, 8, 0)
    full = gzip.compress(idx_bytes(x[:, 0]))
    ip, lp = _pair(tmp_path, images=full[: len(full) // 2])
    with pytest.raises(ValueError, match=str(ip)):
        data.read_idx_pair(ip, lp)
    # trailer kept but the middle cut out: the stream itself is broken
    ip2 = write(str(tmp_path / "img2"), full[:40] + full[-8:], False)
    with pytest.raises(ValueError, match=str(ip2)):
        data.read_idx_payload(data.read_idx_header(ip2, 3))


def test_idx_longer_than_its_header(tmp_path):
    x, _ = learnable_images(6, 10, 4, 0)
    ip, lp = _pair(tmp_path, images=idx_bytes(x[:, 0]) + b"\0\0")
    with pytest.raises(ValueError, match="longer"):
        data.read_idx_pair(ip, lp)


# ---------------------------------------------------------------- bad CIFAR files

def test_cifar_binary_size_not_a_record_multiple(tmp_path):
    p = tmp_path / "b.bin"
    write_cifar_binary(str(p), 3)
    with open(p, "ab") as f:
        f.write(b"\0" * 7)
    with pytest.raises(ValueError, match="3073"):
        data.read_cifar_binary(str(p))


def test_cifar_binary_label_out_of_range(tmp_path):
    p = tmp_path / "b.bin"
    write_cifar_binary(str(p), 3)
    b = bytearray(p.read_bytes())
    b[3073] = 200
    p.write_bytes(bytes(b))
    with pytest.raises(ValueError, match="label 200 of record 1"):
        data.read_cifar_binary(str(p))


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_cifar_python_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({b"data": _Evil(str(marker)), b"labels": [0]}))
    with pytest.raises(ValueError, match="not allowed"):
        data.read_cifar_python(str(p))
    assert not marker.exists()
    p.write_bytes(pickle.dumps(os.system))
    with pytest.raises(ValueError, match="not allowed"):
        data.read_cifar_python(str(p))


@pytest.mark.parametrize("obj, match", [
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "shape"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
    ({b"data": np.array([1, "a"], dtype=object), b"labels": [0]}, "uint8"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "1 labels for 2"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "out of range"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": ["x"]}, "ints"),
    ([1, 2, 3], "dict"),
])
def test_cifar_python_unexpected_contents(tmp_path, obj, match):
    p = tmp_path / "batch"
    p.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(ValueError, match=match):
        data.read_cifar_python(str(p))


def test_cifar_python_truncated(tmp_path):
    p = tmp_path / "batch"
    write_cifar_python(str(p), 4)
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ValueError, match=str(p)):
        data.read_cifar_python(str(p))


@pytest.mark.parametrize("opcode", [b"\x96", b"\x8e", b"\x8d"],
                         ids=["bytearray8", "binbytes8", "binunicode8"])
def test_cifar_python_huge_declared_length_is_a_value_error(tmp_path, opcode):
    # a length field far beyond the file (2**62 bytes): the unpickler's
    # allocation fails before it reads; the reader says the file is bad
    p = tmp_path / "batch"
    p.write_bytes(b"\x80\x05" + opcode + (1 << 62).to_bytes(8, "little") + b"xyz.")
    with pytest.raises(ValueError, match=str(p)):
        data.read_cifar_python(str(p))


def test_tar_with_parent_paths_is_refused(tmp_path):
    arc = tmp_path / "evil.tar"
    with tarfile.open(arc, "w") as tf:
        info = tarfile.TarInfo("../escaped.txt")
        payload = b"x"
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ValueError, match="unsafe"):
        data.extract_tar(str(arc), str(dest))
    assert not (tmp_path / "escaped.txt").exists()


# ---------------------------------------------------------------- batches

def test_batch_iterator_is_seeded_and_covers_every_sample_once():
    x = np.arange(10 * 4, dtype=np.uint8).reshape(10, 1, 2, 2)
    y = np.arange(10)
    a = data.BatchIterator(x, y, 3, seed=5)
    b = data.BatchIterator(x, y, 3, seed=5)
    ya = np.concatenate([yb for _, yb in a.epoch(2)])
    yb_ = np.concatenate([yb for _, yb in b.epoch(2)])
    np.testing.assert_array_equal(ya, yb_)
    assert sorted(ya.tolist()) == list(range(10))
    y3 = np.concatenate([yb for _, yb in a.epoch(3)])
    assert not np.array_equal(ya, y3)
    assert len(a) == 4 and len(data.BatchIterator(x, y, 3, drop_last=True)) == 3


def test_batch_iterator_normalises_per_channel():
    x = np.full((2, 2, 3, 3), 51, np.uint8)
    it = data.BatchIterator(x, np.zeros(2, int), 2, shuffle=False, mean=[0.1, 0.2],
                            std=[0.5, 0.25])
    xb, _ = next(it.epoch(0))
    assert xb.dtype == np.float32
    np.testing.assert_allclose(xb[:, 0], (0.2 - 0.1) / 0.5, rtol=1e-6)
    np.testing.assert_allclose(xb[:, 1], (0.2 - 0.2) / 0.25, atol=1e-6)


def test_augmentation_is_a_shifted_possibly_flipped_crop():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 255, (16, 3, 8, 8)).astype(np.uint8)
    it = data.BatchIterator(x, np.zeros(16, int), 16, shuffle=False, augment=True, pad=2,
                            seed=1)
    xb, _ = next(it.epoch(0))
    ref = x.astype(np.float32) / 255
    for i in range(16):
        padded = np.pad(ref[i], ((0, 0), (2, 2), (2, 2)))
        found = any(np.allclose(xb[i], c, atol=1e-6)
                    for dy in range(5) for dx in range(5)
                    for c in (padded[:, dy:dy + 8, dx:dx + 8],
                              padded[:, dy:dy + 8, dx:dx + 8][:, :, ::-1]))
        assert found, i
    xb2, _ = next(it.epoch(0))
    np.testing.assert_array_equal(xb, xb2)


def test_long_tailed_profile():
    y = np.repeat(np.arange(10), 1000)
    idx = data.long_tailed_indices(y, 100.0, seed=3)
    counts = np.bincount(y[idx])
    expected = [int(1000 * 100 ** (-c / 9)) for c in range(10)]
    assert counts.tolist() == expected
    assert counts[0] / counts[-1] == 100
    with pytest.raises(ValueError):
        data.long_tailed_indices(y, 0.5)
