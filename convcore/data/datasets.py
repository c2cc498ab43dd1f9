"""Finding and loading the datasets: Fashion-MNIST, MNIST, CIFAR-10."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from convcore.data._files import (extract_tar, read_cifar_binary, read_cifar_python,
                                  read_idx_pair)

__all__ = ["Dataset", "DatasetNotFoundError", "load_dataset", "load_fashion_mnist",
           "load_mnist", "load_cifar10", "long_tailed_indices", "FASHION_CLASSES",
           "MNIST_CLASSES", "CIFAR10_CLASSES", "DATASETS"]

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                   "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                   "horse", "ship", "truck")

DEFAULT_DIRS = {
    "fashion-mnist": "/usr/share/datasets/fashion-mnist",
    "mnist": "/usr/share/datasets/mnist",
    "cifar10": "/usr/share/datasets/cifar-10",
}
SUBDIRS = {
    "fashion-mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST"),
    "mnist": ("mnist", "MNIST"),
    "cifar10": ("cifar-10", "cifar10", "cifar-10-batches-bin", "cifar-10-batches-py"),
}
HOW_TO_GET = {
    "fashion-mnist": "install it with `apt-get install dataset-fashion-mnist`, or put "
                     "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                     "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in a "
                     "directory given by --data-dir or $CONVCORE_DATA",
    "mnist": "put train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
             "t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] in a "
             "directory given by --data-dir or $CONVCORE_DATA",
    "cifar10": "download the binary or python version of CIFAR-10 "
               "(cifar-10-binary.tar.gz or cifar-10-python.tar.gz) and put the archive "
               "or its extracted directory in a directory given by --data-dir or "
               "$CONVCORE_DATA",
}
DATASETS = tuple(DEFAULT_DIRS)


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not where we looked; the message says how to get them."""


@dataclass
class Dataset:
    """A labelled image set held in memory as uint8.

    Attributes
    ----------
    images : ndarray, uint8, shape (N, C, H, W)
    labels : ndarray, int64, shape (N,)
    classes : tuple of str
    """
    images: np.ndarray
    labels: np.ndarray
    classes: tuple = field(default_factory=tuple)
    name: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices) -> "Dataset":
        indices = np.asarray(indices, dtype=np.int64)
        return Dataset(self.images[indices], self.labels[indices], self.classes, self.name)


def _candidate_dirs(name: str, data_dir: Optional[str]):
    roots = []
    if data_dir:
        roots.append(data_dir)
    else:
        env = os.environ.get("CONVCORE_DATA")
        if env:
            roots.append(env)
        roots.append(DEFAULT_DIRS[name])
    out = []
    for r in roots:
        out.append(r)
        out.extend(os.path.join(r, s) for s in SUBDIRS[name])
    return out


def _find(d: str, stem: str) -> Optional[str]:
    for p in (os.path.join(d, stem + ".gz"), os.path.join(d, stem)):
        if os.path.isfile(p):
            return p
    return None


def _load_idx_dataset(name, classes, data_dir):
    tried = _candidate_dirs(name, data_dir)
    for d in tried:
        files = [_find(d, s) for s in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]
        if all(files):
            tx, ty = read_idx_pair(files[0], files[1], len(classes))
            vx, vy = read_idx_pair(files[2], files[3], len(classes))
            return Dataset(tx, ty, classes, name), Dataset(vx, vy, classes, name)
    raise DatasetNotFoundError(f"{name} not found (looked in {', '.join(tried)}): "
                               f"{HOW_TO_GET[name]}")


def load_fashion_mnist(data_dir: Optional[str] = None):
    """(train, test) :class:`Dataset` pair of Fashion-MNIST, 60,000 + 10,000 images
    of 1x28x28, from IDX files (gzip-compressed or not).

    Looks in `data_dir`, else ``$CONVCORE_DATA`` and Debian's
    ``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``),
    and in a ``fashion-mnist`` sub-directory of each.
    """
    return _load_idx_dataset("fashion-mnist", FASHION_CLASSES, data_dir)


def load_mnist(data_dir: Optional[str] = None):
    """(train, test) :class:`Dataset` pair of MNIST from IDX files (as
    :func:`load_fashion_mnist`)."""
    return _load_idx_dataset("mnist", MNIST_CLASSES, data_dir)


def _cifar_from_dir(d: str):
    bin_train = [os.path.join(d, f"data_batch_{i}.bin") for i in range(1, 6)]
    bin_test = os.path.join(d, "test_batch.bin")
    py_train = [os.path.join(d, f"data_batch_{i}") for i in range(1, 6)]
    py_test = os.path.join(d, "test_batch")
    if all(map(os.path.isfile, bin_train + [bin_test])):
        reader, train, test = read_cifar_binary, bin_train, bin_test
    elif all(map(os.path.isfile, py_train + [py_test])):
        reader, train, test = read_cifar_python, py_train, py_test
    else:
        return None
    parts = [reader(p) for p in train]
    tx = np.concatenate([p[0] for p in parts])
    ty = np.concatenate([p[1] for p in parts])
    vx, vy = reader(test)
    return (Dataset(tx, ty, CIFAR10_CLASSES, "cifar10"),
            Dataset(vx, vy, CIFAR10_CLASSES, "cifar10"))


def load_cifar10(data_dir: Optional[str] = None):
    """(train, test) :class:`Dataset` pair of CIFAR-10 (50,000 + 10,000 images
    of 3x32x32).

    Reads the binary version (``data_batch_1.bin`` ...) or the python version
    (``data_batch_1`` ..., through a restricted unpickler that only accepts
    plain containers, bytes, numbers and NumPy arrays). An archive
    ``cifar-10-binary.tar.gz`` / ``cifar-10-python.tar.gz`` found in the
    directory is extracted next to itself with tarfile's 'data' filter.
    """
    tried = _candidate_dirs("cifar10", data_dir)
    for d in tried:
        for sub in ("", "cifar-10-batches-bin", "cifar-10-batches-py"):
            got = _cifar_from_dir(os.path.join(d, sub) if sub else d)
            if got is not None:
                return got
        for arc, sub in (("cifar-10-binary.tar.gz", "cifar-10-batches-bin"),
                         ("cifar-10-python.tar.gz", "cifar-10-batches-py")):
            if os.path.isfile(os.path.join(d, arc)):
                extract_tar(os.path.join(d, arc), d)
                got = _cifar_from_dir(os.path.join(d, sub))
                if got is not None:
                    return got
    raise DatasetNotFoundError(f"cifar10 not found (looked in {', '.join(tried)}): "
                               f"{HOW_TO_GET['cifar10']}")


_LOADERS = {"fashion-mnist": load_fashion_mnist, "mnist": load_mnist,
            "cifar10": load_cifar10}


def load_dataset(name: str, data_dir: Optional[str] = None):
    """(train, test) pair of the dataset called `name` ('fashion-mnist',
    'mnist' or 'cifar10')."""
    key = name.lower().replace("_", "-")
    if key in ("cifar-10",):
        key = "cifar10"
    if key not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return _LOADERS[key](data_dir)


def long_tailed_indices(labels, imbalance_ratio: float, num_classes: Optional[int] = None,
                        seed: int = 0) -> np.ndarray:
    """Indices of a long-tailed subset: class c keeps ``n_max * r**(-c/(C-1))``
    samples (Cui et al.'s exponential profile), so the most frequent class has
    `imbalance_ratio` times as many samples as the rarest.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.repeat(np.arange(3), 100)
    >>> idx = long_tailed_indices(y, 100.0)
    >>> np.bincount(y[idx]).tolist()
    [100, 10, 1]
    """
    labels = np.asarray(labels)
    if not (imbalance_ratio >= 1.0):
        raise ValueError(f"imbalance_ratio must be >= 1, got {imbalance_ratio}")
    C = int(num_classes if num_classes is not None else labels.max() + 1)
    counts = np.bincount(labels, minlength=C)
    n_max = int(counts.max())
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(C):
        n = int(n_max * imbalance_ratio ** (-c / max(C - 1, 1)))
        n = max(1, min(n, int(counts[c])))
        idx = np.flatnonzero(labels == c)
        keep.append(np.sort(rng.permutation(idx)[:n]))
    return np.sort(np.concatenate(keep))
