"""The clipterm Textual app: panes, keys, command palette, themes.

The app owns a `Controller` whose loop runs in a thread worker; the UI only queues commands and
draws the Snapshots the loop posts, so a slow step never freezes a key press.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.markup import escape
from textual import events
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Input, RichLog, Static

from clipterm.app.collector import QuietCollector
from clipterm.app.controller import (
    CommandDone,
    Controller,
    Export,
    FlipPreset,
    LogLine,
    Pause,
    Save,
    SetParam,
    SetPreset,
    SetPrompt,
    SetTheme,
    SetUnits,
    ShowLayers,
    Snapshot,
    SnapshotReady,
    Step,
    WorkerStopped,
)
from clipterm.app.objective import UnitsScreen
from clipterm.app.paramtable import ParamTable
from clipterm.app.themes import DEFAULT_THEME, discover_themes

if TYPE_CHECKING:
    from clipterm.judge import Judge
from clipterm.app.widgets import (
    FieldInput,
    FrameView,
    HelpScreen,
    LayersPane,
    ParamsPane,
    PromptPane,
    SimilarityPane,
    fmt_sim,
    set_line,
)
from clipterm.errors import ClipTermError
from clipterm.lanespec import MAX_LANES
from clipterm.presets import available
from clipterm.prompts import parse_prompt
from clipterm.runner import Run
from clipterm.unitspec import describe_units


@dataclass(frozen=True)
class Key:
    """One key: its binding, footer label, help text; the single source for footer, help and palette."""

    key: str
    action: str
    label: str
    help: str
    show: bool = True
    priority: bool = False
    display: str | None = None


PAGE = 4  # lanes a page of the split view shows (a 2x2 grid)


KEYS: tuple[Key, ...] = (  # footer order: the most needed first (a narrow footer cuts the tail)
    Key("enter", "edit_param", "Edit", "in Parameters: edit the value under the cursor", display="⏎"),
    Key("ctrl+t", "toggle_lane", "Lane", "show the next lane (Frame and Parameters follow)", priority=True),
    Key("t", "toggle_lane", "Lane", "same as ctrl+t, when no text field has focus", show=False),
    Key("vertical_line", "toggle_split", "Split", "all lanes side by side (a grid of 4 a page)", display="|"),
    Key("m", "flip_mode", "Mode", "flip the active lane between constrained and unconstrained"),
    Key("space", "toggle_pause", "Pause", "pause or resume the optimization", display="space"),
    Key("ctrl+s", "save", "Save", "save the session now", priority=True),
    Key("q", "quit", "Quit", "save and quit"),
    Key("question_mark", "help", "Help", "this help", display="?"),
    Key("e", "export", "Export", "export the shown frame as PNG (into SESSION/exports/)"),
    Key("left_square_bracket", "scrub(-1)", "Back", "scrub back through the saved trajectory", display="["),
    Key("right_square_bracket", "scrub(1)", "Fwd", "scrub forward (past the last frame: live)", display="]"),
    Key("full_stop", "step_once", "Step", "advance one step (while paused)", display="."),
    Key("p", "focus_prompt", "Prompt", "edit the prompt (enter applies it, esc leaves the field)"),
    Key(
        "l",
        "toggle_layers",
        "Layers",
        "show or hide the Layers pane (the active lane's layer probes; enter on a block picks it for a unit)",
    ),
    Key(
        "u",
        "edit_units",
        "Units",
        "edit the active lane's units; pick a block (as Layers numbers them) and channel",
        show=False,
    ),
    Key("ctrl+c", "quit", "Quit", "save and quit (also on SIGHUP/SIGTERM)", show=False, priority=True),
) + tuple(
    Key(
        str(i),
        f"jump_lane({i})",
        f"Lane {i}",
        f"show lane number {i}" if i > 1 else "1-8: show lane number N",
        show=False,
    )
    for i in range(1, MAX_LANES + 1)
)
# The Parameters table's own moves, run by the app in key order (see ClipTermApp.action_table_key).
TABLE_KEYS = {
    "up": "cursor_up",
    "down": "cursor_down",
    "pageup": "page_up",
    "pagedown": "page_down",
    "home": "scroll_home",
    "end": "scroll_end",
    "ctrl+home": "scroll_top",
    "ctrl+end": "scroll_bottom",
}
EXTRA_HELP = (
    ("enter", "in Parameters: edit the value under the cursor, enter again applies it; in Prompt: apply"),
    ("esc", "leave a text field (back to the Parameters table)"),
    ("tab / shift+tab", "move between the Prompt field and the Parameters table"),
    ("ctrl+p", 'command palette: every action above, themes ("Theme: …"), keys'),
)


def frame_title(lane: str, preset: str, step: int, sim: float | None, width: int, extra: str = "") -> str:
    """Lane, preset, step and similarity, shortened step by step until it fits the frame's border."""
    more = f" ({extra})" if extra else ""
    L = lane.upper()
    for title in (
        f"Frame {L} · {preset} · step {step}{more} · sim {fmt_sim(sim)}",
        f"Frame {L} · {preset} · {step}{more} · {fmt_sim(sim, 3)}",
        f"{L} · {preset} · {step}{more} · {fmt_sim(sim, 3)}",
    ):
        if len(title) <= width:
            return title
    return f"{L}·{preset[:5]}·{step}·{fmt_sim(sim, 3)}"


class ClipTermApp(App[int]):
    """Prompt, Parameters, Frame, Similarity and Log panes over one live Run."""

    CSS_PATH = "ui.tcss"  # beside this module; shipped as package data (pyproject.toml)
    TITLE = "clipterm"
    BINDINGS = [
        Binding(
            k.key,
            k.action if k.priority else f"typed({k.action!r})",
            k.label,
            show=k.show,
            priority=True,
            key_display=k.display,
        )
        for k in KEYS
    ] + [Binding(key, f"table_key({move!r})", show=False, priority=True) for key, move in TABLE_KEYS.items()]

    # repaint=False: an App reactive's default repaint is a full-screen repaint on every change (60 ms
    # at 160x48 on a busy 2-core box); the watchers below refresh just the widgets that change.
    active = reactive("a", repaint=False)
    split = reactive(False, repaint=False)
    layers = reactive(False, repaint=False)

    def __init__(
        self,
        run: Run,
        *,
        image_cls: type[Widget],
        fps: float = 4.0,
        paused: bool = False,
        judge: Judge | None = None,
        startup_log: Iterable[str] = (),
        ui_state: dict | None = None,
    ) -> None:
        super().__init__()
        self.run_ = run
        self.session_name = run.path.name
        self.start_step = run.steps  # before the worker starts; afterwards steps come from snapshots
        self.lanes = tuple(run.engine.lanes)
        self.model = f"{run.engine.bundle.name} · {run.engine.bundle.device}"
        self.image_cls = image_cls
        self.controller = Controller(run, self.post_message, fps=fps, paused=paused, judge=judge)
        self.snapshot: Snapshot | None = None
        self.scrub: int | None = None
        self.startup_log = list(startup_log)
        self.frames_shown = 0
        self.collector = QuietCollector()  # full garbage collections between keys (collector.py)
        self._pending_edit: tuple[str, str] | None = None
        self._quitting = False
        self._exit_code = 0
        self._first_prompt = run.engine.prompt
        state = ui_state or {}
        self._initial_lane = state.get("lane") if state.get("lane") in self.lanes else self.lanes[0]
        self._initial_split = bool(state.get("split", False)) and len(self.lanes) > 1
        self.theme_warnings: list[str] = []
        self._themes = discover_themes(self.theme_warnings.append)
        for t in self._themes.values():
            self.register_theme(t)
        wanted = run.theme or DEFAULT_THEME
        self.theme = wanted if wanted in self.available_themes else DEFAULT_THEME

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Static("", id="status")
        with Horizontal(id="body"):
            with Horizontal(id="frames", classes="-single"):
                for slot in range(min(PAGE, len(self.lanes))):
                    yield FrameView(slot, self.image_cls)
            with Vertical(id="side"):
                yield PromptPane(self._first_prompt)
                yield ParamsPane()
                yield SimilarityPane(self.lanes)
                yield LayersPane()
        yield RichLog(id="log", markup=True, wrap=True, max_lines=2000)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#log", RichLog).border_title = "Log"
        for line in self.startup_log:
            self._log(self.start_step, line)
        for w in self.theme_warnings:
            self._log(self.start_step, f"theme skipped: {w}", "warning")
        self.active = self._initial_lane
        self.split = self._initial_split
        self._sync_view()
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self.controller.submit(SetTheme(self.theme))
        self._small(self.size.height)
        self.query_one(ParamTable).focus()
        self.collector.start()
        self.set_interval(self.collector.every, self.collector.tick)
        worker = self.run_worker(self.controller.loop, thread=True, name="engine", group="engine", exit_on_error=False)
        self.controller.cancelled = lambda: worker.is_cancelled
        if not self.is_headless:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGHUP, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_signal, sig)

    def on_unmount(self) -> None:
        self.collector.stop()

    def _on_signal(self, sig: int) -> None:
        """SIGHUP/SIGTERM: start the final save at once, then leave.

        After a hangup the terminal is gone and Textual's shutdown can block writing to it, so a
        watchdog ends the process a moment after the save is done if the normal exit has not.
        """
        self.controller.stop()
        self._exit_code = 128 + sig
        grace = 2.0 if sig == signal.SIGHUP else 5.0
        threading.Thread(target=self._exit_when_saved, args=(128 + sig, grace), daemon=True).start()
        asyncio.ensure_future(self.action_quit())

    def _exit_when_saved(self, code: int, grace: float) -> None:
        self.controller.done.wait(120)
        time.sleep(grace)
        self.run_.close()
        os._exit(code)

    def on_resize(self, event) -> None:
        self._small(event.size.height)
        self.call_after_refresh(self._draw)

    def _small(self, height: int) -> None:
        self.screen.set_class(height < 36, "-small")

    # ------------------------------------------------------------------ messages from the worker
    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        self.snapshot = message.snapshot
        try:
            before = sum(f.frames_drawn for f in self.query(FrameView))
            self._draw()
            if sum(f.frames_drawn for f in self.query(FrameView)) > before:
                self.frames_shown += 1  # a new canvas reached the screen (what --fps limits)
        except NoMatches:  # the screen is already being torn down (quitting)
            pass
        finally:
            self.controller.ack()

    def on_log_line(self, message: LogLine) -> None:
        self._log(message.step, message.text, message.level)
        if message.notify:
            self.notify(
                message.text, severity="error" if message.level == "error" else "warning", timeout=8, markup=False
            )

    def on_command_done(self, message: CommandDone) -> None:
        try:
            self._command_done(message)
        except NoMatches:
            pass

    def _command_done(self, message: CommandDone) -> None:
        cmd = message.command
        if isinstance(cmd, (SetParam, SetPreset)):
            pane = self.query_one(ParamsPane)
            key = "preset" if isinstance(cmd, SetPreset) else cmd.key
            if self._pending_edit == (cmd.lane, key):  # the edit the open editor is waiting for
                self._pending_edit = None
                if message.error:
                    pane.set_error(message.error)
                elif pane.editing:
                    pane.close_editor()
            elif message.error:
                self._log(self._step(), f"refused: {message.error}", "error")
        elif isinstance(cmd, SetPrompt) and message.error:
            self.query_one(PromptPane).set_error(message.error)

    def on_worker_stopped(self, _message: WorkerStopped) -> None:
        if not self._quitting and self.is_running:
            self._log(self._step(), "engine stopped", "warning")

    # ------------------------------------------------------------------ drawing
    def _step(self) -> int:
        return self.snapshot.steps if self.snapshot else self.start_step

    def _log(self, step: int, text: str, level: str = "info") -> None:
        color = {"error": "red", "warning": "yellow"}.get(level, "")
        body = escape(text)
        if color:
            body = f"[{color}]{body}[/{color}]"
        try:
            self.query_one("#log", RichLog).write(f"[dim]{step:>7}[/dim]  {body}")
        except NoMatches:  # a line that arrives while the app is closing
            pass

    def _draw(self) -> None:
        snap = self.snapshot
        if snap is None:
            return
        room = self.query_one("#frames").size.width // self._columns() - 4  # title room per frame
        for frame, lane in zip(self.query(FrameView), self._slot_lanes()):
            view = snap.lanes.get(lane)
            if view is None:
                continue
            if self.scrub is not None and view.frame_steps:
                i = min(self.scrub, len(view.frame_steps) - 1)
                pixels = self._saved_frame(lane, i)
                title = frame_title(
                    lane,
                    view.spec.preset,
                    view.frame_steps[i],
                    view.frame_sims[i],
                    room,
                    f"saved {i + 1}/{len(view.frame_steps)}",
                )
            else:
                pixels = view.preview
                title = frame_title(lane, view.spec.preset, snap.steps, view.current, room)
            frame.show(lane, pixels, title)
        if self.active in snap.lanes:
            self.query_one(ParamsPane).show(self.active, snap.lanes[self.active].spec)
        sim = self.query_one(SimilarityPane)
        sim.show(snap, self.active, wide=sim.size.width >= 78)
        if self.layers:
            self.query_one(LayersPane).show(self.active, snap.lanes.get(self.active))
        self.query_one(PromptPane).show(snap.prompt)
        self._draw_status()
        if not self.split and self.scrub is None and len(self.lanes) > 1:
            self.call_after_refresh(self._prepare_next_lane)

    def _prepare_next_lane(self) -> None:
        """After the screen is drawn: the cells of the lane `t` shows next, so the toggle is a swap."""
        snap = self.snapshot
        following = self.lanes[(self.lanes.index(self.active) + 1) % len(self.lanes)]
        if snap is not None and following in snap.lanes and not self.split:
            try:
                self.query_one("#frame-0", FrameView).prepare(following, snap.lanes[following].preview)
            except NoMatches:  # the screen is being torn down (quitting)
                pass

    def _slot_lanes(self) -> tuple[str, ...]:
        """The lane each frame slot shows: the active lane's page of up to 4 lanes, or the active one alone."""
        if not self.split:
            return (self.active,)
        page = self.lanes.index(self.active) // PAGE
        return self.lanes[page * PAGE : (page + 1) * PAGE]

    def _columns(self) -> int:
        return 1 if not self.split else min(2, len(self._slot_lanes()))

    def _saved_frame(self, lane: str, i: int):
        """A trajectory frame: host uint8 arrays the worker only ever appends (never a tensor)."""
        frames = self.run_.frames[lane]
        return frames[i] if i < len(frames) else None

    def _draw_status(self) -> None:
        snap = self.snapshot
        if snap is None:
            state, step, rate = "starting", self.start_step, "—"
        else:
            state = "▶ running" if snap.running else ("✖ failed, paused" if snap.failed else "■ paused")
            step = snap.steps
            rate = f"{snap.rate:.1f}" if snap.running else "—"
        view = "|".join(n.upper() for n in self._slot_lanes())
        if self.split and len(self.lanes) > PAGE:
            view += f" (page {self.lanes.index(self.active) // PAGE + 1}/{-(-len(self.lanes) // PAGE)})"
        parts = [
            escape(self.session_name),
            escape(self.model),
            state,
            f"step {step}",
            f"{rate} steps/s",
            f"view {view}",
        ]
        if self.scrub is not None:
            parts.append("scrubbing (] to live)")
        sep = "  ◆ " if self.size.width >= 120 else " │ "
        set_line(self.query_one("#status", Static), "[b]clipterm[/b]" + sep + sep.join(parts), fixed_height=True)

    def _sync_view(self) -> None:
        """Apply active lane / split to the frames and tell the worker (remembered on save)."""
        shown = self._slot_lanes()
        frames = self.query_one("#frames")
        frames.set_class(not self.split, "-single")
        frames.set_class(self.split and len(shown) > 2, "-grid")
        self.query_one("#body").set_class(self.split, "-split")
        for i, frame in enumerate(self.query(FrameView)):
            frame.set_class(i >= len(shown), "-empty")
            frame.set_class(i < len(shown) and shown[i] == self.active, "-active")
        self.controller.view = {"lane": self.active, "split": self.split}
        self._draw()
        self._draw_status()

    def watch_active(self) -> None:
        if self.is_mounted:
            self._sync_view()

    def watch_split(self) -> None:
        if self.is_mounted:
            self._sync_view()

    def watch_layers(self, shown: bool) -> None:
        if self.is_mounted:
            self.query_one(LayersPane).display = shown
            self.controller.submit(ShowLayers(shown))  # the worker adds probe rows to its snapshots
            self._draw()

    async def on_event(self, event: events.Event) -> None:
        """Every key holds the worker's next step back until the screen shows the key's effect, and the
        garbage collector's next full pass until the keys stop coming."""
        if isinstance(event, events.Key) and not self._quitting:
            self.collector.key()
            self.controller.give_way()
            self.call_after_refresh(self.controller.resume)
        await super().on_event(event)

    # ------------------------------------------------------------------ actions
    def _typing(self) -> bool:
        """A text field (or another screen: help, command palette) gets plain keys, not the app."""
        return isinstance(self.focused, Input) or self.screen is not self.screen_stack[0]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "typed" and self._typing():
            return False  # the key is not consumed: it goes on to the text field as text
        if action == "typed" and parameters == ("edit_param",) and not isinstance(self.focused, ParamTable):
            return False  # enter means "edit" on the Parameters table only (and is hidden elsewhere)
        if action == "table_key" and not isinstance(self.focused, ParamTable):
            return False  # elsewhere the key goes on to the focused widget (help, palette, text fields)
        return True

    def action_table_key(self, move: str) -> None:
        """A cursor move on the Parameters table, done by the app as the key arrives. Were it left to the
        table, it would run only after the app had routed later keys: in a burst 'down', 'enter' the
        app-level enter would open the editor on the row *before* the move."""
        getattr(self.query_one(ParamTable), f"action_{move}")()

    async def action_typed(self, action: str) -> None:
        """A plain key's action. Plain keys are app-level priority bindings so that they take effect
        before the next key is routed (a key typed right after 'p' must land in the prompt field)."""
        await self.run_action(action)

    def action_toggle_lane(self) -> None:
        if len(self.lanes) < 2:
            self.notify(f"this run has only lane {self.lanes[0].upper()}", severity="warning")
            return
        self._show_lane(self.lanes[(self.lanes.index(self.active) + 1) % len(self.lanes)])

    def action_jump_lane(self, number: int) -> None:
        """Digits 1-8: show the lane in that position (the order lanes were given in)."""
        if not 1 <= number <= len(self.lanes):
            self.notify(f"this run has {len(self.lanes)} lanes; no lane {number}", severity="warning")
            return
        self._show_lane(self.lanes[number - 1])

    def _show_lane(self, lane: str) -> None:
        pane = self.query_one(ParamsPane)
        if pane.editing:
            pane.close_editor()
        self.active = lane

    def action_toggle_split(self) -> None:
        if len(self.lanes) < 2:
            self.notify(f"this run has only lane {self.lanes[0].upper()}", severity="warning")
            return
        self.split = not self.split

    def action_toggle_layers(self) -> None:
        self.layers = not self.layers

    def action_flip_mode(self) -> None:
        self.controller.submit(FlipPreset(self.active))

    def action_toggle_pause(self) -> None:
        self.controller.submit(Pause())

    def action_step_once(self) -> None:
        if self.snapshot and self.snapshot.running:
            self.notify("pause first (space) to step one at a time")
            return
        self.controller.submit(Step(1))

    def action_save(self) -> None:
        self.controller.submit(Save())

    def action_export(self) -> None:
        lane = self.active
        out = self.run_.path / "exports"
        snap = self.snapshot
        if self.scrub is not None and snap and snap.lanes[lane].frame_steps:  # the saved frame on screen
            self.controller.submit(Export(lane, out, min(self.scrub, len(snap.lanes[lane].frame_steps) - 1)))
            return
        self.controller.submit(Export(lane, out))

    def action_scrub(self, delta: int) -> None:
        snap = self.snapshot
        if snap is None or self.active not in snap.lanes:
            return
        steps = snap.lanes[self.active].frame_steps
        if not steps:
            self.notify("no saved frames yet")
            return
        n = len(steps)
        if self.scrub is None:
            if delta > 0:
                self.notify("already live")
                return
            self.scrub = n - 1 if steps[-1] < snap.steps else max(0, n - 2)
        else:
            self.scrub += delta
            if self.scrub >= n:
                self.scrub = None
            self.scrub = None if self.scrub is None else max(0, self.scrub)
        for frame in self.query(FrameView):
            frame.redraw()
        self._draw()
        self._draw_status()

    def action_focus_prompt(self) -> None:
        self.query_one(PromptPane).focus_input()

    def on_layers_pane_picked(self, event: LayersPane.Picked) -> None:
        """A block chosen in the Layers pane: the units dialog opens on it, waiting for a channel."""
        self.action_edit_units(event.block)

    def action_edit_units(self, picked: int | None = None) -> None:
        """The units dialog for the active lane; what it returns goes to the worker (which checks ranges)."""
        lane, spec = self.active, self._params()
        if spec is None:
            return
        blocks = self.run_.engine.probe.names[1:] if self.run_.engine.probe is not None else []
        self.push_screen(
            UnitsScreen(lane, describe_units(spec), blocks, picked),
            lambda text: None if text is None else self.controller.submit(SetUnits(lane, text)),
        )

    def action_help(self) -> None:
        rows = []
        for k in KEYS:
            if k.key != "enter":  # enter's row below covers both of its meanings
                rows.append((k.display or k.key, k.help))
        rows.extend(EXTRA_HELP)
        self.push_screen(HelpScreen(rows))

    async def action_quit(self) -> None:
        """Save first, then leave; waiting happens off the UI thread."""
        if self._quitting:
            return
        self._quitting = True
        self._log(self._step(), "saving and quitting…")
        self.controller.stop()
        await asyncio.to_thread(self.controller.done.wait, 120)
        self.exit(self._exit_code)

    # ------------------------------------------------------------------ fields
    def _params(self):
        if self.snapshot and self.active in self.snapshot.lanes:
            return self.snapshot.lanes[self.active].spec
        return None

    def action_edit_param(self) -> None:
        """Open the editor on the Parameters row under the cursor. Bound at app level (like the plain
        keys) so the editor has the focus before the next key is routed: a value typed or pasted right
        after enter lands in the field instead of firing '.' (step), 't' (lane) or 'q' (quit)."""
        self.query_one(ParamsPane).edit_cursor_row(self.active)

    def on_param_table_row_selected(self, event: ParamTable.RowSelected) -> None:
        """A mouse click on a row edits it, as enter does."""
        self.query_one(ParamsPane).open_editor(event.key, self.active)

    def on_field_input_left(self, _event: FieldInput.Left) -> None:
        """Escape in the prompt field (the Parameters editor handles its own): back to the table."""
        self.query_one(ParamsPane).focus_table()

    def on_prompt_pane_submitted(self, event: PromptPane.Submitted) -> None:
        pane = self.query_one(PromptPane)
        try:
            parse_prompt(event.text)
        except ClipTermError as e:
            pane.set_error(str(e))
            return
        pane.set_error(None)
        self.controller.submit(SetPrompt(event.text))

    def on_params_pane_edited(self, event: ParamsPane.Edited) -> None:
        pane = self.query_one(ParamsPane)
        key, value, params = event.key, event.value, self._params()
        if params is None:
            return
        try:  # refuse at once, with the same validation the engine applies
            if key == "preset":
                if value not in available():
                    raise ClipTermError(f"unknown preset {value!r}: choose from {', '.join(available())}")
            else:
                params.with_value(key, value)
        except ClipTermError as e:
            pane.set_error(str(e))
            return
        self._pending_edit = (self.active, key)
        if key == "preset":
            self.controller.submit(SetPreset(self.active, value))
        else:
            self.controller.submit(SetParam(self.active, key, value))

    # ------------------------------------------------------------------ themes and palette
    def _theme_changed(self, theme) -> None:
        self.controller.submit(SetTheme(theme.name))
        if self.is_mounted:
            self._log(self._step(), f"theme {theme.name} (remembered in the session)")

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for k in KEYS:
            if k.key in ("t", "ctrl+c"):
                continue
            key = k.display or k.key
            yield SystemCommand(
                f"{k.label}: {k.help.split(' (')[0]}", f"key {key}", lambda a=k.action: self.run_action(a)
            )
        yield SystemCommand(
            "Leave text field", "key esc: back to the Parameters table", lambda: self.query_one(ParamTable).focus()
        )
        yield SystemCommand(
            "Edit parameters", "focus the Parameters table (enter edits)", lambda: self.query_one(ParamTable).focus()
        )
        for name in sorted(self._themes):
            yield SystemCommand(
                f"Theme: {name}",
                "switch to this theme (remembered in the session)",
                lambda n=name: setattr(self, "theme", n),
            )
