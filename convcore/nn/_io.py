"""State dicts on disk: ``.npz`` without pickle, validated before allocation,
written atomically."""
from __future__ import annotations

import os
import tempfile
import zipfile

import numpy as np
from numpy.lib import format as npformat

from convcore.nn.module import check_state


def save_state_dict(state, path):
    """Write ``{name: array}`` to ``path`` as an uncompressed ``.npz``.

    The file is written to a temporary file in the same directory and then
    renamed over ``path``, so a crash never leaves a half-written file.

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> from convcore.nn import save_state_dict, load_state_dict_file
    >>> p = os.path.join(tempfile.mkdtemp(), "w.npz")
    >>> save_state_dict({"w": np.ones(2, np.float32)}, p)
    >>> load_state_dict_file(p, {"w": np.zeros(2, np.float32)})["w"]
    array([1., 1.], dtype=float32)
    """
    path = os.fspath(path)
    arrays = {}
    for k, v in state.items():
        a = v.get() if hasattr(v, "get") else np.asarray(v)
        if a.dtype.hasobject:
            raise ValueError(f"state entry {k!r} is an object array; only numeric arrays "
                             f"can be saved")
        arrays[k] = a
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _read_header(fp):
    version = npformat.read_magic(fp)
    if version == (1, 0):
        return npformat.read_array_header_1_0(fp)
    if version == (2, 0):
        return npformat.read_array_header_2_0(fp)
    raise ValueError(f"unsupported .npy format version {version}")


def load_state_dict_file(path, expected):
    """Read a ``.npz`` state dict, checked against ``expected`` (name -> array
    of the right shape and dtype) before any array is allocated.

    Raises ValueError listing every missing, extra, wrongly shaped or typed
    key, or naming the file when it is truncated or not an ``.npz``.  Object
    arrays are refused (nothing is ever unpickled).
    """
    path = os.fspath(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: not a readable .npz file (truncated or corrupt): {e}") from None
    with zf:
        infos = {}
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise ValueError(f"{path}: unexpected member {info.filename!r} (not .npy)")
            infos[info.filename[:-4]] = info
        headers, errors = {}, []
        for key, info in infos.items():
            if key not in expected:
                continue
            try:
                with zf.open(info) as fp:
                    shape, fortran, dtype = _read_header(fp)
                    hlen = fp.tell()
            except (ValueError, zipfile.BadZipFile, EOFError, OSError) as e:
                errors.append(f"{key!r}: unreadable .npy header ({e})")
                continue
            if dtype.hasobject:
                errors.append(f"{key!r}: object array refused (pickled data is never loaded)")
                continue
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if all(
                s < 2**40 for s in shape) else -1
            if tuple(shape) == tuple(expected[key].shape) and info.file_size != hlen + nbytes:
                errors.append(f"{key!r}: member holds {info.file_size - hlen} data bytes, "
                              f"its header needs {nbytes} (truncated)")
            headers[key] = (tuple(shape), dtype, fortran, hlen)
        fake = {k: _Spec(h[0], h[1]) for k, h in headers.items()}
        for k in infos:
            if k not in expected:
                fake[k] = _Spec((), None)
        errors = check_state(expected, fake) + errors
        if errors:
            raise ValueError(f"{path} does not match the expected state dict:\n  "
                             + "\n  ".join(errors))
        out = {}
        for key, (shape, dtype, fortran, hlen) in headers.items():
            try:
                with zf.open(infos[key]) as fp:
                    fp.seek(hlen)
                    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                    buf = fp.read(nbytes)
            except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
                raise ValueError(f"{path}: member {key!r} is truncated or corrupt: {e}") from None
            if len(buf) != nbytes:
                raise ValueError(f"{path}: member {key!r} is truncated ({len(buf)} of {nbytes} "
                                 f"bytes)")
            a = np.frombuffer(buf, dtype=dtype)
            a = a.reshape(shape[::-1]).T if fortran else a.reshape(shape)
            out[key] = a.copy()
        return out


class _Spec:
    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype
