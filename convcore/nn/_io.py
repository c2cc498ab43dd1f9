"""Arrays on disk: ``.npz`` without pickle, validated before allocation,
written atomically.

One writer (:func:`write_npz_atomic`) and one reader (:func:`read_npz`) serve
both ``Module.save``/``Module.load`` and the training checkpoints.  The reader
never calls ``np.load``: it parses each member's ``.npy`` header itself (a
Python literal, read with :func:`ast.literal_eval`, which evaluates no code),
checks it against the member's size before allocating anything, reads the
member through ``zipfile`` so that its CRC is verified, and turns every
malformed input into a ``ValueError`` naming the file and what is wrong.
"""
from __future__ import annotations

import ast
import os
import re
import secrets
import zipfile

import numpy as np

# A version 1.0 header is at most 65535 bytes; later versions allow 4 GiB,
# which no honest file of numeric arrays needs.
MAX_HEADER_BYTES = 2**16
# dtype kinds a file may hold: bool, ints, floats, complex, and unicode text
# (a checkpoint's JSON metadata).  Object ('O'), bytes, void (structured)
# and datetime arrays are refused.
_KINDS = "biufcU"
_MAGIC = b"\x93NUMPY"
# Deflate cannot compress better than about 1032:1; a member claiming more
# uncompressed bytes than that lies about its size.
_MAX_RATIO = 1100


# ------------------------------------------------------------------ checking

def check_state(expected, given, strict=True):
    """Every problem between an expected and a given state dict, one line each."""
    errors = []
    for key, arr in expected.items():
        if key not in given:
            errors.append(f"missing key {key!r} (expected shape {tuple(arr.shape)}, "
                          f"dtype {arr.dtype})")
            continue
        v = given[key]
        shape = tuple(getattr(v, "shape", ()))
        dtype = getattr(v, "dtype", None)
        if shape != tuple(arr.shape):
            errors.append(f"{key!r}: expected shape {tuple(arr.shape)}, got {shape}")
        if dtype is None or np.dtype(dtype) != np.dtype(arr.dtype):
            errors.append(f"{key!r}: expected dtype {arr.dtype}, got {dtype}")
    if strict:
        for key in given:
            if key not in expected:
                errors.append(f"unexpected key {key!r}")
    return errors


# ------------------------------------------------------------------ writing

_TMP = re.compile(r"^\.tmp-(?:(\d+)-[0-9a-f]+\.(?:npz|json)|[A-Za-z0-9_]{8}\.npz)$")


def _alive(pid: int) -> bool:
    if os.name != "posix":          # no harmless liveness probe: keep the file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:                 # EPERM: someone else's live process
        return True
    return True


def remove_stale_temp_files(directory) -> list:
    """Delete the ``.tmp-*.npz`` files that an interrupted write (``kill -9``,
    power loss) left in ``directory``; return their names.

    A temporary file names the process writing it; files of live processes
    (another writer in the same directory) are left alone.
    """
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    me = os.getpid()
    for name in names:
        m = _TMP.match(name)
        if m is None:
            continue
        if m.group(1) is not None:
            pid = int(m.group(1))
            if pid == me or _alive(pid):
                continue
        try:
            os.unlink(os.path.join(directory, name))
            removed.append(name)
        except OSError:
            pass
    return removed


def _atomic(path, suffix, write) -> None:
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    remove_stale_temp_files(d)
    tmp = os.path.join(d, f".tmp-{os.getpid()}-{secrets.token_hex(6)}{suffix}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_text_atomic(path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically, as :func:`write_npz_atomic`."""
    _atomic(path, ".json", lambda f: f.write(text.encode("utf-8")))


def write_npz_atomic(path, arrays: dict) -> None:
    """Write ``{name: array}`` to ``path`` as an uncompressed ``.npz``,
    atomically: a temporary file in the same directory, flushed and fsynced,
    then renamed over ``path``, so a crash never leaves a half-written file
    under the real name.  The file is created with mode ``0o666`` minus the
    umask, like any other file the process writes.  Temporary files left in
    the directory by an earlier interrupted write are removed first.
    """
    _atomic(path, ".npz", lambda f: np.savez(f, **arrays))


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
    arrays = {}
    for k, v in state.items():
        a = v.get() if hasattr(v, "get") else np.asarray(v)
        if a.dtype.hasobject:
            raise ValueError(f"state entry {k!r} is an object array; only numeric arrays "
                             f"can be saved")
        arrays[k] = a
    write_npz_atomic(path, arrays)


# ------------------------------------------------------------------ reading

# What zipfile raises for a corrupt archive: besides BadZipFile/EOFError/OSError,
# damaged flag or method bytes give NotImplementedError ("compression method
# not supported", "strong encryption") and RuntimeError ("encrypted, password
# required"); a damaged deflate stream gives zlib.error (a subclass of
# Exception only).  All of them mean a file we cannot read.
_ZIP_ERRORS = (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, RuntimeError,
               ValueError, OverflowError, MemoryError)
try:
    import zlib
    _ZIP_ERRORS += (zlib.error,)
except ImportError:  # pragma: no cover
    pass


class _Header:
    __slots__ = ("shape", "dtype", "fortran", "offset", "count")

    def __init__(self, shape, dtype, fortran, offset, count):
        self.shape, self.dtype, self.fortran = shape, dtype, fortran
        self.offset, self.count = offset, count

    @property
    def nbytes(self):
        return self.count * self.dtype.itemsize


def parse_npy_header(buf: bytes) -> _Header:
    """The shape, dtype and layout that a ``.npy`` header declares.

    ``buf`` holds at least the start of the member.  Raises ValueError (with
    a short reason, no file name) for anything that is not a well-formed
    header of a plain numeric or text array.
    """
    if len(buf) < 10 or buf[:6] != _MAGIC:
        raise ValueError("not a .npy array (bad magic bytes)")
    major, minor = buf[6], buf[7]
    if (major, minor) == (1, 0):
        hlen, start, enc = int.from_bytes(buf[8:10], "little"), 10, "latin1"
    elif (major, minor) in ((2, 0), (3, 0)):
        if len(buf) < 12:
            raise ValueError("truncated .npy header")
        hlen, start = int.from_bytes(buf[8:12], "little"), 12
        enc = "latin1" if major == 2 else "utf8"
    else:
        raise ValueError(f"unsupported .npy format version {major}.{minor}")
    if hlen > MAX_HEADER_BYTES:
        raise ValueError(f".npy header of {hlen} bytes (at most {MAX_HEADER_BYTES} allowed)")
    if len(buf) < start + hlen:
        raise ValueError("truncated .npy header")
    try:
        text = buf[start:start + hlen].decode(enc)
        d = ast.literal_eval(text.strip())
    except Exception as e:   # SyntaxError, ValueError, MemoryError, RecursionError...
        raise ValueError(f"malformed .npy header ({type(e).__name__})") from None
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise ValueError("malformed .npy header (expected a dict with keys 'descr', "
                         "'fortran_order' and 'shape')")
    descr, fortran, shape = d["descr"], d["fortran_order"], d["shape"]
    if not isinstance(descr, str) or len(descr) > 32:
        raise ValueError(f"unsupported array type {_short(descr)} (object, structured and "
                         f"pickled arrays are never loaded)")
    try:
        dtype = np.dtype(descr)
    except Exception:
        raise ValueError(f"malformed .npy header (unknown dtype {_short(descr)})") from None
    if dtype.hasobject:
        raise ValueError("object array refused (pickled data is never loaded)")
    if dtype.kind not in _KINDS or dtype.shape or dtype.fields:
        raise ValueError(f"unsupported array type {dtype} (object, structured and pickled "
                         f"arrays are never loaded)")
    if not isinstance(fortran, bool):
        raise ValueError(f"malformed .npy header (fortran_order {_short(fortran)})")
    if (not isinstance(shape, tuple) or len(shape) > 32
            or not all(type(s) is int and s >= 0 for s in shape)):
        raise ValueError(f"malformed .npy header (shape {_short(shape)})")
    count = 1
    for s in shape:
        count *= s
    return _Header(shape, dtype, fortran, start + hlen, count)


def _short(v, n=60):
    r = repr(v)
    return r if len(r) <= n else r[:n] + "..."


def read_npz(path, expected=None) -> dict:
    """The arrays of a ``.npz`` file as ``{name: ndarray}``, read safely.

    Parameters
    ----------
    path : str or os.PathLike
    expected : dict, optional
        ``{name: array}`` whose keys, shapes and dtypes the file must have
        exactly; they are checked against the headers before any array is
        allocated, and every problem is listed in one ValueError.

    Raises
    ------
    FileNotFoundError
        when ``path`` does not exist.
    ValueError
        naming the file, for anything else: not a zip archive, truncated,
        CRC mismatch, a member that is not a ``.npy`` array, a malformed or
        lying header, an object (pickled) array, a mismatch with `expected`.
    """
    path = os.fspath(path)
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not an .npz file") from None
    except _ZIP_ERRORS as e:
        raise ValueError(f"{path}: not a readable .npz file (truncated, corrupt or another "
                         f"format): {e}") from None
    with zf:
        try:
            infos = zf.infolist()
            archive_bytes = os.path.getsize(path)
        except _ZIP_ERRORS as e:
            raise ValueError(f"{path}: not a readable .npz file: {e}") from None
        members, errors = {}, []
        for info in infos:
            name = info.filename
            if not name.endswith(".npy"):
                raise ValueError(f"{path}: unexpected member {_short(name)} (not .npy)")
            key = name[:-4]
            if key in members:
                raise ValueError(f"{path}: member {_short(name)} appears twice")
            members[key] = info
        headers = {}
        for key, info in members.items():
            if expected is not None and key not in expected:
                continue
            try:
                headers[key] = _member_header(zf, info, archive_bytes,
                                               None if expected is None else expected[key])
            except ValueError as e:
                errors.append(f"{_short(key)}: {e}")
        if expected is not None:
            given = {k: _Spec(h.shape, h.dtype) for k, h in headers.items()}
            for k in members:
                if k not in given:      # an extra key, or a header reported above
                    ref = expected.get(k)
                    given[k] = _Spec((), None) if ref is None else _Spec(ref.shape, ref.dtype)
            errors = check_state(expected, given) + errors
        if errors:
            what = "does not match the expected state dict" if expected is not None else \
                "is not a valid .npz file"
            raise ValueError(f"{path} {what}:\n  " + "\n  ".join(errors))
        out = {}
        for key, h in headers.items():
            try:
                raw = zf.read(members[key])        # verifies the member's CRC-32
            except _ZIP_ERRORS as e:
                raise ValueError(f"{path}: member {_short(key)} is truncated or corrupt: "
                                 f"{e}") from None
            try:
                h2 = parse_npy_header(raw[:h.offset])
            except ValueError as e:
                raise ValueError(f"{path}: member {_short(key)}: {e}") from None
            if (h2.shape, h2.dtype, h2.fortran, h2.offset) != (h.shape, h.dtype, h.fortran,
                                                               h.offset) \
                    or len(raw) != h.offset + h.nbytes:
                raise ValueError(f"{path}: member {_short(key)} changed while being read")
            a = np.frombuffer(raw, dtype=h.dtype, count=h.count, offset=h.offset)
            a = a.reshape(h.shape[::-1]).T if h.fortran else a.reshape(h.shape)
            out[key] = a.copy()
        return out


def _member_header(zf, info, archive_bytes, ref=None) -> _Header:
    if info.flag_bits & 0x1:
        raise ValueError("encrypted member")
    if info.compress_type == zipfile.ZIP_STORED:
        if info.compress_size != info.file_size:
            raise ValueError(f"stored member of {info.compress_size} bytes claims "
                             f"{info.file_size} (corrupt)")
    if info.compress_size > archive_bytes or \
            info.file_size > _MAX_RATIO * max(info.compress_size, 1):
        raise ValueError(f"member sizes ({info.compress_size} stored, {info.file_size} "
                         f"uncompressed) do not fit a {archive_bytes}-byte file (corrupt)")
    try:
        with zf.open(info) as fp:
            head = fp.read(min(info.file_size, 12 + MAX_HEADER_BYTES))
    except _ZIP_ERRORS as e:
        raise ValueError(f"unreadable member ({e})") from None
    h = parse_npy_header(head)
    if ref is not None and (h.shape != tuple(ref.shape) or h.dtype != np.dtype(ref.dtype)):
        return h        # reported as a shape/dtype mismatch with the expected array
    if info.file_size != h.offset + h.nbytes:
        raise ValueError(f"member holds {info.file_size - h.offset} data bytes, its header "
                         f"declares shape {h.shape} of {h.dtype} = {h.nbytes} bytes "
                         f"(truncated or corrupt)")
    return h


def load_state_dict_file(path, expected):
    """Read a ``.npz`` state dict, checked against ``expected`` (name -> array
    of the right shape and dtype) before any array is allocated.

    Raises ValueError listing every missing, extra, wrongly shaped or typed
    key, or naming the file when it is truncated, corrupt or not an ``.npz``.
    Object arrays are refused (nothing is ever unpickled).
    """
    return read_npz(path, expected)


class _Spec:
    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype
