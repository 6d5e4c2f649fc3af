"""A run: an Engine bound to a session directory (create, resume, frames, autosave, save).

The headless `clipterm run` and the app's worker both drive a Run, so resuming, autosaving and
recording parameter changes behave the same everywhere.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipterm import recipe
from clipterm import session as sess
from clipterm.engine import Engine
from clipterm.errors import ClipTermError, SessionError
from clipterm.initimage import INIT_FILE, InitImage
from clipterm.lanespec import LaneSpec
from clipterm.modelnames import BUNDLED
from clipterm.models import ModelBundle, load_model
from clipterm.parts.base import ParamError
from clipterm.probes import Probe


@dataclass
class Autosave:
    every_steps: int = 50
    every_seconds: float = 60.0


def model_record(bundle: ModelBundle) -> dict:
    """What a session stores about its model, enough to reload it and notice a changed checkpoint."""
    pretrained = "bundled" if bundle.name in BUNDLED else bundle.pretrained
    rec = {"name": bundle.name, "pretrained": pretrained, "image_size": bundle.image_size}
    if bundle.checkpoint is not None:
        rec["checkpoint"] = "bundled" if bundle.name in BUNDLED else str(Path(bundle.checkpoint).resolve())
        rec["sha256"] = bundle.sha256
    return rec


def checkpoint_mismatch(model: dict, bundle: ModelBundle) -> str | None:
    """Why `bundle` is not the checkpoint the session recorded (sha256 differs), or None if it is."""
    want = model.get("sha256")
    if want and bundle.sha256 != want:
        return (
            f"checkpoint {bundle.checkpoint}: sha256 {str(bundle.sha256)[:12]}… no longer matches the "
            f"session's {str(want)[:12]}…; the weights changed since this session was made "
            f"(pass --retarget to continue on the new weights)"
        )
    return None


def load_recorded_model(model: dict, device: str | None) -> ModelBundle:
    """Load the model a session's record names (its checkpoint is not checked: see checkpoint_mismatch)."""
    pretrained = str(model["pretrained"])
    return load_model(str(model["name"]), None if pretrained == "bundled" else pretrained, device)


def load_session_model(model: dict, device: str | None) -> ModelBundle:
    """Load the model a session was made with and refuse it if its checkpoint has changed."""
    bundle = load_recorded_model(model, device)
    why = checkpoint_mismatch(model, bundle)
    if why:
        raise SessionError(why)
    return bundle


def check_fits(s: sess.Session, bundle: ModelBundle) -> None:
    """Refuse resuming canvases of another size than the model's input (that needs --retarget)."""
    for name, arrays in s.arrays.items():
        if arrays["image"].shape != (3, bundle.image_size, bundle.image_size):
            raise SessionError(
                f"{s.path / sess.lane_dir_name(name) / 'image.npy'}: canvas "
                f"{arrays['image'].shape[1]}px does not fit {bundle.name}'s "
                f"{bundle.image_size}px input (pass --retarget to resize it)"
            )


def extra_models(lanes: dict[str, LaneSpec], bundle: ModelBundle) -> dict[str, ModelBundle]:
    """The models that lanes' ensembles name besides the run's own, loaded on the run's device."""
    names = sorted({m for spec in lanes.values() for m in spec.models() if m not in ("", bundle.name)})
    return {m: load_model(m, None, str(bundle.device)) for m in names}


def new_engine(bundle: ModelBundle, prompt: str, lanes: dict[str, LaneSpec], seed: int, eval_every: int) -> Engine:
    return Engine(bundle, prompt, lanes, seed=seed, eval_every=eval_every, models=extra_models(lanes, bundle))


def same_model(record: dict, name: str, pretrained: str | None) -> bool:
    if name != record.get("name"):
        return False
    if pretrained is None:
        return True
    return pretrained == record.get("pretrained") or (
        record.get("checkpoint") not in (None, "bundled")
        and Path(pretrained).expanduser().resolve() == Path(str(record["checkpoint"]))
    )


class Run:
    """Engine + session bookkeeping. Call `step()`; it captures frames and autosaves on schedule."""

    def __init__(
        self,
        path: Path,
        engine: Engine,
        autosave: Autosave | None = None,
        frame_every: int = 10,
        created: str | None = None,
        theme: str = "",
    ) -> None:
        self.path = Path(path)
        self.engine = engine
        if engine.probe is None:
            engine.probe = Probe.for_model(engine.bundle.model)  # layer stats every 10 steps (probes.configure)
        self.autosave = autosave or Autosave()
        self.frame_every = frame_every
        self.created = created or sess.now()
        self.theme = theme
        self.frames: dict[str, list[np.ndarray]] = {n: [] for n in engine.lanes}
        self.frame_steps: dict[str, list[int]] = {n: [] for n in engine.lanes}
        self.saved_step = -1
        self.recipe_superseded = False  # whether a save has removed a recipe.toml left from start-up
        self.saved_changes = 0
        self.last_save_time = time.monotonic()
        self.lock = sess.SessionLock(self.path)
        self.init_fit: dict[str, float] = {}  # lane -> fit error, for a new session started from a picture

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        path: Path,
        bundle: ModelBundle,
        prompt: str,
        lanes: dict[str, LaneSpec],
        seed: int,
        eval_every: int = 50,
        frame_every: int = 10,
        autosave: Autosave | None = None,
        lock: sess.SessionLock | None = None,
        created: str | None = None,
        init: InitImage | None = None,
    ) -> Run:
        """A new session at `path`, saved at step 0. `lock`: the session's lock, already taken (open_run
        takes it before writing the recipe; it stays held if this fails); else it is taken here. The
        first save removes a recipe. `init`: a picture every lane starts from instead of noise (its
        copy is written as init.png unless the recipe's start-up wrote it; the fit errors land in
        `init_fit`, the picture's sha256 in the change history)."""
        path = Path(path)
        if lock is None:
            recipe.check_new_session_dir(path)
        engine = new_engine(bundle, prompt, lanes, seed, eval_every)
        run = cls(path, engine, autosave, frame_every, created=created)
        if lock is not None:
            run.lock = lock
        else:
            run.lock.acquire()
        try:
            if sess.is_session(path):  # another process created it while we were loading the model
                raise SessionError(f"{path}: a session was created here meanwhile; run again to resume it")
            if init is not None:
                run.init_fit = engine.start_from(init.canvas(bundle.image_size))
                engine.changes.append(init.change())
                if not (path / INIT_FILE).exists():
                    recipe.write_init(path, init)
            run._capture()
            run.save()
        except BaseException:
            if lock is None:  # a lock the caller passed is the caller's to release (after its clean-up)
                run.lock.release()
            raise
        return run

    @classmethod
    def resume(cls, path: Path, bundle: ModelBundle, autosave: Autosave | None = None) -> Run:
        """Reopen a saved session with `bundle` (which the caller checked is the session's model).

        The session is read again under the lock: the previous holder may have saved since the
        caller validated it.
        """
        return cls._open(path, bundle, autosave, refit=False)

    @classmethod
    def retarget(cls, path: Path, bundle: ModelBundle, autosave: Autosave | None = None) -> Run:
        """Continue a session on another model (or changed weights): pictures, history and frames carry
        over (resized if the input size differs, each lane's parameterization refitted); optimizer
        state and best-so-far restart, and the change of model is recorded."""
        return cls._open(path, bundle, autosave, refit=True)

    @classmethod
    def _open(cls, path: Path, bundle: ModelBundle, autosave: Autosave | None, refit: bool) -> Run:
        path = Path(path)
        lock = sess.SessionLock(path).acquire()
        try:
            s = sess.load(path)
            if not refit:
                check_fits(s, bundle)
            engine = new_engine(bundle, s.prompt, dict(s.lanes), s.seed, s.eval_every)
            run = cls(path, engine, autosave, s.frame_every, created=s.created, theme=s.theme)
            run.lock = lock
            run.restore(s, refit=refit)
            if refit:
                old, new = s.model["name"], bundle.name
                if old == new:  # same model, changed weights: record which checkpoints
                    old = f"{old}@{str(s.model.get('sha256', ''))[:12]}"
                    new = f"{new}@{str(bundle.sha256 or '')[:12]}"
                engine.changes.append({"step": s.steps, "lane": "*", "key": "model", "old": old, "new": new})
                run._capture()
                run.save()
        except BaseException:
            lock.release()
            raise
        return run

    def restore(self, s: sess.Session, refit: bool = False) -> None:
        """Make the run exactly what session `s` holds: prompt, lanes (specs and state), change history,
        probe records and frames. The one path behind resume, retarget and the app's rollback.

        refit: the session was made on another model: each lane's picture is resized to this
        model's input and its parameterization fitted to it; history, evaluations and view
        generator carry over, the optimizer and best-so-far start afresh.
        """
        e = self.engine
        if s.prompt != e.prompt:
            e.set_prompt(s.prompt, record=False)
        e.rebuild_lanes(dict(s.lanes))
        for name, arrays in s.arrays.items():
            _load_lane(e, self.path, name, arrays, refit)
        e.changes = list(s.changes)
        if e.probe is not None and not refit:
            e.probe.load(s.arrays)  # layer-probe records, back to the same step
        side = min(sess.FRAME_SIZE, e.bundle.image_size)
        for name, (frames, at) in s.frames.items():
            self.frames[name] = [f if f.shape[0] == side else _resize_frame(f, side) for f in frames]
            self.frame_steps[name] = [int(x) for x in at]
        self.saved_step = e.step_count
        self.saved_changes = len(e.changes)

    def close(self) -> None:
        self.lock.release()

    # ------------------------------------------------------------------ stepping
    @property
    def steps(self) -> int:
        return self.engine.step_count

    def dirty(self) -> bool:
        """Whether steps or recorded changes exist that the last save does not hold."""
        return self.steps != self.saved_step or len(self.engine.changes) != self.saved_changes

    def step(self, n: int = 1) -> bool:
        """Advance n steps; returns True if an autosave happened."""
        saved = False
        for _ in range(n):
            self.engine.step()
            if self.steps % self.frame_every == 0:
                self._capture()
            if self._autosave_due():
                self.save()
                saved = True
        return saved

    def _autosave_due(self) -> bool:
        a = self.autosave
        if a.every_steps > 0 and self.steps % a.every_steps == 0:
            return True
        return a.every_seconds > 0 and time.monotonic() - self.last_save_time >= a.every_seconds

    def _capture(self) -> None:
        for name in self.engine.lanes:
            if self.frame_steps[name] and self.frame_steps[name][-1] == self.steps:
                continue
            self.frames[name].append(self.engine.preview(name, sess.FRAME_SIZE))
            self.frame_steps[name].append(self.steps)

    # ------------------------------------------------------------------ saving
    def summary(self) -> dict[str, dict]:
        out = {}
        for name, ln in self.engine.lanes.items():
            h, ev = ln.history, ln.evals
            row = {}
            if len(h):
                row["last_similarity"] = float(h[-1, 0])
                row["best_similarity"] = float(h[:, 0].max())
            if len(ev):
                row["robust_similarity"] = float(ev[-1, 1])
                row["verified_similarity"] = float(ev[-1, 2])
            out[name] = {k: v for k, v in row.items() if math.isfinite(v)}  # session.toml refuses NaN
        return out

    def to_session(self) -> sess.Session:
        e = self.engine
        e.flush()
        arrays = {name: e.lane_state(name) for name in e.lanes}
        if e.probe is not None:
            for name in e.lanes:
                arrays[name].update(e.probe.lane_arrays(name, upto=e.lanes[name].steps))
        frames = {}
        for name in e.lanes:
            f = self.frames[name]
            side = min(sess.FRAME_SIZE, e.bundle.image_size)
            stack = np.stack(f) if f else np.zeros((0, side, side, 3), np.uint8)
            frames[name] = (stack, np.array(self.frame_steps[name], np.int64))
        return sess.Session(
            path=self.path,
            prompt=e.prompt,
            seed=e.seed,
            model=model_record(e.bundle),
            lanes={n: ln.spec for n, ln in e.lanes.items()},
            steps=self.steps,
            arrays=arrays,
            frames=frames,
            changes=list(e.changes),
            eval_every=e.eval_every,
            frame_every=self.frame_every,
            created=self.created,
            theme=self.theme,
            summary=self.summary(),
        )

    def save(self) -> None:
        sess.save(self.to_session())
        if not self.recipe_superseded:  # this run's first save: session.toml now says all a recipe said
            recipe.remove(self.path)
            self.recipe_superseded = True
        self.saved_step = self.steps
        self.saved_changes = len(self.engine.changes)
        self.last_save_time = time.monotonic()


def _load_lane(engine: Engine, path: Path, name: str, arrays: dict[str, np.ndarray], refit: bool) -> None:
    """engine.load_lane_state (or refit_lane), with a refusal that names the session file."""
    try:
        if refit:
            engine.refit_lane(name, arrays)
        else:
            engine.load_lane_state(name, arrays)
    except ParamError as e:  # the only ParamError load_lane_state raises is about the generator state
        raise SessionError(f"{path / sess.lane_dir_name(name) / 'rng.npy'}: {e}") from None
    except ClipTermError as e:
        raise SessionError(f"{path / sess.lane_dir_name(name)}: {e}") from None


def _resize_frame(frame: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((side, side), Image.BILINEAR), dtype=np.uint8)
