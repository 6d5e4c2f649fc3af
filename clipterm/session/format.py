"""The session format: the Session dataclass, file names and limits, session.toml, and the loader.

Loading validates everything (session.toml, the [files] sha256 of each .npy, every lane array's
dtype, shape and values) and changes nothing on disk, so a refused session is left
byte-identical. While a save is interrupted after its journal was marked COMPLETE, readers take
the pending copies (docs/SESSION_FORMAT.md is the full specification).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
import random
import re
import stat
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tomli_w

from clipterm import __version__
from clipterm.errors import SessionError
from clipterm.lanespec import (
    EVAL_COLUMNS,
    HISTORY_COLUMNS,
    LANE_NAME,
    MAX_LANES,
    LaneSpec,
    check_lane_name,
    from_table,
    opt_suffix,
)
from clipterm.parts.base import ParamError
from clipterm.presets import from_legacy
from clipterm.prompts import PromptError, parse_prompt
from clipterm.rngstate import valid_cpu_generator_state
from clipterm.session.npy import MAX_NPY_BYTES, one_line, parse_npy, read_regular
from clipterm.text import first_control, printable

FORMAT_VERSION = 2  # 1: flat seed parameters per lane (read, converted); 2: nested lane parts
TOML_NAME = "session.toml"
PENDING = ".pending"
COMPLETE = "COMPLETE"
LOCK = ".lock"
MAX_STEPS = 10_000_000
MAX_TOML_BYTES = 4 << 20
MAX_JOURNAL_BYTES = 64 << 10
RACE_RETRY_S = 10.0  # how long a reader keeps retrying while saves keep landing under its read
FRAME_SIZE = 64
# Arrays of every lane, key -> (dtype, shape kind): "canvas" = (3,S,S); "scalar" = (); "rng" = 1-D;
# "history"/"evals" = 2-D. Each lane also stores its parameterization's tensors (LaneSpec.arrays):
# per tensor T, T.npy and its Adam moments opt_exp_avg{_T}.npy, opt_exp_avg_sq{_T}.npy (see
# engine.opt_suffix: pixel's tensor "param" keeps format 1's names).
LANE_ARRAYS: dict[str, tuple[str, str]] = {
    "image": ("float32", "canvas"),
    "best": ("float32", "canvas"),
    "best_loss": ("float32", "scalar"),
    "opt_step": ("float32", "scalar"),
    "rng": ("uint8", "rng"),
    "history": ("float32", "history"),
    "evals": ("float32", "evals"),
}
FINITE = ("image", "best", "opt_step")
# Numbers session.toml keeps per lane for `clipterm info` (derived from history/evals at save time)
SUMMARY_KEYS = ("last_similarity", "best_similarity", "robust_similarity", "verified_similarity")
# session.toml's top-level keys. Anything else is refused on load: the next save would drop it.
TOP_LEVEL_KEYS = frozenset(
    {
        "format_version",
        "clipterm_version",
        "created",
        "updated",
        "prompt",
        "seed",
        "steps",
        "eval_every",
        "frame_every",
        "theme",
        "history_columns",
        "eval_columns",
        "model",
        "lanes",
        "changes",
        "files",
    }
)
# Optional per-lane arrays (absent in older sessions): layer probe records, see clipterm/probes.py;
# each start's optimizer step in a lane of several starts (a start added by a preset switch is behind)
OPTIONAL_LANE_ARRAYS: dict[str, str] = {"probes": "float32", "probe_steps": "int64", "opt_steps": "float32"}
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
    lanes: dict[str, LaneSpec]
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


_LANE = LANE_NAME.pattern.strip("^$")
_KNOWN = re.compile(rf"^(lane-{_LANE}/([a-z][a-z0-9_]{{0,40}}\.npy|final\.png)|frames/lane-{_LANE}(-steps)?\.npy)$")


def is_known_file(rel: str) -> bool:
    """Whether `rel` (relative to the session) is a path a save may write; journals and [files] may
    name only these (lane names and array keys are short words, so no path can leave the session)."""
    return rel == TOML_NAME or bool(_KNOWN.match(rel))


def tensor_arrays(spec: LaneSpec, size: int) -> dict[str, tuple[int, ...]]:
    """A lane's parameterization arrays (tensors and their optimizer moments) -> shape."""
    out = {}
    for name, shape in spec.arrays(size).items():
        out[name] = shape
        out[f"opt_exp_avg{opt_suffix(name)}"] = shape
        out[f"opt_exp_avg_sq{opt_suffix(name)}"] = shape
    return out


def pending_name(rel: str) -> str:
    """A journal holds every file flat in .pending/ ('lane-a/image.npy' -> 'lane-a__image.npy')."""
    return rel.replace("/", "__")


def render_toml(s: Session, hashes: dict[str, str] | None = None) -> bytes:
    """session.toml's bytes; `hashes` (relative path -> sha256) becomes the [files] table."""
    lanes = {}
    for name, spec in s.lanes.items():
        table = {"dir": lane_dir_name(name), **spec.to_table()}
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


def is_session(path: Path) -> bool:
    """Whether `path` claims to be a session (then it is loaded and validated, never overwritten)."""
    return os.path.lexists(path / TOML_NAME) or os.path.lexists(path / PENDING / COMPLETE)


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
    text = read_regular(marker, root, MAX_JOURNAL_BYTES).decode("utf-8", errors="replace")
    out: dict[str, Path] = {}
    for rel in text.splitlines():
        if not is_known_file(rel):
            raise SessionError(f"{marker}: names {one_line(rel, 60)!r}, which is not a session file")
        out[rel] = pending / pending_name(rel)
    if TOML_NAME not in out:
        raise SessionError(f"{marker}: does not include {TOML_NAME}")
    return out


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
        data = read_regular(path, self.root, MAX_NPY_BYTES)
        arr = parse_npy(data, path, dtype)
        want = self.table.get(rel)
        if want is not None and hashlib.sha256(data).hexdigest() != want:
            raise SessionError(
                f"{path}: sha256 differs from the one session.toml records "
                f"(the file was changed or damaged after it was saved)"
            )
        return arr, path


def require(doc: dict, key: str, kind: type | tuple, where: str) -> object:
    """doc[key], refused in one line when missing or of another type (a bool is not an int)."""
    if key not in doc:
        raise SessionError(f"{where}: missing key '{key}'")
    val = doc[key]
    if isinstance(val, bool) and kind is not bool:
        raise SessionError(f"{where}: '{key}' must be {getattr(kind, '__name__', kind)}, got {val!r}")
    if not isinstance(val, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise SessionError(f"{where}: '{key}' must be {name}, got {type(val).__name__}")
    return val


def check_run_fields(doc: dict, where: str) -> tuple[str, int, int, int, int]:
    """prompt, seed, steps, eval_every, frame_every of a session.toml or a recipe, each checked (the
    prompt as a prompt), so both files are held to one rule."""
    prompt = require(doc, "prompt", str, where)
    try:
        if prompt != "":  # "": a run of units alone (check_prompt_lanes holds its lanes to that)
            parse_prompt(prompt)  # type: ignore[arg-type]
    except PromptError as e:
        raise SessionError(f"{where}: 'prompt': {one_line(e)}") from None
    seed = require(doc, "seed", int, where)
    if not 0 <= seed < 2**63:  # type: ignore[operator]
        raise SessionError(f"{where}: seed {seed} out of range")
    steps = require(doc, "steps", int, where)
    if not 0 <= steps <= MAX_STEPS:  # type: ignore[operator]
        raise SessionError(f"{where}: steps {steps} out of range [0, {MAX_STEPS}]")
    eval_every = require(doc, "eval_every", int, where)
    frame_every = require(doc, "frame_every", int, where)
    if not 0 <= eval_every <= MAX_STEPS or not 1 <= frame_every <= MAX_STEPS:  # type: ignore[operator]
        raise SessionError(f"{where}: eval_every/frame_every out of range")
    return prompt, seed, steps, eval_every, frame_every  # type: ignore[return-value]


def check_prompt_lanes(prompt: str, lanes: dict[str, LaneSpec], where: str) -> None:
    """An empty prompt means the lanes' objectives are units alone: a lane with a prompt term needs one."""
    if prompt == "":
        for name, spec in lanes.items():
            if spec.similarity_terms():
                raise SessionError(f"{where}: 'prompt' is empty, but lane {name}'s objective has a prompt term")


def _toml_doc(files: _Files) -> tuple[dict, Path]:
    root = files.root
    path = files.path(TOML_NAME)
    if not os.path.lexists(path):
        raise SessionError(f"{root}: not a clipterm session (no {TOML_NAME})")
    data = read_regular(path, root, MAX_TOML_BYTES)
    try:
        return tomllib.loads(data.decode("utf-8")), path
    except tomllib.TOMLDecodeError as e:
        raise SessionError(f"{path}: TOML syntax error: {one_line(e)}") from None
    except UnicodeDecodeError:
        raise SessionError(f"{path}: not UTF-8 text") from None


def _check_controls(value: object, where: str, key: str = "") -> None:
    """Refuse control characters in every key and string of session.toml.

    Why: its strings reach terminals (`clipterm info`, the app, logs); a session someone hands you
    must not be able to send escape sequences there. Nothing clipterm writes ever holds one.
    """
    if isinstance(value, str):
        bad = first_control(value)
        if bad is not None:
            raise SessionError(f"{where}: '{key}' holds a control character ({bad}); session text must be plain")
    elif isinstance(value, dict):
        for k, v in value.items():
            name = f"{key}.{printable(k)}" if key else printable(k)
            if first_control(k) is not None:
                raise SessionError(f"{where}: key '{one_line(name, 60)}' holds a control character")
            _check_controls(v, where, name)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_controls(v, where, f"{key}[{i}]")


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
    deadline = time.monotonic() + RACE_RETRY_S
    pause = 0.005
    while True:
        before = _fingerprint(root)
        try:
            return _load_once(root, with_arrays)
        except SessionError:
            if _fingerprint(root) == before or time.monotonic() > deadline:
                raise
        # A random pause, growing: a reader that keeps meeting a busy writer lands in a gap
        # between its saves instead of falling into step with them.
        time.sleep(random.uniform(0, pause))
        pause = min(pause * 2, 0.2)


def _load_once(root: Path, with_arrays: bool) -> Session:
    _check_root(root)
    files = _Files(root, _journal(root))
    doc, path = _toml_doc(files)
    where = str(path)
    version = require(doc, "format_version", int, where)
    if version > FORMAT_VERSION:
        raise SessionError(
            f"{where}: format_version {version} was written by a newer clipterm (this one reads {FORMAT_VERSION})"
        )
    if version < 1:
        raise SessionError(f"{where}: invalid format_version {version}")
    _check_controls(doc, where)
    unknown = sorted(set(doc) - TOP_LEVEL_KEYS)
    if unknown:
        raise SessionError(
            f"{where}: unknown key '{one_line(unknown[0], 40)}' (not part of format_version {version}; "
            f"the next save would drop it)"
        )
    prompt, seed, steps, eval_every, frame_every = check_run_fields(doc, where)
    model = dict(require(doc, "model", dict, where))
    _check_model(model, f"{where} [model]")
    lanes_doc = require(doc, "lanes", dict, where)
    if not 1 <= len(lanes_doc) <= MAX_LANES:
        raise SessionError(f"{where}: [lanes] must hold 1 to {MAX_LANES} lanes, got {len(lanes_doc)}")
    lanes: dict[str, LaneSpec] = {}
    summary: dict[str, dict] = {}
    for name in lanes_doc:
        try:
            check_lane_name(name)
        except ParamError as e:
            raise SessionError(f"{where}: [lanes] {e}") from None
        table = require(lanes_doc, name, dict, where)
        lanes[name], summary[name] = _lane_table(root, table, name, where, version)
    check_prompt_lanes(prompt, lanes, where)
    changes = _check_changes(doc.get("changes", []), steps, lanes, where)
    theme = doc.get("theme", "")
    if not isinstance(theme, str):
        raise SessionError(f"{where}: 'theme' must be a string")
    files.table = _check_files_table(require(doc, "files", dict, where), lanes, where)
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
        for name, spec in lanes.items():
            s.arrays[name] = _load_lane(files, name, spec, steps, model.get("image_size"))
        shapes = {a["image"].shape for a in s.arrays.values()}
        if len(shapes) > 1:
            raise SessionError(f"{root}: lanes have different canvas shapes {sorted(shapes)}")
        for name in lanes:
            s.frames[name] = _load_frames(files, name, steps, s.arrays[name]["image"].shape[-1])
    return s


def _check_model(model: dict, where: str) -> None:
    require(model, "name", str, where)
    require(model, "pretrained", str, where)
    if "checkpoint" in model:
        require(model, "checkpoint", str, where)
    if "sha256" in model:
        sha = require(model, "sha256", str, where)
        if not _is_sha256(sha):
            raise SessionError(f"{where}: 'sha256' must be 64 hex digits, got {one_line(sha, 70)!r}")
    if "image_size" in model:
        size = require(model, "image_size", int, where)
        if not 8 <= size <= 4096:
            raise SessionError(f"{where}: 'image_size' {size} out of range [8, 4096]")


def _is_sha256(text: object) -> bool:
    return isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _lane_table(root: Path, raw: dict, name: str, where: str, version: int) -> tuple[LaneSpec, dict]:
    """A [lanes.X] table: its directory (which must be lane-X), its summary numbers, its parts
    (format 2) or flat seed parameters (format 1)."""
    table = dict(raw)
    expected = lane_dir_name(name)
    d = table.pop("dir", expected)
    if not isinstance(d, str) or d != expected:
        if isinstance(d, str) and root.resolve() not in (root / d).resolve().parents:
            raise SessionError(f"{where}: lane {name} dir {one_line(d, 80)!r} points outside the session directory")
        raise SessionError(f"{where}: lane {name} dir must be {expected!r}, got {one_line(repr(d), 80)}")
    summary = {}
    for key in SUMMARY_KEYS:
        if key in table:
            v = table.pop(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SessionError(f"{where}: lane {name} '{key}' must be a finite number, got {one_line(repr(v), 40)}")
            summary[key] = float(v)
    if not isinstance(table.get("preset"), str):
        raise SessionError(f"{where}: lane {name} 'preset' must be a string naming a preset")
    try:
        return (from_legacy(table, "lane") if version == 1 else from_table(table, "lane")), summary
    except ParamError as e:
        raise SessionError(f"{where}: lane {name}: {one_line(e)}") from None


def _check_changes(changes: object, steps: int, lanes: dict, where: str) -> list[dict]:
    """The change history: tables of (step <= steps, lane, key, old, new) with scalar values."""
    if not isinstance(changes, list) or not all(isinstance(c, dict) for c in changes):
        raise SessionError(f"{where}: 'changes' must be an array of tables")
    for i, c in enumerate(changes):
        step = c.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= steps:
            raise SessionError(f"{where}: changes[{i}] 'step' must be a whole number within [0, {steps}]")
        if c.get("lane") not in ("*", *lanes) or not isinstance(c.get("key"), str):
            raise SessionError(f"{where}: changes[{i}] needs 'lane' (* or a lane of the session) and a string 'key'")
        for k, v in c.items():
            if not isinstance(v, (str, int, float, bool)):
                raise SessionError(f"{where}: changes[{i}] '{k}' must be a string, number or boolean")
    return [dict(c) for c in changes]


def _check_files_table(table: dict, lanes: dict, where: str) -> dict[str, str]:
    """[files]: the sha256 of every .npy file of the save; required arrays listed, optional ones paired."""
    for rel, sha in table.items():
        if not is_known_file(rel) or not rel.endswith(".npy"):
            raise SessionError(f"{where}: [files] names {one_line(rel, 60)!r}, which is not a session file")
        if not _is_sha256(sha):
            raise SessionError(f"{where}: [files] '{rel}' must be a sha256 (64 hex digits)")
    for rel in table:
        lane = rel.split("/")[-2 if rel.startswith("lane-") else -1].removeprefix("lane-")
        lane = lane.removesuffix(".npy").removesuffix("-steps")
        if lane not in lanes:
            raise SessionError(f"{where}: [files] lists {rel} but there is no lane {lane}")
    for lane in lanes:
        d = lane_dir_name(lane)
        for key in LANE_ARRAYS:  # the parameterization's arrays are checked with their shapes (_load_lane)
            if f"{d}/{key}.npy" not in table:
                raise SessionError(f"{where}: [files] does not list {d}/{key}.npy")
        for pair in ((f"frames/{d}.npy", f"frames/{d}-steps.npy"), (f"{d}/probes.npy", f"{d}/probe_steps.npy")):
            if (pair[0] in table) != (pair[1] in table):
                raise SessionError(f"{where}: [files] lists only one of {pair[0]} and {pair[1]}")
    return {str(k): str(v) for k, v in table.items()}


def _load_lane(files: _Files, lane: str, spec: LaneSpec, steps: int, size: int | None = None) -> dict[str, np.ndarray]:
    """A lane's arrays, each checked against the canvas side `size` that session.toml records
    ([model] image_size), so a shape error names the damaged file, not the next one read."""
    d = lane_dir_name(lane)
    out: dict[str, np.ndarray] = {}
    paths: dict[str, Path] = {}
    canvas_shape = None if size is None else (3, size, size)
    for key, (dtype, kind) in LANE_ARRAYS.items():
        arr, path = files.npy(f"{d}/{key}.npy", dtype)
        paths[key] = path
        if kind == "canvas":
            if arr.ndim != 3 or arr.shape[0] != 3 or arr.shape[1] != arr.shape[2] or not 8 <= arr.shape[1] <= 4096:
                raise SessionError(f"{path}: shape {arr.shape}, expected (3, S, S)")
            if canvas_shape is not None and arr.shape != canvas_shape:
                because = "session.toml's [model] image_size" if size is not None else "the lane's canvas"
                raise SessionError(f"{path}: shape {arr.shape}, expected {canvas_shape} ({because})")
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
        if key == "rng" and not valid_cpu_generator_state(arr):  # torch's own rule, without importing torch
            raise SessionError(f"{path}: not a valid random generator state")
        out[key] = arr
    size = out["image"].shape[-1]
    for key, shape in tensor_arrays(spec, size).items():
        if f"{d}/{key}.npy" not in files.table:
            raise SessionError(f"{files.path(TOML_NAME)}: [files] does not list {d}/{key}.npy")
        arr, path = files.npy(f"{d}/{key}.npy", "float32")
        if arr.shape != shape:
            raise SessionError(
                f"{path}: shape {arr.shape}, the lane's {spec.param.name} parameterization needs {shape}"
            )
        if not np.isfinite(arr).all():
            raise SessionError(f"{path}: contains NaN or Inf")
        if key.startswith("opt_exp_avg_sq") and arr.min() < 0:
            raise SessionError(f"{path}: negative second moments")
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
    out.update(_load_opt_steps(files, lane, steps, spec.views.starts, opt_step))
    return out


def _load_opt_steps(files: _Files, lane: str, steps: int, starts: int, opt_step: float) -> dict[str, np.ndarray]:
    """Each start's optimizer step (optional): one whole number within [0, steps] per start, the
    first the lane's own opt_step."""
    rel = f"{lane_dir_name(lane)}/opt_steps.npy"
    if rel not in files.table:
        return {}
    arr, path = files.npy(rel, OPTIONAL_LANE_ARRAYS["opt_steps"])
    if arr.shape != (starts,):
        raise SessionError(f"{path}: shape {arr.shape}, the lane's {starts} starts need ({starts},)")
    if not np.isfinite(arr).all() or (arr != np.round(arr)).any() or arr.min() < 0 or arr.max() > steps:
        raise SessionError(f"{path}: optimizer steps must be whole numbers within [0, {steps}]")
    if float(arr[0]) != opt_step:
        raise SessionError(f"{path}: the first start's step {float(arr[0]):g} is not the lane's opt_step {opt_step:g}")
    return {"opt_steps": arr}


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
