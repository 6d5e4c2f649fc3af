"""Sessions on disk: TOML state plus .npy tensors, written atomically, read without pickle.

Layout of a session directory (docs/SESSION_FORMAT.md is the full specification):
    session.toml              metadata, parameters, change history, checkpoint sha256, [files] sha256s
    lane-a/, lane-b/          image, param, best, best_loss, opt_*, rng, history, evals (.npy), final.png
                              optional: probes.npy float32 (R,L,6), probe_steps.npy int64 (R,) (probes.py)
    frames/lane-X.npy         uint8 (N,S,S,3) trajectory, frames/lane-X-steps.npy int64 (N,)
    .pending/                 a save in progress (journal); .lock  the single-writer lock

A save writes every file into .pending/, fsyncs, marks it COMPLETE, then renames each file into
place. A crash before COMPLETE leaves the previous save untouched; a crash after it is rolled
forward by the next writer, and readers prefer the pending copy meanwhile. Loading validates
everything (no pickle, header checked before data, sha256 of each .npy against [files]) and
changes nothing on disk, so a refused session is left byte-identical.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import hashlib
import io
import math
import os
import shutil
import stat
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.lib.format as npformat
import tomli_w

from clipterm import __version__
from clipterm.engine import EVAL_COLUMNS, HISTORY_COLUMNS, LANES
from clipterm.errors import SessionError
from clipterm.presets import LaneParams, ParamError, from_dict

FORMAT_VERSION = 1
TOML_NAME = "session.toml"
PENDING = ".pending"
COMPLETE = "COMPLETE"
LOCK = ".lock"
MAX_STEPS = 10_000_000
MAX_NPY_BYTES = 2 << 30
MAX_TOML_BYTES = 4 << 20
MAX_JOURNAL_BYTES = 64 << 10
FRAME_SIZE = 64
# key -> (dtype, shape kind): "canvas" = (3,H,W); "scalar" = (); "rng" = 1-D; "history"/"evals" = 2-D
LANE_ARRAYS: dict[str, tuple[str, str]] = {
    "image": ("float32", "canvas"),
    "param": ("float32", "canvas"),
    "best": ("float32", "canvas"),
    "best_loss": ("float32", "scalar"),
    "opt_step": ("float32", "scalar"),
    "opt_exp_avg": ("float32", "canvas"),
    "opt_exp_avg_sq": ("float32", "canvas"),
    "rng": ("uint8", "rng"),
    "history": ("float32", "history"),
    "evals": ("float32", "evals"),
}
FINITE = ("image", "param", "best", "opt_exp_avg", "opt_exp_avg_sq", "opt_step")
# Numbers session.toml keeps per lane for `clipterm info` (derived from history/evals at save time)
SUMMARY_KEYS = ("last_similarity", "best_similarity", "robust_similarity", "verified_similarity")
# Optional per-lane arrays (absent in older sessions): layer probe records, see clipterm/probes.py
OPTIONAL_LANE_ARRAYS: dict[str, str] = {"probes": "float32", "probe_steps": "int64"}
PROBE_STATS = 6


def lane_dir_name(lane: str) -> str:
    return f"lane-{lane}"


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@dataclass
class Session:
    """Everything a session directory holds, validated, in memory."""

    path: Path
    prompt: str
    seed: int
    model: dict
    lanes: dict[str, LaneParams]
    steps: int
    arrays: dict[str, dict[str, np.ndarray]]
    frames: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    changes: list[dict] = field(default_factory=list)
    eval_every: int = 50
    frame_every: int = 10
    created: str = field(default_factory=now)
    updated: str = field(default_factory=now)
    theme: str = ""
    summary: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- writing
def known_files() -> set[str]:
    """Every path (relative to the session) a save may write; journals and [files] may name only these."""
    names = {TOML_NAME}
    for lane in LANES:
        d = lane_dir_name(lane)
        names |= {f"{d}/{key}.npy" for key in (*LANE_ARRAYS, *OPTIONAL_LANE_ARRAYS)}
        names |= {f"{d}/final.png", f"frames/{d}.npy", f"frames/{d}-steps.npy"}
    return names


def _flat(rel: str) -> str:
    """A journal holds every file flat in .pending/ ('lane-a/image.npy' -> 'lane-a__image.npy')."""
    return rel.replace("/", "__")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr if arr.flags.c_contiguous else np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _png_bytes(canvas: np.ndarray) -> bytes:
    from PIL import Image

    arr = (np.clip(canvas, 0, 1).transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def render_toml(s: Session, hashes: dict[str, str] | None = None) -> bytes:
    """session.toml's bytes; `hashes` (relative path -> sha256) becomes the [files] table."""
    lanes = {}
    for name, p in s.lanes.items():
        table = {"dir": lane_dir_name(name), **p.to_dict()}
        table.update(s.summary.get(name, {}))
        lanes[name] = table
    doc = {
        "format_version": FORMAT_VERSION,
        "clipterm_version": __version__,
        "created": s.created,
        "updated": s.updated,
        "prompt": s.prompt,
        "seed": s.seed,
        "steps": s.steps,
        "eval_every": s.eval_every,
        "frame_every": s.frame_every,
        "theme": s.theme,
        "history_columns": list(HISTORY_COLUMNS),
        "eval_columns": list(EVAL_COLUMNS),
        "model": {k: v for k, v in s.model.items() if v is not None},
        "lanes": lanes,
        "changes": [{k: ("" if v is None else v) for k, v in c.items()} for c in s.changes],
        "files": dict(sorted((hashes or {}).items())),
    }
    return tomli_w.dumps(doc).encode()


def save(s: Session) -> None:
    """Write the whole session atomically (journal in .pending/, then rename into place).

    Disk errors become a SessionError: the previous save is still complete then, and the caller
    decides whether to go on.
    """
    try:
        _save(s)
    except OSError as e:
        raise SessionError(f"{e.filename or s.path}: cannot save the session ({e.strerror or e})") from None


def _save(s: Session) -> None:
    root = s.path
    root.mkdir(parents=True, exist_ok=True)
    _roll_forward(root)  # an interrupted save is finished (or dropped), never deleted half-moved
    pending = root / PENDING
    pending.mkdir()
    files: dict[str, bytes] = {}
    for lane, arrays in s.arrays.items():
        d = lane_dir_name(lane)
        for key in LANE_ARRAYS:
            files[f"{d}/{key}.npy"] = _npy_bytes(arrays[key])
        files[f"{d}/final.png"] = _png_bytes(arrays["image"])
        for key in OPTIONAL_LANE_ARRAYS:
            if key in arrays:
                files[f"{d}/{key}.npy"] = _npy_bytes(arrays[key])
    for lane, (frames, steps) in s.frames.items():
        files[f"frames/{lane_dir_name(lane)}.npy"] = _npy_bytes(frames.astype(np.uint8))
        files[f"frames/{lane_dir_name(lane)}-steps.npy"] = _npy_bytes(steps.astype(np.int64))
    hashes = {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items() if rel.endswith(".npy")}
    s.updated = now()
    files[TOML_NAME] = render_toml(s, hashes)  # last: renamed into place after every file it vouches for
    for rel, data in files.items():
        _write_bytes(pending / _flat(rel), data)
    _fsync_dir(pending)
    _write_bytes(pending / COMPLETE, "\n".join(files).encode())
    _fsync_dir(pending)
    _roll_forward(root)


def _roll_forward(root: Path) -> None:
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
    if not _is_regular(marker):
        shutil.rmtree(pending)
        _fsync_dir(root)
        return
    known = known_files()
    names = [n for n in marker.read_text(encoding="utf-8", errors="replace").splitlines() if n in known]
    dirs = {root}
    for rel in names:
        src = pending / _flat(rel)
        if not _is_regular(src):
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


# --------------------------------------------------------------------------- locking
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
            _roll_forward(self.root)
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


# --------------------------------------------------------------------------- reading
def is_session(path: Path) -> bool:
    """Whether `path` claims to be a session (then it is loaded and validated, never overwritten)."""
    return os.path.lexists(path / TOML_NAME) or os.path.lexists(path / PENDING / COMPLETE)


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _one_line(text: str, limit: int = 160) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit] + "…"


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


def _read_regular(path: Path, root: Path, limit: int) -> bytes:
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


def _parse_npy(data: bytes, path: Path, dtype: str) -> np.ndarray:
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
        raise SessionError(f"{path}: not a valid .npy file ({_one_line(e, 100)})") from None
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


def _load_npy(path: Path, root: Path, dtype: str) -> np.ndarray:
    """One .npy file, validated (no hash check: see _Files.npy for files session.toml lists)."""
    return _parse_npy(_read_regular(path, root, MAX_NPY_BYTES), path, dtype)


def _journal(root: Path) -> dict[str, Path] | None:
    """The files of an interrupted but COMPLETE save (relative path -> copy in .pending/), or None."""
    pending = root / PENDING
    try:
        st = os.lstat(pending)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise SessionError(f"{pending}: is a symlink; the save journal must be a real directory")
    if not stat.S_ISDIR(st.st_mode):
        raise SessionError(f"{pending}: not a directory")
    marker = pending / COMPLETE
    if not os.path.lexists(marker):
        return None  # the save was interrupted before it was complete: the previous save stands
    text = _read_regular(marker, root, MAX_JOURNAL_BYTES).decode("utf-8", errors="replace")
    known = known_files()
    out: dict[str, Path] = {}
    for rel in text.splitlines():
        if rel not in known:
            raise SessionError(f"{marker}: names {_one_line(rel, 60)!r}, which is not a session file")
        out[rel] = pending / _flat(rel)
    if TOML_NAME not in out:
        raise SessionError(f"{marker}: does not include {TOML_NAME}")
    return out


def _source(root: Path, rel: str) -> Path:
    """Where a file's latest complete save lives: the pending copy if a save was interrupted."""
    journal = _journal(root)
    if journal is not None and rel in journal and os.path.lexists(journal[rel]):
        return journal[rel]
    return root / rel


@dataclass
class _Files:
    """Where each file of the latest complete save lives, and the sha256 that session.toml records."""

    root: Path
    journal: dict[str, Path] | None
    table: dict[str, str] = field(default_factory=dict)

    def path(self, rel: str) -> Path:
        j = self.journal
        if j is not None and rel in j and os.path.lexists(j[rel]):
            return j[rel]
        return self.root / rel

    def npy(self, rel: str, dtype: str) -> tuple[np.ndarray, Path]:
        path = self.path(rel)
        data = _read_regular(path, self.root, MAX_NPY_BYTES)
        arr = _parse_npy(data, path, dtype)
        want = self.table.get(rel)
        if want is not None and hashlib.sha256(data).hexdigest() != want:
            raise SessionError(
                f"{path}: sha256 differs from the one session.toml records "
                f"(the file was changed or damaged after it was saved)"
            )
        return arr, path


def _req(doc: dict, key: str, kind: type | tuple, where: str) -> object:
    if key not in doc:
        raise SessionError(f"{where}: missing key '{key}'")
    val = doc[key]
    if isinstance(val, bool) and kind is not bool:
        raise SessionError(f"{where}: '{key}' must be {getattr(kind, '__name__', kind)}, got {val!r}")
    if not isinstance(val, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise SessionError(f"{where}: '{key}' must be {name}, got {type(val).__name__}")
    return val


def _toml_doc(files: _Files) -> tuple[dict, Path]:
    root = files.root
    path = files.path(TOML_NAME)
    if not os.path.lexists(path):
        raise SessionError(f"{root}: not a clipterm session (no {TOML_NAME})")
    data = _read_regular(path, root, MAX_TOML_BYTES)
    try:
        return tomllib.loads(data.decode("utf-8")), path
    except tomllib.TOMLDecodeError as e:
        raise SessionError(f"{path}: TOML syntax error: {_one_line(e)}") from None
    except UnicodeDecodeError:
        raise SessionError(f"{path}: not UTF-8 text") from None


def _check_root(root: Path) -> None:
    if root.is_symlink():
        raise SessionError(f"{root}: session directory is a symlink; open its target instead")
    if not root.exists():
        raise SessionError(f"{root}: no session here (the directory does not exist)")
    if not root.is_dir():
        raise SessionError(f"{root}: not a directory")


def read_toml(root: Path) -> dict:
    """session.toml of the latest complete save, parsed but not validated."""
    root = Path(root)
    _check_root(root)
    return _toml_doc(_Files(root, _journal(root)))[0]


def _fingerprint(root: Path) -> tuple:
    """What changes when a writer saves: lets a reader tell damage from a save racing its read."""
    out = []
    for rel in (TOML_NAME, PENDING, f"{PENDING}/{COMPLETE}"):
        try:
            st = os.lstat(root / rel)
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def load(root: Path, with_arrays: bool = True) -> Session:
    """Read and validate a session; raise SessionError naming the file and the problem.

    Reading never changes anything on disk. If a writer saved while we read (the files changed
    under us), the read is retried instead of reporting damage.
    """
    root = Path(root)
    for attempt in range(4):
        before = _fingerprint(root)
        try:
            return _load_once(root, with_arrays)
        except SessionError:
            if attempt == 3 or _fingerprint(root) == before:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def _load_once(root: Path, with_arrays: bool) -> Session:
    _check_root(root)
    files = _Files(root, _journal(root))
    doc, path = _toml_doc(files)
    where = str(path)
    version = _req(doc, "format_version", int, where)
    if version > FORMAT_VERSION:
        raise SessionError(
            f"{where}: format_version {version} was written by a newer clipterm (this one reads {FORMAT_VERSION})"
        )
    if version < 1:
        raise SessionError(f"{where}: invalid format_version {version}")
    prompt = _req(doc, "prompt", str, where)
    seed = _req(doc, "seed", int, where)
    if not 0 <= seed < 2**63:
        raise SessionError(f"{where}: seed {seed} out of range")
    steps = _req(doc, "steps", int, where)
    if not 0 <= steps <= MAX_STEPS:
        raise SessionError(f"{where}: steps {steps} out of range [0, {MAX_STEPS}]")
    eval_every = _req(doc, "eval_every", int, where)
    frame_every = _req(doc, "frame_every", int, where)
    if not 0 <= eval_every <= MAX_STEPS or not 1 <= frame_every <= MAX_STEPS:
        raise SessionError(f"{where}: eval_every/frame_every out of range")
    model = dict(_req(doc, "model", dict, where))
    _check_model(model, f"{where} [model]")
    lanes_doc = _req(doc, "lanes", dict, where)
    if not lanes_doc or set(lanes_doc) - set(LANES):
        raise SessionError(f"{where}: [lanes] must hold 'a' and/or 'b', got {sorted(lanes_doc)}")
    lanes: dict[str, LaneParams] = {}
    summary: dict[str, dict] = {}
    for name in LANES:
        if name in lanes_doc:
            lanes[name], summary[name] = _lane_table(root, _req(lanes_doc, name, dict, where), name, where)
    changes = _check_changes(doc.get("changes", []), steps, where)
    theme = doc.get("theme", "")
    if not isinstance(theme, str):
        raise SessionError(f"{where}: 'theme' must be a string")
    files.table = _check_files_table(_req(doc, "files", dict, where), lanes, where)
    s = Session(
        path=root,
        prompt=prompt,
        seed=seed,
        model=model,
        lanes=lanes,
        steps=steps,
        arrays={},
        changes=changes,
        eval_every=eval_every,
        frame_every=frame_every,
        created=str(doc.get("created", now())),
        updated=str(doc.get("updated", now())),
        theme=theme,
        summary=summary,
    )
    if with_arrays:
        for name in lanes:
            s.arrays[name] = _load_lane(files, name, steps)
        shapes = {a["param"].shape for a in s.arrays.values()}
        if len(shapes) > 1:
            raise SessionError(f"{root}: lanes have different canvas shapes {sorted(shapes)}")
        for name in lanes:
            s.frames[name] = _load_frames(files, name, steps, s.arrays[name]["param"].shape[-1])
    return s


def _check_model(model: dict, where: str) -> None:
    _req(model, "name", str, where)
    _req(model, "pretrained", str, where)
    if "checkpoint" in model:
        _req(model, "checkpoint", str, where)
    if "sha256" in model:
        sha = _req(model, "sha256", str, where)
        if not _is_sha256(sha):
            raise SessionError(f"{where}: 'sha256' must be 64 hex digits, got {_one_line(sha, 70)!r}")
    if "image_size" in model:
        size = _req(model, "image_size", int, where)
        if not 8 <= size <= 4096:
            raise SessionError(f"{where}: 'image_size' {size} out of range [8, 4096]")


def _is_sha256(text: object) -> bool:
    return isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _lane_table(root: Path, raw: dict, name: str, where: str) -> tuple[LaneParams, dict]:
    """A [lanes.X] table: its directory (which must be lane-X), its summary numbers, its parameters."""
    table = dict(raw)
    expected = lane_dir_name(name)
    d = table.pop("dir", expected)
    if not isinstance(d, str) or d != expected:
        if isinstance(d, str) and root.resolve() not in (root / d).resolve().parents:
            raise SessionError(f"{where}: lane {name} dir {_one_line(d, 80)!r} points outside the session directory")
        raise SessionError(f"{where}: lane {name} dir must be {expected!r}, got {_one_line(repr(d), 80)}")
    summary = {}
    for key in SUMMARY_KEYS:
        if key in table:
            v = table.pop(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SessionError(
                    f"{where}: lane {name} '{key}' must be a finite number, got {_one_line(repr(v), 40)}"
                )
            summary[key] = float(v)
    if not isinstance(table.get("preset"), str):
        raise SessionError(f"{where}: lane {name} 'preset' must be a string naming a preset")
    try:
        return from_dict(table), summary
    except ParamError as e:
        raise SessionError(f"{where}: lane {name}: {_one_line(e)}") from None


def _check_changes(changes: object, steps: int, where: str) -> list[dict]:
    """The change history: tables of (step <= steps, lane, key, old, new) with scalar values."""
    if not isinstance(changes, list) or not all(isinstance(c, dict) for c in changes):
        raise SessionError(f"{where}: 'changes' must be an array of tables")
    for i, c in enumerate(changes):
        step = c.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= steps:
            raise SessionError(f"{where}: changes[{i}] 'step' must be a whole number within [0, {steps}]")
        if c.get("lane") not in ("*", *LANES) or not isinstance(c.get("key"), str):
            raise SessionError(f"{where}: changes[{i}] needs 'lane' (*, a or b) and a string 'key'")
        for k, v in c.items():
            if not isinstance(v, (str, int, float, bool)):
                raise SessionError(f"{where}: changes[{i}] '{k}' must be a string, number or boolean")
    return [dict(c) for c in changes]


def _check_files_table(table: dict, lanes: dict, where: str) -> dict[str, str]:
    """[files]: the sha256 of every .npy file of the save; required arrays listed, optional ones paired."""
    known = known_files()
    for rel, sha in table.items():
        if rel not in known or not rel.endswith(".npy"):
            raise SessionError(f"{where}: [files] names {_one_line(rel, 60)!r}, which is not a session file")
        if not _is_sha256(sha):
            raise SessionError(f"{where}: [files] '{rel}' must be a sha256 (64 hex digits)")
    for lane in LANES:
        d = lane_dir_name(lane)
        listed = {rel for rel in table if rel.startswith((f"{d}/", f"frames/{d}"))}
        if lane not in lanes:
            if listed:
                raise SessionError(f"{where}: [files] lists {sorted(listed)[0]} but there is no lane {lane}")
            continue
        for key in LANE_ARRAYS:
            if f"{d}/{key}.npy" not in table:
                raise SessionError(f"{where}: [files] does not list {d}/{key}.npy")
        for pair in ((f"frames/{d}.npy", f"frames/{d}-steps.npy"), (f"{d}/probes.npy", f"{d}/probe_steps.npy")):
            if (pair[0] in table) != (pair[1] in table):
                raise SessionError(f"{where}: [files] lists only one of {pair[0]} and {pair[1]}")
    return {str(k): str(v) for k, v in table.items()}


def _load_lane(files: _Files, lane: str, steps: int) -> dict[str, np.ndarray]:
    d = lane_dir_name(lane)
    out: dict[str, np.ndarray] = {}
    paths: dict[str, Path] = {}
    canvas_shape = None
    for key, (dtype, kind) in LANE_ARRAYS.items():
        arr, path = files.npy(f"{d}/{key}.npy", dtype)
        paths[key] = path
        if kind == "canvas":
            if arr.ndim != 3 or arr.shape[0] != 3 or arr.shape[1] != arr.shape[2] or not 8 <= arr.shape[1] <= 4096:
                raise SessionError(f"{path}: shape {arr.shape}, expected (3, S, S)")
            if canvas_shape is not None and arr.shape != canvas_shape:
                raise SessionError(f"{path}: shape {arr.shape} differs from the lane's canvas {canvas_shape}")
            canvas_shape = arr.shape
        elif kind == "scalar" and arr.shape != ():
            raise SessionError(f"{path}: shape {arr.shape}, expected a scalar")
        elif kind == "rng" and (arr.ndim != 1 or not 8 <= arr.size <= 1 << 16):
            raise SessionError(f"{path}: shape {arr.shape}, expected a 1-D generator state")
        elif kind == "history" and (arr.ndim != 2 or arr.shape[1] != len(HISTORY_COLUMNS)):
            raise SessionError(f"{path}: shape {arr.shape}, expected (steps, {len(HISTORY_COLUMNS)})")
        elif kind == "evals" and (arr.ndim != 2 or arr.shape[1] != len(EVAL_COLUMNS)):
            raise SessionError(f"{path}: shape {arr.shape}, expected (n, {len(EVAL_COLUMNS)})")
        if key in FINITE and not np.isfinite(arr).all():
            raise SessionError(f"{path}: contains NaN or Inf")
        if key == "image" and (arr.min() < 0 or arr.max() > 1):
            raise SessionError(f"{path}: values outside [0, 1]")
        if key == "opt_exp_avg_sq" and arr.min() < 0:
            raise SessionError(f"{path}: negative second moments")
        if key == "rng" and not _valid_generator_state(arr):
            raise SessionError(f"{path}: not a valid random generator state")
        out[key] = arr
    if len(out["history"]) != steps:
        raise SessionError(f"{paths['history']}: has {len(out['history'])} rows but session.toml says steps = {steps}")
    opt_step = float(out["opt_step"])
    if opt_step != int(opt_step) or not 0 <= opt_step <= steps:
        raise SessionError(
            f"{paths['opt_step']}: optimizer step {opt_step:g} is not a whole number within [0, {steps}]"
        )
    best_loss = float(out["best_loss"])
    if math.isnan(best_loss) or best_loss == -math.inf:
        raise SessionError(f"{paths['best_loss']}: best loss {best_loss} (must be a number or +inf)")
    ev = out["evals"]
    if len(ev) and (not np.isfinite(ev[:, 0]).all() or ev[:, 0].min() < 0 or ev[:, 0].max() > steps):
        raise SessionError(f"{paths['evals']}: evaluation steps must lie within [0, {steps}]")
    out.update(_load_probes(files, lane, steps))
    return out


def _valid_generator_state(arr: np.ndarray) -> bool:
    """Whether torch accepts `arr` as a CPU generator state (checked here, before any lock is taken)."""
    import torch

    try:
        torch.Generator().set_state(torch.from_numpy(arr.copy()))
    except (RuntimeError, ValueError, TypeError):
        return False
    return True


def _load_probes(files: _Files, lane: str, steps: int) -> dict[str, np.ndarray]:
    """The optional probe records: both files or neither, at increasing steps <= steps (NaN = not measured)."""
    rel = lane_dir_name(lane)
    if f"{rel}/probes.npy" not in files.table:
        return {}
    stats, ppath = files.npy(f"{rel}/probes.npy", OPTIONAL_LANE_ARRAYS["probes"])
    at, spath = files.npy(f"{rel}/probe_steps.npy", OPTIONAL_LANE_ARRAYS["probe_steps"])
    if stats.ndim != 3 or stats.shape[2] != PROBE_STATS or not 1 <= stats.shape[1] <= 4096:
        raise SessionError(f"{ppath}: shape {stats.shape}, expected (records, layers, {PROBE_STATS})")
    if at.ndim != 1 or len(at) != len(stats):
        raise SessionError(f"{spath}: shape {at.shape} does not match {len(stats)} probe records")
    if len(at) and (at.min() < 1 or at.max() > steps or (np.diff(at) <= 0).any()):
        raise SessionError(f"{spath}: steps must increase within [1, {steps}]")
    return {"probes": stats, "probe_steps": at}


def _load_frames(files: _Files, lane: str, steps: int, canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """The trajectory: uint8 (N,S,S,3) frames at strictly increasing steps within [0, steps]."""
    rel = f"frames/{lane_dir_name(lane)}"
    side = min(FRAME_SIZE, canvas)
    if rel + ".npy" not in files.table:
        return np.zeros((0, side, side, 3), np.uint8), np.zeros((0,), np.int64)
    frames, fpath = files.npy(rel + ".npy", "uint8")
    at, spath = files.npy(rel + "-steps.npy", "int64")
    if frames.ndim != 4 or frames.shape[1:] != (side, side, 3):
        raise SessionError(f"{fpath}: shape {frames.shape}, expected (N, {side}, {side}, 3)")
    if at.ndim != 1 or len(at) != len(frames):
        raise SessionError(f"{spath}: shape {at.shape} does not match {len(frames)} frames")
    if len(at) and (at.min() < 0 or at.max() > steps or (np.diff(at) <= 0).any()):
        raise SessionError(f"{spath}: frame steps must increase within [0, {steps}]")
    return frames, at
