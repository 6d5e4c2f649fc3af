"""The single-writer lock of a session directory, and who holds it."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from clipterm.errors import SessionError
from clipterm.session.format import LOCK
from clipterm.session.journal import roll_forward


def lock_holder(root: Path) -> str | None:
    """The pid holding the session's write lock, or None; creates and changes nothing.

    Checked before a session is validated, so a reader racing a live writer reports "already
    open" instead of a half-renamed save as damage.
    """
    try:
        fd = os.open(root / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None  # absent, a symlink, unreadable: acquire() reports what is wrong with it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.read(fd, 32).decode("ascii", errors="replace").strip() or "unknown"
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class SessionLock:
    """One writer per session: an flock on .lock (released by the kernel if the holder dies)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fd: int | None = None

    def acquire(self) -> SessionLock:
        """Take the lock (a dead holder's lock is free again) and finish any interrupted save."""
        path = self.root / LOCK
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise SessionError(f"{path}: is a symlink; refusing to use it as a lock") from None
            raise SessionError(f"{path}: cannot open the session lock ({e.strerror})") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SessionError(f"{path}: not a regular file; refusing to use it as a lock")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", errors="replace").strip() or "unknown"
                raise SessionError(
                    f"{self.root}: session is already open in another clipterm process "
                    f"(pid {holder}); close that one first"
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        try:
            roll_forward(self.root)
        except OSError as e:
            self.release()
            raise SessionError(f"{e.filename or self.root}: cannot finish an interrupted save ({e.strerror})") from None
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> SessionLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
