"""The engine side of the app: a loop run in a Textual thread worker.

Only this thread touches the engine (and so its tensors). The UI asks for changes through a
thread-safe command queue, applied between steps, and learns about the run only from immutable
`Snapshot`s and log lines that the loop posts as Textual messages (post_message is thread-safe).
Snapshots are throttled to `fps` and carry device-downsampled previews, so a fast run never floods
the screen. A failing step (out of memory, NaN, a model error) pauses the run, rolls the engine
back to its last save and reports; the loop itself never dies.
"""

from __future__ import annotations

import io
import os
import queue
import re
import threading
import time
import tomllib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
from textual.message import Message

from clipterm import session as sess
from clipterm.engine import EngineError
from clipterm.errors import ClipTermError, SessionError
from clipterm.judge import Judge
from clipterm.lanespec import LANE_NAME, LaneSpec
from clipterm.outputs import write_file
from clipterm.probes import STAT_COLUMNS, layer_rows
from clipterm.prompts import main_term
from clipterm.runner import Run
from clipterm.session.npy import read_regular
from clipterm.unitspec import describe_units, parse_units

SPARK_POINTS = 240
LAYER_TREND = 12  # probe records behind each row's trend in the Layers view
PREVIEW_SIZE = 128
UI_STATE = "app.toml"
GIVE_WAY_S = 0.2  # the longest a key holds the worker back (its redraw normally ends sooner)


# ---------------------------------------------------------------------------- what the UI sees
@dataclass(frozen=True)
class JudgeView:
    """An independent model's verdict on a lane's picture: its rank of the prompt among its labels."""

    judge: str
    rank: int
    of: int
    score: float
    top: str


@dataclass(frozen=True)
class LaneView:
    """One lane as of a snapshot; plain host data only."""

    name: str
    spec: LaneSpec
    sims: np.ndarray  # last SPARK_POINTS raw similarities
    current: float | None
    best: float | None
    robust: float | None
    verified: float | None
    judge: JudgeView | None
    preview: np.ndarray | None  # uint8 HWC
    frame_steps: tuple[int, ...]
    frame_sims: tuple[float, ...]
    # newest layer-probe record while the Layers view is on: its step and rows of
    # (name, act_mean, act_std, act_norm, grad_norm); None when off or nothing recorded yet
    layers_step: int | None = None
    layers: tuple[tuple[str, float, float, float, float], ...] | None = None
    # per layer, its gradient norm over the last LAYER_TREND records (oldest first)
    layers_trend: tuple[tuple[float, ...], ...] | None = None


@dataclass(frozen=True)
class Snapshot:
    steps: int
    running: bool
    failed: bool
    rate: float
    prompt: str
    saved_step: int
    lanes: dict[str, LaneView]


class SnapshotReady(Message):
    """A new view of the run for the screen."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class LogLine(Message):
    """A line for the Log pane; level: info, warning, error. `notify` also shows a toast."""

    def __init__(self, step: int, text: str, level: str = "info", notify: bool = False) -> None:
        super().__init__()
        self.step, self.text, self.level, self.notify = step, text, level, notify


class CommandDone(Message):
    """The outcome of a queued command (error is the reason it was refused, or None)."""

    def __init__(self, command: Command, error: str | None) -> None:
        super().__init__()
        self.command, self.error = command, error


class WorkerStopped(Message):
    """The loop has ended and its final save is done (or failed)."""


# ---------------------------------------------------------------------------- UI state file
def read_ui_state(path: Path) -> dict:
    """Active lane and split view remembered next to the session (missing, broken or not a regular
    file, such as a FIFO that would block the read: defaults)."""
    root = Path(path)
    try:
        data = read_regular(root / UI_STATE, root, 64 << 10)
        doc = tomllib.loads(data.decode("utf-8"))
    except (ClipTermError, OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    out = {}
    if isinstance(doc.get("lane"), str) and LANE_NAME.match(doc["lane"]):
        out["lane"] = doc["lane"]
    if isinstance(doc.get("split"), bool):
        out["split"] = doc["split"]
    return out


def write_ui_state(path: Path, state: dict) -> None:
    """app.toml, written whole through a fresh temporary file (nothing planted there is written through)."""
    write_file(Path(path) / UI_STATE, tomli_w.dumps(state).encode())


# ---------------------------------------------------------------------------- commands
@dataclass(frozen=True)
class Command:
    """Something the UI asks the worker to do between steps; the worker dispatches on the type.

    Frozen so a queued command cannot change on its way to the worker thread; CommandDone hands the
    same object back, so the screen knows which edit an answer is about.
    """

    @property
    def name(self) -> str:
        """snake_case of the class name (SetParam -> set_param), for log lines only."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()


@dataclass(frozen=True)
class Wake(Command):
    """Does nothing: wakes a worker blocked on an empty queue (stop)."""


@dataclass(frozen=True)
class Pause(Command):
    """Pause (True), run (False), or flip between them (None)."""

    paused: bool | None = None


@dataclass(frozen=True)
class Step(Command):
    """Advance n steps now (the '.' key, while paused)."""

    n: int = 1


@dataclass(frozen=True)
class ShowLayers(Command):
    """Whether snapshots carry layer-probe rows (the Layers pane is shown)."""

    shown: bool


@dataclass(frozen=True)
class Save(Command):
    """Save the session now."""


@dataclass(frozen=True)
class SetPrompt(Command):
    text: str


@dataclass(frozen=True)
class SetUnits(Command):
    """A lane's unit terms, as text in the --unit syntax joined by ';' (the units dialog, key u)."""

    lane: str
    text: str


@dataclass(frozen=True)
class SetParam(Command):
    """A live parameter of one lane; `value` as typed, validated by the engine."""

    lane: str
    key: str
    value: object


@dataclass(frozen=True)
class SetPreset(Command):
    lane: str
    preset: str


@dataclass(frozen=True)
class FlipPreset(Command):
    """Constrained <-> unconstrained, decided by the worker from the engine's own state."""

    lane: str


@dataclass(frozen=True)
class SetTheme(Command):
    """The theme to remember in the session."""

    theme: str


@dataclass(frozen=True)
class Export(Command):
    """The live canvas of `lane` as a PNG into `folder`, or its saved trajectory frame number `frame`."""

    lane: str
    folder: Path
    frame: int | None = None


# edits refused by validation: the reason goes back to the field that asked, not to a toast
FIELD_EDITS = (SetParam, SetPreset, SetPrompt)


# ---------------------------------------------------------------------------- the loop


@dataclass
class _Rate:
    window: float = 2.0
    marks: deque = field(default_factory=deque)

    def add(self, t: float, steps: int) -> None:
        self.marks.append((t, steps))
        while len(self.marks) > 2 and t - self.marks[0][0] > self.window:
            self.marks.popleft()

    def value(self) -> float:
        if len(self.marks) < 2:
            return 0.0
        (t0, s0), (t1, s1) = self.marks[0], self.marks[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0


def _oom_types() -> tuple[type, ...]:
    import torch

    kinds = [getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)]
    return tuple(k for k in kinds if k is not None)


class Controller:
    """Owns the Run while the app is up. `loop()` runs in the worker thread; `submit()` from anywhere."""

    def __init__(
        self,
        run: Run,
        post: Callable[[Message], object],
        *,
        fps: float = 4.0,
        paused: bool = False,
        judge: Judge | None = None,
        preview_size: int = PREVIEW_SIZE,
    ) -> None:
        self.run = run
        self.post = post
        self.interval = 1.0 / fps if fps > 0 else 0.25
        self.running = not paused
        self.failed = False
        self.preview_size = preview_size
        self.commands: queue.Queue[Command] = queue.Queue()
        self.stopping = threading.Event()
        self.done = threading.Event()
        self.view = {"lane": "a", "split": False}  # set by the UI; plain assignment is atomic
        self.layers = False  # the Layers view is shown: snapshots carry the newest probe rows
        self.cancelled: Callable[[], bool] = lambda: False
        self._judge = judge  # loaded by the caller (a bad --judge is refused before the session opens)
        self._judged: dict[str, tuple[int, str]] = {}
        self._verdicts: dict[str, object] = {}
        self._rate = _Rate()
        self._inflight = threading.Event()  # a snapshot is posted and not yet shown: do not pile up
        self._dirty = True
        self._last_pub = 0.0
        self._give_way_until = 0.0  # monotonic time before which the worker starts no step (give_way)
        self.saved_ok = False

    # ------------------------------------------------------------------ called from the UI thread
    def submit(self, command: Command) -> None:
        self.commands.put(command)

    def ack(self) -> None:
        """The UI has drawn the last snapshot; the next one may be posted."""
        self._inflight.clear()

    def give_way(self, seconds: float = GIVE_WAY_S) -> None:
        """The UI is handling a key: start no step for up to `seconds` (or until `resume`). The worker
        and the UI share one interpreter lock, so a step running beside the UI's redraw doubles the
        time until the key's effect is on screen; the step in flight still finishes."""
        self._give_way_until = time.monotonic() + seconds

    def resume(self) -> None:
        """The key's effect is on screen: steps may start again."""
        self._give_way_until = 0.0

    def stop(self) -> None:
        """Ask the loop to end (it saves first); returns at once."""
        self.stopping.set()
        self.commands.put(Wake())

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop, wait for the final save, release the session lock. Safe to call twice."""
        self.stop()
        if not self.done.wait(timeout):
            return  # the worker is stuck inside a step; the lock dies with the process
        self.run.close()

    # ------------------------------------------------------------------ the worker thread
    def log(self, text: str, level: str = "info", notify: bool = False) -> None:
        self.post(LogLine(self.run.steps, text, level, notify))

    def loop(self) -> None:
        """Step, apply commands between steps, publish throttled snapshots; save on the way out."""
        self._lower_priority()
        try:
            self._load_judge()
            self._refresh_judge(force=True)
            self._publish()
            while not self.stopping.is_set() and not self.cancelled():
                self._drain(block=not self.running or self.failed)
                if self.stopping.is_set() or self.cancelled():
                    break
                if self._dirty and not self._inflight.is_set():
                    self._guarded(self._publish)  # a command's effect is shown before the next step
                if self.running and not self.failed and self._wait_for_ui():
                    self._guarded(self._step_once)
                # a command's effect is shown at once; a running lane at most `fps` times a second
                due = self._dirty or (self.running and time.monotonic() - self._last_pub >= self.interval)
                if due and not self._inflight.is_set():
                    self._guarded(self._publish)
        finally:
            self._final_save()
            self.done.set()
            self.post(WorkerStopped())

    def _wait_for_ui(self) -> bool:
        """Sleep while the UI asked to go first; False when a command came meanwhile (the loop applies
        and shows it before the next step: a key that asks the worker for something gets it at once)."""
        while time.monotonic() < self._give_way_until and not self.stopping.is_set():
            if not self.commands.empty():
                return False
            time.sleep(0.002)  # sleeping releases the interpreter lock to the UI thread
        return True

    def _lower_priority(self) -> None:
        """Let the UI thread win the CPU: nice this thread (and torch's CPU threads it starts)."""
        nice = int(os.environ.get("CLIPTERM_WORKER_NICE", "5"))
        if nice <= 0 or not hasattr(os, "setpriority"):
            return
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
        except OSError:
            pass

    def _final_save(self) -> None:
        try:
            if not self.failed:
                self.run.save()
                self._write_ui_state()
                self.log(f"saved at step {self.run.steps}")
            self.saved_ok = True
        except Exception as e:  # the app must still exit; the previous save stands
            self.log(f"final save failed: {e}; the previous save (step {self.run.saved_step}) is kept", "error")

    def _drain(self, block: bool) -> None:
        try:
            cmd = self.commands.get(timeout=0.1) if block else self.commands.get_nowait()
        except queue.Empty:
            return
        while True:
            self._apply(cmd)
            try:
                cmd = self.commands.get_nowait()
            except queue.Empty:
                return

    def _handlers(self) -> dict[type[Command], Callable[[Any], None]]:
        """Each command type and the worker method that carries it out."""
        return {
            Pause: self._cmd_pause,
            Step: self._cmd_step,
            ShowLayers: self._cmd_show_layers,
            Save: self._cmd_save,
            SetPrompt: self._cmd_set_prompt,
            SetUnits: self._cmd_set_units,
            SetParam: self._cmd_set_param,
            SetPreset: self._cmd_set_preset,
            FlipPreset: self._cmd_flip_preset,
            SetTheme: self._cmd_set_theme,
            Export: self._cmd_export,
        }

    def _apply(self, cmd: Command) -> None:
        if isinstance(cmd, Wake):
            return
        handler = self._handlers().get(type(cmd))
        error = None
        if handler is None:
            error = f"unknown command {cmd!r}"
        else:
            try:
                handler(cmd)
            except EngineError as e:  # the canvas went bad while stepping
                error = str(e)
                self._fail(e)
            except ClipTermError as e:  # refused: the reason goes back to the field that asked
                error = str(e)
                if not isinstance(cmd, FIELD_EDITS):
                    self.log(f"{cmd.name}: {error}", "error", notify=True)
            except Exception as e:
                error = f"{type(e).__name__}: {e}"
                self._fail(e)
        self._dirty = True
        self.post(CommandDone(cmd, error))

    def _guarded(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as e:
            self._fail(e)

    def _step_once(self) -> None:
        run = self.run
        evals_before = {n: len(ln.evals) for n, ln in run.engine.lanes.items()}
        try:
            if run.step(1):
                self.log(f"autosaved at step {run.steps}")
                self._write_ui_state()
        except SessionError as e:  # the step is done; only its autosave failed (a full disk)
            self._autosave_failed(e)
        self._rate.add(time.monotonic(), run.steps)
        if any(len(ln.evals) != evals_before[n] for n, ln in run.engine.lanes.items()):
            self._refresh_judge()

    # ------------------------------------------------------------------ failures
    def _autosave_failed(self, e: SessionError) -> None:
        """Keep running: the steps are in memory, the previous save is whole, the next autosave retries.

        Pausing would lose nothing either, but a disk that fills up during a long unattended run
        should not stop it; the time-based schedule restarts so a full disk is not retried every step.
        """
        self.run.last_save_time = time.monotonic()
        self.log(
            f"autosave failed: {e}; still running, the next autosave retries (the save of step "
            f"{self.run.saved_step} is kept)",
            "error",
            notify=True,
        )
        self._dirty = True

    def _fail(self, e: BaseException) -> None:
        """Report, pause, and put the engine back to its last save so the user can continue."""
        if isinstance(e, _oom_types()):
            msg = (
                f"out of memory on {self.run.engine.device} at step {self.run.steps}: lower 'views' or use a "
                f"smaller model, then resume"
            )
        elif isinstance(e, ClipTermError):
            msg = str(e)
        else:
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        self.running = False
        self.log(f"{msg} (paused)", "error", notify=True)
        self._dirty = True
        if isinstance(e, (SessionError, OSError)):
            return  # the engine is fine, the disk is not: keep the canvas, the previous save stands
        self.failed = True
        try:
            self._rollback()
            self.failed = False
            self.log(
                f"rolled back to the last save (step {self.run.steps}); change parameters and press space to continue",
                "warning",
            )
        except Exception as e2:
            self.log(f"could not roll back to the last save: {e2}; the session on disk is untouched", "error")
        self._dirty = True

    def _rollback(self) -> None:
        self.run.restore(sess.load(self.run.path))
        self._judged.clear()
        self._refresh_judge()

    # ------------------------------------------------------------------ commands (worker thread)
    def _cmd_pause(self, cmd: Pause) -> None:
        self.running = (not self.running) if cmd.paused is None else not cmd.paused
        if self.running:
            self.failed = False
            self._rate = _Rate()
        self.log("running" if self.running else "paused")

    def _cmd_step(self, cmd: Step) -> None:
        for _ in range(int(cmd.n)):
            self._step_once()
        self.run.engine.flush()

    def _cmd_show_layers(self, cmd: ShowLayers) -> None:
        self.layers = bool(cmd.shown)

    def _cmd_save(self, _cmd: Save) -> None:
        self.run.save()
        self._write_ui_state()
        self.log(f"saved at step {self.run.steps}")

    def _cmd_set_prompt(self, cmd: SetPrompt) -> None:
        text = cmd.text
        old = self.run.engine.prompt
        warns = self.run.engine.set_prompt(text)
        self.log(f"prompt: {old!r} → {text!r} (re-encoded; every lane continues from its canvas)")
        for w in warns:
            self.log(f"warning: {w}", "warning", notify=True)
        self._judged.clear()
        self._refresh_judge()

    def _cmd_set_units(self, cmd: SetUnits) -> None:
        old = describe_units(self.run.engine.lane(cmd.lane).spec) or "none"
        new = describe_units(self.run.engine.set_units(cmd.lane, parse_units(cmd.text))) or "none"
        self.log(f"lane {cmd.lane.upper()}: units {old} → {new}")

    def _cmd_set_param(self, cmd: SetParam) -> None:
        lane, key = cmd.lane, cmd.key
        old = self.run.engine.lane(lane).spec.value(key)
        new = self.run.engine.set_param(lane, key, cmd.value).value(key)
        self.log(f"lane {lane.upper()}: {key} {fmt_value(old)} → {fmt_value(new)}")

    def _cmd_set_preset(self, cmd: SetPreset) -> None:
        lane = cmd.lane
        old = self.run.engine.lane(lane).spec.preset
        self.run.engine.set_preset(lane, cmd.preset)
        self.log(f"lane {lane.upper()}: preset {old} → {cmd.preset}")

    def _cmd_flip_preset(self, cmd: FlipPreset) -> None:
        """Constrained <-> unconstrained, decided here from the engine's own state: two quick presses
        made from one stale snapshot still flip twice."""
        cur = self.run.engine.lane(cmd.lane).spec.preset
        self._cmd_set_preset(SetPreset(cmd.lane, "unconstrained" if cur == "constrained" else "constrained"))

    def _cmd_set_theme(self, cmd: SetTheme) -> None:
        if self.run.theme != cmd.theme:
            self.run.theme = cmd.theme

    def _cmd_export(self, cmd: Export) -> None:
        """The live canvas at full model resolution, as 8-bit PNG (what `final.png` would hold now), or
        a saved trajectory frame (scrubbing)."""
        from PIL import Image

        lane, e = cmd.lane, self.run.engine
        folder = Path(cmd.folder)
        if folder.is_symlink():  # a session handed to us must not point our writes elsewhere
            raise ClipTermError(f"{folder}: is a symlink; refusing to write exports through it")
        if cmd.frame is None:
            img, step, what = e.preview(lane, e.bundle.image_size), self.run.steps, ""
        else:
            i = min(cmd.frame, len(self.run.frames[lane]) - 1)
            img, step, what = self.run.frames[lane][i], self.run.frame_steps[lane][i], "-saved"
        dest = folder / f"lane-{lane}-step-{step:07d}{what}.png"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ClipTermError(f"{folder}: cannot create ({exc.strerror})") from None
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        write_file(dest, buf.getvalue())  # whole or not at all; a planted symlink is replaced, not followed
        self.log(f"exported lane {lane.upper()} {'saved frame ' if what else ''}at step {step} to {dest}")

    # ------------------------------------------------------------------ judge and snapshots
    def _load_judge(self) -> None:
        """The judge's label embeddings, computed here in the worker (ImageNet's take a while on a CPU)."""
        if self._judge is None:
            return
        try:
            self._judge.label_embeddings()
            self.log(f"judge: {self._judge.describe()}")
        except Exception as e:
            self.log(f"judge {self._judge.name} unavailable: {e}", "warning")
            self._judge = None

    def _refresh_judge(self, force: bool = False) -> None:
        """Ask the independent model how it ranks the prompt for each lane's canvas (at each eval)."""
        if self._judge is None:
            return
        e = self.run.engine
        prompt = main_term(e.prompt)
        for name in e.lanes:
            key = (self.run.steps, prompt)
            if not force and self._judged.get(name) == key:
                continue
            v = self._judge.rank_canvas(e.shown(name), prompt)
            self._verdicts[name] = JudgeView(
                self._judge.name, int(v.prompt_rank or 0), len(v.captions), float(v.prompt_score or 0.0), v.top
            )
            self._judged[name] = key

    def _publish(self) -> None:
        run, e = self.run, self.run.engine
        e.flush()
        lanes = {}
        for name, ln in e.lanes.items():
            h = ln.history
            col = h[:, 0]
            fsteps = tuple(run.frame_steps[name])
            fs = tuple(float(col[s - 1]) if 0 < s <= len(col) else float("nan") for s in fsteps)
            lanes[name] = LaneView(
                name=name,
                spec=ln.spec,
                sims=np.array(col[-SPARK_POINTS:], np.float32),
                current=float(col[-1]) if len(col) else None,
                best=float(np.nanmax(col)) if np.isfinite(col).any() else None,
                robust=float(ln.evals[-1, 1]) if len(ln.evals) else None,
                verified=float(ln.evals[-1, 2]) if len(ln.evals) else None,
                judge=self._verdicts.get(name),
                preview=e.preview(name, self.preview_size),
                frame_steps=fsteps,
                frame_sims=fs,
                **self._layers(name),
            )
        snap = Snapshot(
            steps=run.steps,
            running=self.running,
            failed=self.failed,
            rate=self._rate.value() if self.running else 0.0,
            prompt=e.prompt,
            saved_step=run.saved_step,
            lanes=lanes,
        )
        self._dirty = False
        self._last_pub = time.monotonic()
        self._inflight.set()
        self.post(SnapshotReady(snap))

    def _layers(self, lane: str) -> dict:
        """The lane's newest probe record as plain rows, plus each layer's recent gradient norms (the
        trend), only while the Layers view is shown; nothing otherwise, so snapshots stay small."""
        probe = self.run.engine.probe
        if not self.layers or probe is None:
            return {}
        steps, stats = probe.recent(lane, LAYER_TREND)
        if not len(steps):
            return {}
        grad_norm = STAT_COLUMNS.index("grad_norm")
        trend = tuple(tuple(float(v) for v in stats[:, i, grad_norm]) for i in range(stats.shape[1]))
        return {
            "layers_step": int(steps[-1]),
            "layers": tuple(layer_rows(stats[-1], probe.names)),
            "layers_trend": trend,
        }

    def _write_ui_state(self) -> None:
        try:
            write_ui_state(self.run.path, dict(self.view))
        except (ClipTermError, OSError) as e:
            self.log(f"could not remember the view: {e}", "warning")


def fmt_value(v: object) -> str:
    """A parameter value as the Parameters pane and the log show it (bools as on/off, floats as %g)."""
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, tuple):
        return "+".join(v) or "own"
    return str(v)
