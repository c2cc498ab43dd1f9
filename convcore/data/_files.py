"""Checked readers for the on-disk dataset formats: IDX (MNIST, Fashion-MNIST),
CIFAR-10 binary and CIFAR-10 python batches, and safe archive extraction.

Every reader checks the header against the file size *before* allocating the
payload, and raises ValueError naming the file when something does not fit.
Checks are plain ``if`` statements (``python -O`` keeps them).
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
import zlib

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"
IDX_UBYTE = 0x08
# deflate cannot expand data by more than about 1032x; a .gz whose header
# claims more than that per compressed byte is lying (or truncated).
MAX_DEFLATE_RATIO = 1032
# Anything larger than this is not one of the datasets we read.
MAX_PAYLOAD = 2**33


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def _gzip_isize(path: str) -> int:
    """The uncompressed size mod 2**32 stored in the last 4 bytes of a .gz."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < 18:
            raise ValueError(f"{path}: truncated gzip file ({f.tell()} bytes)")
        f.seek(-4, os.SEEK_END)
        return struct.unpack("<I", f.read(4))[0]


def _read_exact(f, n: int, path: str, what: str) -> bytes:
    try:
        b = f.read(n)
    except (EOFError, OSError, zlib.error) as e:
        raise ValueError(f"{path}: truncated or corrupt gzip data while reading {what} "
                         f"({e})") from None
    if len(b) != n:
        raise ValueError(f"{path}: file ends inside the {what}: expected {n} bytes, "
                         f"got {len(b)}")
    return b


class IDXHeader:
    """Shape and payload location of one IDX file (header already checked)."""

    def __init__(self, path, dims, compressed, payload_offset):
        self.path = path
        self.dims = tuple(dims)
        self.compressed = compressed
        self.payload_offset = payload_offset

    @property
    def count(self) -> int:
        return self.dims[0]

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.dims:
            n *= d
        return n


_IDX_KIND = {1: "label file (idx1, magic 0x00000801)", 3: "image file (idx3, magic 0x00000803)"}


def read_idx_header(path: str, ndim: int) -> IDXHeader:
    """Read and check the header of an IDX file (plain or gzip-compressed).

    Checks the magic number (unsigned bytes, `ndim` dimensions), that the
    file is not compressed twice, and that the payload the header announces
    is present in full (file size, or the gzip trailer's size field).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    compressed = _is_gzip(path)
    opener = gzip.open if compressed else open
    with opener(path, "rb") as f:
        head = _read_exact(f, 4, path, "IDX magic number")
        if head[:2] == GZIP_MAGIC:
            raise ValueError(f"{path}: still gzip-compressed after decompression "
                             f"(compressed twice?); expected an IDX {_IDX_KIND[ndim]}")
        if head[0] != 0 or head[1] != 0:
            raise ValueError(f"{path}: not an IDX file: magic bytes {head.hex()}, expected "
                             f"an IDX {_IDX_KIND[ndim]}")
        if head[2] != IDX_UBYTE:
            raise ValueError(f"{path}: IDX element type 0x{head[2]:02x}, expected 0x08 "
                             f"(unsigned byte)")
        if head[3] != ndim:
            got = _IDX_KIND.get(head[3], f"IDX file with {head[3]} dimensions")
            raise ValueError(f"{path}: expected an IDX {_IDX_KIND[ndim]}, got an {got} "
                             f"(images and labels swapped?)")
        dims = struct.unpack(f">{ndim}I", _read_exact(f, 4 * ndim, path, "IDX header"))
    hdr = IDXHeader(path, dims, compressed, 4 + 4 * ndim)
    if hdr.nbytes > MAX_PAYLOAD:
        raise ValueError(f"{path}: header claims shape {dims} ({hdr.nbytes} bytes), more "
                         f"than the {MAX_PAYLOAD}-byte limit")
    total = hdr.payload_offset + hdr.nbytes
    fsize = os.path.getsize(path)
    if compressed:
        if total > fsize * MAX_DEFLATE_RATIO:
            raise ValueError(f"{path}: header claims {total} bytes but the {fsize}-byte "
                             f"gzip file cannot hold that much (truncated?)")
        isize = _gzip_isize(path)
        if isize != total % 2**32:
            raise ValueError(f"{path}: header claims {total} bytes of data, but the gzip "
                             f"trailer says {isize} (payload shorter than its header, or "
                             f"a truncated .gz)")
    elif fsize != total:
        short = "shorter" if fsize < total else "longer"
        raise ValueError(f"{path}: IDX header claims shape {dims} ({total} bytes with the "
                         f"header), but the file has {fsize} bytes ({short})")
    return hdr


def read_idx_payload(hdr: IDXHeader) -> np.ndarray:
    """The uint8 payload of a checked IDX header, shaped as its dims."""
    path = hdr.path
    out = np.empty(hdr.dims, dtype=np.uint8)
    opener = gzip.open if hdr.compressed else open
    with opener(path, "rb") as f:
        _read_exact(f, hdr.payload_offset, path, "IDX header")
        view = memoryview(out.reshape(-1))
        got = 0
        try:
            while got < hdr.nbytes:
                n = f.readinto(view[got:])
                if not n:
                    break
                got += n
            extra = f.read(1)
        except (EOFError, OSError, zlib.error) as e:
            raise ValueError(f"{path}: truncated or corrupt gzip data ({e})") from None
    if got != hdr.nbytes:
        raise ValueError(f"{path}: payload shorter than its header: expected {hdr.nbytes} "
                         f"bytes, got {got}")
    if extra:
        raise ValueError(f"{path}: more data than the IDX header {hdr.dims} announces")
    return out


def read_idx_pair(images_path: str, labels_path: str, num_classes: int = 10):
    """Images (N, 1, H, W) uint8 and labels (N,) int64 from two IDX files,
    with every cross-check done before the payloads are read."""
    ih = read_idx_header(images_path, 3)
    lh = read_idx_header(labels_path, 1)
    if ih.count != lh.count:
        raise ValueError(f"{labels_path}: {lh.count} labels, but {images_path} has "
                         f"{ih.count} images")
    labels = read_idx_payload(lh)
    if labels.size and int(labels.max()) >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise ValueError(f"{labels_path}: label {int(labels[bad])} at index {bad} is out of "
                         f"range for {num_classes} classes")
    images = read_idx_payload(ih)
    return images[:, None], labels.astype(np.int64)


# ---------------------------------------------------------------- CIFAR-10

CIFAR_SHAPE = (3, 32, 32)
CIFAR_RECORD = 1 + 3 * 32 * 32


def read_cifar_binary(path: str, num_classes: int = 10):
    """One CIFAR-10 binary batch: records of 1 label byte + 3072 pixel bytes."""
    fsize = os.path.getsize(path)
    if fsize == 0 or fsize % CIFAR_RECORD:
        raise ValueError(f"{path}: size {fsize} bytes is not a positive multiple of the "
                         f"{CIFAR_RECORD}-byte CIFAR-10 record")
    if fsize > MAX_PAYLOAD:
        raise ValueError(f"{path}: {fsize} bytes, more than the {MAX_PAYLOAD}-byte limit")
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    labels = raw[:, 0].astype(np.int64)
    if labels.size and int(labels.max()) >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise ValueError(f"{path}: label {int(labels[bad])} of record {bad} is out of range "
                         f"for {num_classes} classes (not a CIFAR-10 binary batch?)")
    images = np.ascontiguousarray(raw[:, 1:]).reshape((-1,) + CIFAR_SHAPE)
    return images, labels


def _latin1_encode(text, encoding="latin1"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers, bytes, str, numbers and NumPy arrays only.

    Any other global (functions, classes, ``os.system``...) is refused, so a
    malicious batch file cannot run code.
    """

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode          # how protocol 2 stores bytes from Python 3
        if (module, name) in self._ALLOWED:
            mod = __import__(module, fromlist=[name])
            return getattr(mod, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def _restricted_load(path: str):
    with open(path, "rb") as f:
        data = f.read()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError,
            IndexError, KeyError, struct.error, UnicodeDecodeError, OverflowError,
            MemoryError) as e:
        # (MemoryError: a length field the file does not hold, which the
        # unpickler allocates before it reads, e.g. a BYTEARRAY8 of 2**62)
        raise ValueError(f"{path}: not a CIFAR-10 python batch this reader accepts: "
                         f"{e}") from None


def _get(d, key):
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    return None


def read_cifar_python(path: str, num_classes: int = 10):
    """One CIFAR-10 python batch (a pickled dict with 'data' and 'labels'),
    read through a restricted unpickler and checked for shape and range."""
    obj = _restricted_load(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict, got {type(obj).__name__}")
    data, labels = _get(obj, "data"), _get(obj, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != CIFAR_RECORD - 1:
        desc = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                else type(data).__name__)
        raise ValueError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), got "
                         f"{desc}")
    if not isinstance(labels, (list, tuple, np.ndarray)):
        raise ValueError(f"{path}: 'labels' must be a list of ints, got "
                         f"{type(labels).__name__}")
    if isinstance(labels, np.ndarray):
        if labels.dtype.kind not in "iu":
            raise ValueError(f"{path}: 'labels' must be integers, got {labels.dtype}")
    elif not all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        raise ValueError(f"{path}: 'labels' must be a list of ints")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.shape[0] != data.shape[0]:
        raise ValueError(f"{path}: {labels.shape[0]} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{path}: labels out of range for {num_classes} classes "
                         f"(min {labels.min()}, max {labels.max()})")
    return np.ascontiguousarray(data).reshape((-1,) + CIFAR_SHAPE), labels


# ---------------------------------------------------------------- archives

def extract_tar(archive: str, dest: str) -> None:
    """Extract a tar archive with the 'data' filter (no absolute paths, no
    ``..``, no links out of `dest`, no device files); refuse when this Python
    has no extraction filters."""
    if not hasattr(tarfile, "data_filter"):
        raise RuntimeError(f"refusing to extract {archive}: this Python has no tarfile "
                           f"extraction filters (needs 3.8.17+, 3.9.17+, 3.10.12+, 3.11.4+); "
                           f"extract it yourself")
    try:
        with tarfile.open(archive) as tf:
            tf.extractall(dest, filter="data")
    except tarfile.FilterError as e:
        raise ValueError(f"{archive}: unsafe member refused ({e})") from None
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise ValueError(f"{archive}: cannot extract ({e})") from None
