"""Files clipterm writes at a path the user names (`export --out`, `analyze --out`, batch summaries).

Two rules: an output never lands in a session directory (`--out S/session.toml` or
`--out S/lane-a/image.npy` would otherwise replace the session's own files with a PNG), and an
output is never half-written (it goes to a temporary file beside it and is renamed into place, so
a crash or a full disk leaves the old file or none, and a hard link or symlink at the path is
replaced rather than written through).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from clipterm.errors import ClipTermError


def session_around(path: Path) -> Path | None:
    """The session directory that `path` is or lies inside (symlinks resolved), or None.

    A directory holding only a recipe (a start-up killed before the first save) counts: it is a
    session being made, and its recipe.toml is what resumes it.
    """
    from clipterm.recipe import RECIPE
    from clipterm.session import is_session

    try:
        real = Path(path).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise ClipTermError(f"{path}: cannot resolve ({e})") from None
    for d in (real, *real.parents):
        if is_session(d) or os.path.lexists(d / RECIPE):
            return d
    return None


def check_output(path: Path, what: str = "output") -> Path:
    """Refuse an output path that is, or lies inside, a session directory; returns `path`."""
    path = Path(path)
    s = session_around(path)
    if s is not None:
        where = "is the session" if s == path.resolve() else "lies inside the session"
        raise ClipTermError(f"{path}: {where} {s}; write the {what} outside session directories")
    return path


def check_output_file(path: Path, what: str = "output") -> Path:
    """An output file's path: outside sessions, not a directory or a special file; parents created."""
    path = check_output(path, what)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise ClipTermError(f"{path}: cannot write ({e.strerror})") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise ClipTermError(f"{path}: is a directory; give a file name")
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise ClipTermError(f"{path}: exists and is not a regular file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ClipTermError(f"{path.parent}: cannot create output directory ({e.strerror})") from None
    return path


def write_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all: a new temporary file beside it, then a rename.

    The temporary file is created exclusively (O_EXCL, O_NOFOLLOW), so nothing planted at its name
    is written through; on any error it is removed and the old file at `path` stays as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as e:
        raise ClipTermError(f"{path}: cannot write ({e.strerror or e})") from None
