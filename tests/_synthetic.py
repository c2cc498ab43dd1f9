"""Builders of small dataset files in the real on-disk formats (IDX, CIFAR-10
binary and python), written byte by byte here, independent of the readers."""
import gzip
import os
import pickle
import struct

import numpy as np


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.tobytes()


def write(path, payload: bytes, gz: bool):
    if gz:
        payload = gzip.compress(payload, mtime=0)
    with open(path, "wb") as f:
        f.write(payload)
    return path


def learnable_images(n, num_classes, size, seed, channels=1):
    """Images whose class is visible: a class-specific bright square plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    x = rng.integers(0, 60, (n, channels, size, size))
    for i, c in enumerate(labels):
        r, col = divmod(int(c), 4)
        x[i, :, 2 * r:2 * r + 2, 2 * col:2 * col + 2] += 180
    return x.astype(np.uint8), labels.astype(np.uint8)


def write_idx_dataset(d, n_train=256, n_test=64, size=8, gz=True, seed=0):
    os.makedirs(d, exist_ok=True)
    ext = ".gz" if gz else ""
    for split, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        x, y = learnable_images(n, 10, size, s)
        write(os.path.join(d, f"{split}-images-idx3-ubyte{ext}"), idx_bytes(x[:, 0]), gz)
        write(os.path.join(d, f"{split}-labels-idx1-ubyte{ext}"), idx_bytes(y), gz)
    return d


def write_cifar_binary(path, n, seed=0):
    x, y = learnable_images(n, 10, 32, seed, channels=3)
    rec = np.concatenate([y[:, None], x.reshape(n, -1)], axis=1).astype(np.uint8)
    with open(path, "wb") as f:
        f.write(rec.tobytes())
    return x, y


def write_cifar_python(path, n, seed=0, protocol=2):
    x, y = learnable_images(n, 10, 32, seed, channels=3)
    obj = {b"batch_label": b"synthetic", b"labels": [int(v) for v in y],
           b"data": x.reshape(n, -1), b"filenames": [b"f%d.png" % i for i in range(n)]}
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return x, y


class Boom:
    """Unpickling this would run code: it writes a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))
