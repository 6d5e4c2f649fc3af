"""A run: an Engine bound to a session directory (create, resume, frames, autosave, save).

The headless `clipterm run` and the app's worker both drive a Run, so resuming, autosaving and
recording parameter changes behave the same everywhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipterm import session as sess
from clipterm.engine import Engine
from clipterm.errors import SessionError
from clipterm.models import BUNDLED, ModelBundle, load_model
from clipterm.presets import LaneParams


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


def load_session_model(model: dict, device: str | None) -> ModelBundle:
    """Load the model a session was made with and refuse it if its checkpoint has changed."""
    name = str(model["name"])
    pretrained = str(model["pretrained"])
    bundle = load_model(name, None if pretrained == "bundled" else pretrained, device)
    want = model.get("sha256")
    if want and bundle.sha256 != want:
        raise SessionError(f"checkpoint {bundle.checkpoint}: sha256 {bundle.sha256[:12]}… no longer matches the "
                           f"session's {str(want)[:12]}…; the weights changed since this session was made")
    return bundle


def same_model(record: dict, name: str, pretrained: str | None) -> bool:
    if name != record.get("name"):
        return False
    if pretrained is None:
        return True
    return pretrained == record.get("pretrained") or (
        record.get("checkpoint") not in (None, "bundled")
        and Path(pretrained).expanduser().resolve() == Path(str(record["checkpoint"])))


class Run:
    """Engine + session bookkeeping. Call `step()`; it captures frames and autosaves on schedule."""

    def __init__(self, path: Path, engine: Engine, autosave: Autosave | None = None, frame_every: int = 10,
                 created: str | None = None, theme: str = "") -> None:
        self.path = Path(path)
        self.engine = engine
        self.autosave = autosave or Autosave()
        self.frame_every = frame_every
        self.created = created or sess.now()
        self.theme = theme
        self.frames: dict[str, list[np.ndarray]] = {n: [] for n in engine.lanes}
        self.frame_steps: dict[str, list[int]] = {n: [] for n in engine.lanes}
        self.saved_step = -1
        self.last_save_time = time.monotonic()
        self.lock = sess.SessionLock(self.path)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, path: Path, bundle: ModelBundle, prompt: str, lanes: dict[str, LaneParams], seed: int,
               eval_every: int = 50, frame_every: int = 10, autosave: Autosave | None = None) -> Run:
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise SessionError(f"{path}: exists and is not an empty directory or a clipterm session")
        engine = Engine(bundle, prompt, lanes, seed=seed, eval_every=eval_every)
        run = cls(path, engine, autosave, frame_every)
        run.lock.acquire()
        run._capture()
        run.save()
        return run

    @classmethod
    def resume(cls, path: Path, bundle: ModelBundle, autosave: Autosave | None = None,
               session: sess.Session | None = None) -> Run:
        """Reopen a saved session with `bundle` (which the caller checked is the session's model)."""
        path = Path(path)
        lock = sess.SessionLock(path).acquire()
        try:
            s = sess.load(path) if session is None else session
            engine = Engine(bundle, s.prompt, dict(s.lanes), seed=s.seed, eval_every=s.eval_every)
            for name, arrays in s.arrays.items():
                if arrays["param"].shape != (3, bundle.image_size, bundle.image_size):
                    raise SessionError(f"{path / sess.lane_dir_name(name) / 'param.npy'}: canvas "
                                       f"{arrays['param'].shape[1]}px does not fit {bundle.name}'s "
                                       f"{bundle.image_size}px input")
                engine.load_lane_state(name, arrays)
            engine.changes = list(s.changes)
        except Exception:
            lock.release()
            raise
        run = cls(path, engine, autosave, s.frame_every, created=s.created, theme=s.theme)
        run.lock = lock
        for name, (frames, steps) in s.frames.items():
            run.frames[name] = list(frames)
            run.frame_steps[name] = [int(x) for x in steps]
        run.saved_step = engine.step_count
        return run

    @classmethod
    def retarget(cls, path: Path, bundle: ModelBundle, s: sess.Session, autosave: Autosave | None = None) -> Run:
        """Continue a session on another model: canvases carry over (resized), optimizer state restarts."""
        import torch

        lock = sess.SessionLock(Path(path)).acquire()
        try:
            engine = Engine(bundle, s.prompt, dict(s.lanes), seed=s.seed, eval_every=s.eval_every)
            size = bundle.image_size
            for name, arrays in s.arrays.items():
                x = torch.from_numpy(arrays["param"])[None]
                if x.shape[-1] != size:
                    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
                canvas = x[0].numpy().astype(np.float32)
                zeros = np.zeros_like(canvas)
                state = dict(arrays, param=canvas, best=canvas, opt_step=np.array(0, np.float32),
                             opt_exp_avg=zeros, opt_exp_avg_sq=zeros, best_loss=np.array(np.inf, np.float32))
                engine.load_lane_state(name, state)
            engine.changes = list(s.changes) + [{"step": s.steps, "lane": "*", "key": "model",
                                                 "old": s.model["name"], "new": bundle.name}]
        except Exception:
            lock.release()
            raise
        run = cls(Path(path), engine, autosave, s.frame_every, created=s.created, theme=s.theme)
        run.lock = lock
        run.frames = {n: [] for n in engine.lanes}
        run.frame_steps = {n: [] for n in engine.lanes}
        run._capture()
        run.save()
        return run

    def close(self) -> None:
        self.lock.release()

    # ------------------------------------------------------------------ stepping
    @property
    def steps(self) -> int:
        return self.engine.step_count

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
            out[name] = row
        return out

    def to_session(self) -> sess.Session:
        e = self.engine
        e.flush()
        arrays = {name: e.lane_state(name) for name in e.lanes}
        frames = {}
        for name in e.lanes:
            f = self.frames[name]
            stack = np.stack(f) if f else np.zeros((0, sess.FRAME_SIZE, sess.FRAME_SIZE, 3), np.uint8)
            frames[name] = (stack, np.array(self.frame_steps[name], np.int64))
        return sess.Session(path=self.path, prompt=e.prompt, seed=e.seed, model=model_record(e.bundle),
                            lanes={n: ln.params for n, ln in e.lanes.items()}, steps=self.steps, arrays=arrays,
                            frames=frames, changes=list(e.changes), eval_every=e.eval_every,
                            frame_every=self.frame_every, created=self.created, theme=self.theme,
                            summary=self.summary())

    def save(self) -> None:
        sess.save(self.to_session())
        self.saved_step = self.steps
        self.last_save_time = time.monotonic()
