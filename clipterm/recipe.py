"""A new session's recipe: what it was asked to be, on disk before anything heavy runs.

Loading torch, open_clip and a model takes seconds; a run killed then used to leave no session, so
`clipterm run S --steps N` answered "--prompt is required". `open_run` now writes `recipe.toml`
(prompt, model as asked, seed, lanes, eval/frame settings, step 0) atomically into the new session
directory, under the session's lock, before it loads anything; a run that finds only a recipe
creates the session from it. The first full save (session.toml) supersedes the recipe, which is
then removed. docs/SESSION_FORMAT.md specifies the file.

A session started from a picture (`--init`) has its square copy, `init.png`, written before the
recipe that names it (by the sha256 of its pixels): the recipe alone then says everything, and a
resume never needs the original file. init.png stays in the session afterwards, as its record.

This module is torch-free: it runs before torch is imported.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from clipterm import __version__
from clipterm import session as sess
from clipterm.errors import SessionError
from clipterm.initimage import INIT_FILE, InitImage
from clipterm.lanespec import MAX_LANES, LaneSpec, check_lane_name, from_table
from clipterm.parts.base import ParamError
from clipterm.session.npy import one_line, read_regular
from clipterm.text import first_control

RECIPE = "recipe.toml"
RECIPE_TMP = ".recipe.toml.tmp"  # the recipe being written; renamed to RECIPE once it is on disk
RECIPE_VERSION = 1
RECIPE_VERSION_INIT = 2  # a recipe with [init]: an older clipterm, which would start from noise, refuses it
INIT_TMP = ".init.png.tmp"
MAX_RECIPE_BYTES = 1 << 20
WORLDS = ("shapes", "other")  # the keys of [world_lanes]: a shapes model, or any other


@dataclass(frozen=True)
class Recipe:
    """What a new session is made of, before its model is loaded."""

    prompt: str
    seed: int
    lanes: dict[str, LaneSpec]
    model: str = ""  # as asked: "" = the default model (ViT-B-32/openai, else the bundled shapes-a)
    pretrained: str = ""  # as asked: a tag, a checkpoint path (made absolute), or "" for none
    eval_every: int = 50
    frame_every: int = 10
    created: str = field(default_factory=sess.now)
    init_source: str = ""  # --init as given (escaped), "" when the session starts from noise
    init_sha256: str = ""  # sha256 of init.png's pixels (InitImage.digest)
    # Lanes whose default preset depends on the model's world (lane c), both ways: {"shapes": {name:
    # spec}, "other": {name: spec}}; the model that loads picks one (`lanes_for`), since the default
    # model is ViT-B-32 or shapes-a by what is cached, which only loading tells. {} when none.
    world_lanes: dict[str, dict[str, LaneSpec]] = field(default_factory=dict)

    def lanes_for(self, shapes_model: bool) -> dict[str, LaneSpec]:
        """The lanes on a model that is (or is not) a shapes model, in the recipe's order."""
        picked = self.world_lanes.get(WORLDS[0] if shapes_model else WORLDS[1], {})
        return {name: picked.get(name, spec) for name, spec in self.lanes.items()}


def has_recipe(path: Path) -> bool:
    """Whether `path` holds a recipe but no session yet (a start-up that did not finish)."""
    return os.path.lexists(Path(path) / RECIPE) and not sess.is_session(Path(path))


def render(r: Recipe) -> bytes:
    doc = {
        "recipe_version": RECIPE_VERSION_INIT if r.init_sha256 else RECIPE_VERSION,
        "format_version": sess.FORMAT_VERSION,
        "clipterm_version": __version__,
        "created": r.created,
        "prompt": r.prompt,
        "seed": r.seed,
        "steps": 0,
        "eval_every": r.eval_every,
        "frame_every": r.frame_every,
        "model": {"name": r.model, "pretrained": r.pretrained},
        "lanes": {name: spec.to_table() for name, spec in r.lanes.items()},
    }
    if r.init_sha256:
        doc["init"] = {"source": r.init_source, "sha256": r.init_sha256}
    if r.world_lanes:
        doc["world_lanes"] = {w: {n: spec.to_table() for n, spec in r.world_lanes[w].items()} for w in WORLDS}
    return tomli_w.dumps(doc).encode()


def write(path: Path, r: Recipe) -> None:
    """Write the recipe atomically: a temporary file, fsync, rename, fsync of the directory.

    A kill at any moment leaves either no recipe or a complete one (and at most a stale temporary
    file, which check_new_session_dir accepts and the next write replaces).
    """
    _write_atomic(Path(path), RECIPE, RECIPE_TMP, render(r), "the session's recipe")


def write_init(path: Path, img: InitImage) -> None:
    """The picture a new session starts from, as init.png, atomically (before the recipe names it)."""
    _write_atomic(Path(path), INIT_FILE, INIT_TMP, img.png(), "the session's starting picture")


def _write_atomic(path: Path, name: str, tmp_name: str, data: bytes, what: str) -> None:
    tmp = path / tmp_name
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path / name)
        _fsync_dir(path)
    except OSError as e:
        raise SessionError(f"{e.filename or path}: cannot write {what} ({e.strerror})") from None


def remove(path: Path, init: bool = False) -> None:
    """Drop the recipe (and a stale temporary one) once session.toml holds everything it said;
    init=True: init.png too (a start-up that failed removes what it wrote)."""
    removed = False
    for name in (RECIPE, RECIPE_TMP, INIT_TMP) + ((INIT_FILE,) if init else ()):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(Path(path) / name)
            removed = True
    if removed:
        _fsync_dir(Path(path))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: Path) -> Recipe | None:
    """The recipe in `path`, validated (a SessionError names the file and the problem), or None."""
    root = Path(path)
    file = root / RECIPE
    if not os.path.lexists(file):
        return None
    if root.is_symlink():  # as for sessions: the directory itself, never a link to it
        raise SessionError(f"{root}: session directory is a symlink; open its target instead")
    data = read_regular(file, root, MAX_RECIPE_BYTES)
    where = str(file)
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise SessionError(f"{where}: TOML syntax error: {one_line(e)}") from None
    except UnicodeDecodeError:
        raise SessionError(f"{where}: not UTF-8 text") from None
    version = sess.require(doc, "recipe_version", int, where)
    if version not in (RECIPE_VERSION, RECIPE_VERSION_INIT):
        known = f"{RECIPE_VERSION} or {RECIPE_VERSION_INIT}"
        raise SessionError(f"{where}: recipe_version {version} is not one this clipterm reads ({known})")
    prompt = _text(doc, "prompt", where)  # no control characters, then the session's own rules
    prompt, seed, steps, eval_every, frame_every = sess.check_run_fields(doc, where)
    if steps != 0:
        raise SessionError(f"{where}: a recipe is a session at step 0, but 'steps' is {steps}")
    model = sess.require(doc, "model", dict, where)
    name, pretrained = _text(model, "name", f"{where} [model]"), _text(model, "pretrained", f"{where} [model]")
    lanes_doc = sess.require(doc, "lanes", dict, where)
    if not 1 <= len(lanes_doc) <= MAX_LANES:
        raise SessionError(f"{where}: [lanes] must hold 1 to {MAX_LANES} lanes, got {len(lanes_doc)}")
    lanes: dict[str, LaneSpec] = {}
    for lane, table in lanes_doc.items():
        try:
            lanes[check_lane_name(lane)] = from_table(table, f"lane {lane}")
        except ParamError as e:
            raise SessionError(f"{where}: [lanes] {one_line(e)}") from None
    init_source, init_sha256 = _init(doc, version, where)
    world_lanes = _world_lanes(doc, lanes, where)
    sess.check_prompt_lanes(prompt, lanes, where)
    for picked in world_lanes.values():
        sess.check_prompt_lanes(prompt, picked, where)
    return Recipe(
        prompt=prompt,
        seed=seed,
        lanes=lanes,
        model=name,
        pretrained=pretrained,
        eval_every=eval_every,
        frame_every=frame_every,
        created=_text(doc, "created", where),
        init_source=init_source,
        init_sha256=init_sha256,
        world_lanes=world_lanes,
    )


def _world_lanes(doc: dict, lanes: dict[str, LaneSpec], where: str) -> dict[str, dict[str, LaneSpec]]:
    """[world_lanes]: absent, or both worlds, each a table of lanes that [lanes] holds."""
    if "world_lanes" not in doc:
        return {}
    table = sess.require(doc, "world_lanes", dict, where)
    if set(table) != set(WORLDS):
        raise SessionError(f"{where}: [world_lanes] must hold exactly {' and '.join(WORLDS)}")
    out: dict[str, dict[str, LaneSpec]] = {}
    for world in WORLDS:
        picked = sess.require(table, world, dict, f"{where} [world_lanes]")
        if not picked or set(picked) - set(lanes):
            raise SessionError(f"{where}: [world_lanes.{world}] must name some of the lanes in [lanes]")
        out[world] = {}
        for lane, spec in picked.items():
            try:
                out[world][lane] = from_table(spec, f"lane {lane}")
            except ParamError as e:
                raise SessionError(f"{where}: [world_lanes.{world}] {one_line(e)}") from None
    if set(out[WORLDS[0]]) != set(out[WORLDS[1]]):
        raise SessionError(f"{where}: [world_lanes] must name the same lanes for both worlds")
    return out


def _init(doc: dict, version: int, where: str) -> tuple[str, str]:
    """The [init] table (source, sha256): present exactly in a version-2 recipe."""
    if "init" not in doc:
        if version == RECIPE_VERSION_INIT:
            raise SessionError(f"{where}: recipe_version {version} needs an [init] table")
        return "", ""
    if version != RECIPE_VERSION_INIT:
        raise SessionError(f"{where}: [init] needs recipe_version {RECIPE_VERSION_INIT}")
    table = sess.require(doc, "init", dict, where)
    source = _text(table, "source", f"{where} [init]")  # type: ignore[arg-type]
    digest = _text(table, "sha256", f"{where} [init]")  # type: ignore[arg-type]
    if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
        raise SessionError(f"{where} [init]: 'sha256' must be 64 lowercase hex digits")
    return source, digest


def _text(doc: dict, key: str, where: str) -> str:
    """A string field without control characters (recipe text reaches terminals, like session.toml's)."""
    val = sess.require(doc, key, str, where)
    bad = first_control(val)  # type: ignore[arg-type]
    if bad is not None:
        raise SessionError(f"{where}: '{key}' holds a control character ({bad})")
    return val  # type: ignore[return-value]


def check_new_session_dir(path: Path) -> None:
    """A new session goes into a missing or empty directory, or one a crash left during creation
    (only .lock, an incomplete .pending/, a recipe, init.png beside the lock or a recipe, and their
    temporary files); anything else is the user's and is left alone. (`read` then refuses a recipe
    that is not a regular file; `write` unlinks a temporary one, never writing through it.)"""
    if path.is_symlink():
        raise SessionError(f"{path}: is a symlink; give the real directory for a new session")
    if not path.exists():
        return
    if not path.is_dir():
        raise SessionError(f"{path}: exists and is not an empty directory or a clipterm session")
    names = {p.name for p in path.iterdir()}
    pending = path / sess.PENDING
    leftovers_ok = (
        names <= {sess.LOCK, sess.PENDING, RECIPE, RECIPE_TMP, INIT_FILE, INIT_TMP}
        # init.png is written under the lock, so a crash leaves it beside .lock; alone it is the user's
        and (INIT_FILE not in names or bool(names & {sess.LOCK, RECIPE}))
        and (sess.LOCK not in names or sess.is_regular_file(path / sess.LOCK))
        and (sess.PENDING not in names or pending.is_dir() and not pending.is_symlink())
    )
    if not leftovers_ok:
        raise SessionError(f"{path}: exists and is not an empty directory or a clipterm session")
