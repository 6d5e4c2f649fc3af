"""The journaled atomic save: every file goes to .pending/ first, then is renamed into place.

A save writes every file into .pending/, fsyncs, marks it COMPLETE, then renames each file into
place. A crash before COMPLETE leaves the previous save untouched; a crash after it is rolled
forward by the next writer (readers prefer the pending copy meanwhile, see format.load).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import numpy as np

from clipterm.errors import SessionError
from clipterm.session.format import (
    COMPLETE,
    LANE_ARRAYS,
    OPTIONAL_LANE_ARRAYS,
    PENDING,
    TOML_NAME,
    Session,
    is_known_file,
    is_session,
    lane_dir_name,
    now,
    pending_name,
    render_toml,
    tensor_arrays,
)
from clipterm.session.npy import is_regular_file, npy_bytes, png_bytes


def _fsync_dir(path: Path) -> None:
    """Make a directory's new entries and renames durable, not only the files' contents."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes) -> None:
    """Write and fsync a file: it is on disk before COMPLETE (or a rename) vouches for it."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save(s: Session) -> None:
    """Write the whole session atomically (journal in .pending/, then rename into place).

    Disk errors (a full disk: ENOSPC) become a one-line SessionError. Before the commit point the
    partial journal is removed and the previous save is still complete, so the caller can go on
    and simply save again later.
    """
    try:
        _save(s)
    except OSError as e:
        at = f" writing {Path(e.filename).name}" if e.filename else ""
        kept = "; the previous save is kept" if is_session(s.path) else ""
        raise SessionError(f"{s.path}: cannot save the session ({e.strerror or e}{at}){kept}") from None


def _save(s: Session) -> None:
    root = s.path
    root.mkdir(parents=True, exist_ok=True)
    roll_forward(root)  # an interrupted save is finished (or dropped), never deleted half-moved
    files = _encode(s)
    pending = root / PENDING
    pending.mkdir()
    committed = False
    try:
        for rel, data in files.items():
            write_bytes(pending / pending_name(rel), data)
        _fsync_dir(pending)
        write_bytes(pending / COMPLETE, "\n".join(files).encode())
        _fsync_dir(pending)
        committed = True
    finally:
        if not committed:  # out of space, an I/O error, an interrupt: drop the partial journal
            shutil.rmtree(pending, ignore_errors=True)
    try:
        roll_forward(root)
    except OSError as e:  # committed: readers already see the new save, the next writer finishes it
        raise SessionError(
            f"{root}: the save is complete in {PENDING}/ but could not be moved into place "
            f"({e.strerror or e}); the next clipterm to open the session finishes it"
        ) from None


def _encode(s: Session) -> dict[str, bytes]:
    """Every file of the save as bytes (relative path -> bytes), session.toml last."""
    files: dict[str, bytes] = {}
    for lane, arrays in s.arrays.items():
        d = lane_dir_name(lane)
        for key in (*LANE_ARRAYS, *tensor_arrays(s.lanes[lane], arrays["image"].shape[-1])):
            files[f"{d}/{key}.npy"] = npy_bytes(arrays[key])
        files[f"{d}/final.png"] = png_bytes(arrays["image"])
        for key in OPTIONAL_LANE_ARRAYS:
            if key in arrays:
                files[f"{d}/{key}.npy"] = npy_bytes(arrays[key])
    for lane, (frames, steps) in s.frames.items():
        files[f"frames/{lane_dir_name(lane)}.npy"] = npy_bytes(frames.astype(np.uint8))
        files[f"frames/{lane_dir_name(lane)}-steps.npy"] = npy_bytes(steps.astype(np.int64))
    hashes = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items() if rel.endswith(".npy")}
    s.updated = now()
    files[TOML_NAME] = render_toml(s, hashes)  # last: renamed into place after every file it vouches for
    return files


def roll_forward(root: Path) -> None:
    """Move a COMPLETE journal into place; drop an incomplete one (the previous save stands).

    Called by the lock holder only, after the session was validated; still it moves nothing but
    regular files with known names into real directories of the session.
    """
    pending = root / PENDING
    try:
        st = os.lstat(pending)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):  # a stray file or symlink: remove the entry, never its target
        os.unlink(pending)
        _fsync_dir(root)
        return
    marker = pending / COMPLETE
    if not is_regular_file(marker):
        shutil.rmtree(pending)
        _fsync_dir(root)
        return
    text = marker.read_text(encoding="utf-8", errors="replace")
    names = [n for n in text.splitlines() if is_known_file(n)]
    dirs = {root}
    for rel in names:
        src = pending / pending_name(rel)
        if not is_regular_file(src):
            continue  # already moved before a crash
        dst = root / rel
        if dst.parent != root:
            if os.path.islink(dst.parent):
                raise SessionError(f"{dst.parent}: is a symlink; refusing to write through it")
            dst.parent.mkdir(exist_ok=True)
        dirs.add(dst.parent)
        os.replace(src, dst)
    for d in dirs:
        _fsync_dir(d)
    marker.unlink()
    shutil.rmtree(pending, ignore_errors=True)
    _fsync_dir(root)
