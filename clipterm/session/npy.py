"""Reading session files safely and .npy without pickle; writing .npy and .png bytes.

Session directories may be damaged or hostile, so every read refuses symlinks, special files and
oversized files, and a .npy header is checked against the file before any data is used.
"""

from __future__ import annotations

import io
import math
import os
import stat
from pathlib import Path

import numpy as np
import numpy.lib.format as npformat

from clipterm.errors import SessionError
from clipterm.text import printable

MAX_NPY_BYTES = 2 << 30


def one_line(text: object, limit: int = 160) -> str:
    """`text` on one line, cut at `limit`, control characters escaped: untrusted text quoted in an error
    stays one short line and cannot drive the terminal it is printed on."""
    line = printable(" ".join(str(text).split()))
    return line if len(line) <= limit else line[:limit] + "…"


def is_regular_file(path: Path) -> bool:
    """Whether `path` itself (not a symlink's target) is a regular file."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _check_regular(path: Path, root: Path) -> None:
    """`path` is a regular file reached through real directories inside `root` (no symlinks anywhere)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise SessionError(f"{path}: missing") from None
    except OSError as e:
        raise SessionError(f"{path}: unreadable ({e.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise SessionError(f"{path}: is a symlink; session files must be regular files")
    if not stat.S_ISREG(st.st_mode):
        raise SessionError(f"{path}: not a regular file")
    parent = path.parent
    while parent != root and root in parent.parents:
        if os.path.islink(parent):
            raise SessionError(f"{parent}: is a symlink; session directories must be real directories")
        parent = parent.parent
    if root.resolve() not in path.resolve().parents:
        raise SessionError(f"{path}: lies outside the session directory")


def read_regular(path: Path, root: Path, limit: int) -> bytes:
    """A session file's bytes, refusing symlinks, special files and anything over `limit` bytes."""
    _check_regular(path, root)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise SessionError(f"{path}: unreadable ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise SessionError(f"{path}: not a regular file")
        if st.st_size > limit:
            raise SessionError(f"{path}: too large ({st.st_size} bytes, at most {limit})")
        return f.read(limit + 1)


def parse_npy(data: bytes, path: Path, dtype: str) -> np.ndarray:
    """Decode .npy bytes without pickle, checking the header against the data before using either.

    The header is read first, so object arrays are refused before any payload is touched and a
    header promising more (or fewer) bytes than the file holds is refused before any allocation.
    """
    if not data:
        raise SessionError(f"{path}: empty file")
    buf = io.BytesIO(data)
    try:
        version = npformat.read_magic(buf)
        if version == (1, 0):
            shape, fortran, dt = npformat.read_array_header_1_0(buf)
        elif version == (2, 0):
            shape, fortran, dt = npformat.read_array_header_2_0(buf)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as e:  # truncated or malformed headers raise many types; none may escape
        raise SessionError(f"{path}: not a valid .npy file ({one_line(e, 100)})") from None
    if dt.hasobject:
        raise SessionError(f"{path}: holds Python objects (pickle), which clipterm never loads")
    if dt != np.dtype(dtype):
        raise SessionError(f"{path}: dtype {dt}, expected {dtype}")
    if len(shape) > 8 or any(d < 0 for d in shape):
        raise SessionError(f"{path}: invalid shape {shape}")
    count = math.prod(shape)
    offset = buf.tell()
    if count * dt.itemsize != len(data) - offset:
        what = "truncated" if count * dt.itemsize > len(data) - offset else "has trailing bytes"
        raise SessionError(
            f"{path}: {what}: header says {shape} ({count * dt.itemsize} bytes of data), "
            f"file holds {len(data) - offset}"
        )
    if count == 0:
        return np.zeros(shape, dt)
    arr = np.frombuffer(data, dtype=dt, count=count, offset=offset).reshape(shape, order="F" if fortran else "C")
    return np.array(arr, order="C")


def npy_bytes(arr: np.ndarray) -> bytes:
    """`arr` as .npy bytes (C order, never pickled), ready to be hashed and journaled."""
    buf = io.BytesIO()
    np.save(buf, arr if arr.flags.c_contiguous else np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def png_bytes(canvas: np.ndarray) -> bytes:
    """A (3,H,W) canvas in [0, 1] as PNG bytes (final.png, for viewers that do not read .npy)."""
    from PIL import Image

    arr = (np.clip(canvas, 0, 1).transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()
