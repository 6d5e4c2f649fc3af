"""Sessions on disk: TOML state plus .npy tensors, written atomically, read without pickle.

Layout of a session directory (see docs/ARCHITECTURE.md):
    session.toml              metadata, parameters, change history, checkpoint sha256
    lane-a/, lane-b/          image, param, best, best_loss, opt_*, rng, history, evals (.npy), final.png
    frames/lane-X.npy         uint8 (N,S,S,3) trajectory, frames/lane-X-steps.npy int64 (N,)
    .pending/                 a save in progress (journal); .lock  the single-writer lock

A save writes every file into .pending/, fsyncs, marks it COMPLETE, then renames each file into
place. A crash before COMPLETE leaves the previous save untouched; a crash after it is rolled
forward by the next writer, and readers prefer the pending copy meanwhile.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import math
import os
import shutil
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
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
FRAME_SIZE = 64
# key -> (dtype, shape kind): "canvas" = (3,H,W); "scalar" = (); "rng" = 1-D; "history"/"evals" = 2-D
LANE_ARRAYS: dict[str, tuple[str, str]] = {
    "image": ("float32", "canvas"), "param": ("float32", "canvas"), "best": ("float32", "canvas"),
    "best_loss": ("float32", "scalar"), "opt_step": ("float32", "scalar"),
    "opt_exp_avg": ("float32", "canvas"), "opt_exp_avg_sq": ("float32", "canvas"),
    "rng": ("uint8", "rng"), "history": ("float32", "history"), "evals": ("float32", "evals"),
}
FINITE = ("image", "param", "best", "opt_exp_avg", "opt_exp_avg_sq", "opt_step")


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
    import io

    buf = io.BytesIO()
    np.save(buf, arr if arr.flags.c_contiguous else np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _png_bytes(canvas: np.ndarray) -> bytes:
    import io

    from PIL import Image

    arr = (np.clip(canvas, 0, 1).transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def render_toml(s: Session) -> bytes:
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
    }
    return tomli_w.dumps(doc).encode()


def save(s: Session) -> None:
    """Write the whole session atomically (journal in .pending/, then rename into place)."""
    root = s.path
    root.mkdir(parents=True, exist_ok=True)
    pending = root / PENDING
    if pending.exists():
        shutil.rmtree(pending)
    pending.mkdir()
    files: dict[str, bytes] = {}
    for lane, arrays in s.arrays.items():
        d = lane_dir_name(lane)
        for key in LANE_ARRAYS:
            files[f"{d}/{key}.npy"] = _npy_bytes(arrays[key])
        files[f"{d}/final.png"] = _png_bytes(arrays["image"])
    for lane, (frames, steps) in s.frames.items():
        files[f"frames/{lane_dir_name(lane)}.npy"] = _npy_bytes(frames.astype(np.uint8))
        files[f"frames/{lane_dir_name(lane)}-steps.npy"] = _npy_bytes(steps.astype(np.int64))
    s.updated = now()
    files[TOML_NAME] = render_toml(s)
    for rel, data in files.items():
        _write_bytes(pending / rel.replace("/", "__"), data)
    _fsync_dir(pending)
    _write_bytes(pending / COMPLETE, "\n".join(files).encode())
    _fsync_dir(pending)
    _roll_forward(root)


def _roll_forward(root: Path) -> None:
    """Move a COMPLETE pending save into place; drop an incomplete one (the old save stands)."""
    pending = root / PENDING
    if not pending.is_dir():
        return
    marker = pending / COMPLETE
    if not marker.is_file():
        shutil.rmtree(pending)
        return
    names = [n for n in marker.read_text().splitlines() if n]
    dirs = set()
    for rel in names:
        src = pending / rel.replace("/", "__")
        if not src.exists():
            continue  # already moved before a crash
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dirs.add(dst.parent)
        os.replace(src, dst)
    for d in dirs | {root}:
        _fsync_dir(d)
    marker.unlink()
    shutil.rmtree(pending, ignore_errors=True)
    _fsync_dir(root)


# --------------------------------------------------------------------------- locking
class SessionLock:
    """One writer per session: an flock on .lock (released by the kernel if the holder dies)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.fd: int | None = None

    def acquire(self) -> SessionLock:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK
        if path.is_symlink():
            raise SessionError(f"{path}: is a symlink; refusing to use it as a lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            finally:
                os.close(fd)
            raise SessionError(f"{self.root}: session is already open in another clipterm (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        _roll_forward(self.root)
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
    return (path / TOML_NAME).is_file() or (path / PENDING / COMPLETE).is_file()


def _source(root: Path, rel: str) -> Path:
    """Where a file's latest complete save lives: the pending copy if a save was interrupted."""
    pending = root / PENDING
    if (pending / COMPLETE).is_file():
        cand = pending / rel.replace("/", "__")
        if cand.is_file() and not cand.is_symlink():
            return cand
    return root / rel


def _check_regular(path: Path, root: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise SessionError(f"{path}: missing") from None
    if stat.S_ISLNK(st.st_mode):
        raise SessionError(f"{path}: is a symlink; session files must be regular files")
    if not stat.S_ISREG(st.st_mode):
        raise SessionError(f"{path}: not a regular file")
    if root.resolve() not in path.resolve().parents:
        raise SessionError(f"{path}: lies outside the session directory")


def _load_npy(path: Path, root: Path, dtype: str) -> np.ndarray:
    _check_regular(path, root)
    size = path.stat().st_size
    if size == 0:
        raise SessionError(f"{path}: empty file")
    if size > MAX_NPY_BYTES:
        raise SessionError(f"{path}: too large ({size} bytes)")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise SessionError(f"{path}: holds Python objects (pickle), which clipterm never loads") from None
        raise SessionError(f"{path}: not a valid .npy array ({str(e).splitlines()[0][:120]})") from None
    except (OSError, EOFError) as e:
        raise SessionError(f"{path}: unreadable .npy ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(arr, np.ndarray):
        raise SessionError(f"{path}: not a single .npy array")
    if arr.dtype != np.dtype(dtype):
        raise SessionError(f"{path}: dtype {arr.dtype}, expected {dtype}")
    return arr


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


def read_toml(root: Path) -> dict:
    path = _source(root, TOML_NAME)
    if not root.is_dir():
        raise SessionError(f"{root}: not a directory")
    if not path.exists():
        raise SessionError(f"{root}: not a clipterm session (no {TOML_NAME})")
    _check_regular(path, root)
    if path.stat().st_size > MAX_TOML_BYTES:
        raise SessionError(f"{path}: too large for a session file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise SessionError(f"{path}: TOML syntax error: {e}") from None
    except UnicodeDecodeError:
        raise SessionError(f"{path}: not UTF-8 text") from None


def load(root: Path, with_arrays: bool = True) -> Session:
    """Read and validate a session; raise SessionError naming the file and the problem."""
    root = Path(root)
    if root.is_symlink():
        raise SessionError(f"{root}: session directory is a symlink; open its target instead")
    doc = read_toml(root)
    where = str(_source(root, TOML_NAME))
    version = _req(doc, "format_version", int, where)
    if version > FORMAT_VERSION:
        raise SessionError(f"{where}: format_version {version} was written by a newer clipterm "
                           f"(this one reads {FORMAT_VERSION})")
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
    model = _req(doc, "model", dict, where)
    _req(model, "name", str, f"{where} [model]")
    _req(model, "pretrained", str, f"{where} [model]")
    lanes_doc = _req(doc, "lanes", dict, where)
    if not lanes_doc or set(lanes_doc) - set(LANES):
        raise SessionError(f"{where}: [lanes] must hold 'a' and/or 'b', got {sorted(lanes_doc)}")
    lanes: dict[str, LaneParams] = {}
    summary: dict[str, dict] = {}
    for name in LANES:
        if name not in lanes_doc:
            continue
        table = dict(_req(lanes_doc, name, dict, where))
        expected = lane_dir_name(name)
        d = table.pop("dir", expected)
        if not isinstance(d, str) or d != expected:
            target = (root / str(d)).resolve()
            if root.resolve() not in target.parents:
                raise SessionError(f"{where}: lane {name} dir {d!r} points outside the session directory")
            raise SessionError(f"{where}: lane {name} dir must be {expected!r}, got {d!r}")
        summary[name] = {k: table.pop(k) for k in list(table) if k.startswith(("last_", "best_", "robust_",
                                                                               "verified_"))}
        try:
            lanes[name] = from_dict(table)
        except ParamError as e:
            raise SessionError(f"{where}: lane {name}: {e}") from None
    changes = doc.get("changes", [])
    if not isinstance(changes, list) or not all(isinstance(c, dict) for c in changes):
        raise SessionError(f"{where}: 'changes' must be an array of tables")
    theme = doc.get("theme", "")
    if not isinstance(theme, str):
        raise SessionError(f"{where}: 'theme' must be a string")
    s = Session(path=root, prompt=prompt, seed=seed, model=dict(model), lanes=lanes, steps=steps, arrays={},
                changes=list(changes), eval_every=eval_every, frame_every=frame_every,
                created=str(doc.get("created", now())), updated=str(doc.get("updated", now())), theme=theme,
                summary=summary)
    if with_arrays:
        for name in lanes:
            s.arrays[name] = _load_lane(root, name, steps)
            s.frames[name] = _load_frames(root, name)
        shapes = {a["param"].shape for a in s.arrays.values()}
        if len(shapes) > 1:
            raise SessionError(f"{root}: lanes have different canvas shapes {sorted(shapes)}")
    return s


def _load_lane(root: Path, lane: str, steps: int) -> dict[str, np.ndarray]:
    d = root / lane_dir_name(lane)
    if d.is_symlink():
        raise SessionError(f"{d}: lane directory is a symlink")
    out: dict[str, np.ndarray] = {}
    canvas_shape = None
    for key, (dtype, kind) in LANE_ARRAYS.items():
        rel = f"{lane_dir_name(lane)}/{key}.npy"
        path = _source(root, rel)
        arr = _load_npy(path, root, dtype)
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
        out[key] = arr
    if len(out["history"]) != steps:
        raise SessionError(f"{_source(root, lane_dir_name(lane) + '/history.npy')}: has {len(out['history'])} "
                           f"rows but session.toml says steps = {steps}")
    if float(out["opt_step"]) > steps or not math.isfinite(float(out["best_loss"])) and steps > 0:
        raise SessionError(f"{_source(root, lane_dir_name(lane) + '/opt_step.npy')}: inconsistent with {steps} steps")
    return out


def _load_frames(root: Path, lane: str) -> tuple[np.ndarray, np.ndarray]:
    rel = f"frames/{lane_dir_name(lane)}"
    fpath, spath = _source(root, rel + ".npy"), _source(root, rel + "-steps.npy")
    if not os.path.lexists(fpath) and not os.path.lexists(spath):
        return np.zeros((0, FRAME_SIZE, FRAME_SIZE, 3), np.uint8), np.zeros((0,), np.int64)
    frames = _load_npy(fpath, root, "uint8")
    steps = _load_npy(spath, root, "int64")
    if frames.ndim != 4 or frames.shape[-1] != 3 or steps.ndim != 1 or len(steps) != len(frames):
        raise SessionError(f"{fpath}: frames shape {frames.shape} does not match steps {steps.shape}")
    return frames, steps
