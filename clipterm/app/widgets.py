"""The panes of the app. They only draw what a Snapshot says; none of them touches the engine."""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image as PILImage
from rich.markup import escape
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import DataTable, Input, Label, Sparkline, Static

from clipterm.app.controller import LaneView, Snapshot, fmt_value
from clipterm.app.paramtable import ParamTable
from clipterm.app.render import FastHalfcellImage
from clipterm.lanespec import LaneSpec
from clipterm.parts.base import Rule
from clipterm.presets import available


def fmt_sim(v: float | None, digits: int = 4) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def short_sim(v: float | None) -> str:
    """Three decimals without the leading zero (0.951 -> .951), for narrow panes."""
    s = fmt_sim(v, 3)
    return s.replace("0.", ".", 1) if s.startswith(("0.", "-0.")) else s


def rule_range(rule: Rule) -> str:
    """What a setting accepts, short enough for the table's third column."""
    if rule.kind is bool:
        return "on/off"
    if rule.kind is str:
        return "/".join(rule.choices)
    if rule.kind == "names":
        return "names+…"
    return f"{rule.low:g}…{rule.high:g}"


def param_rows(spec: LaneSpec) -> list[tuple[str, str, str]]:
    """(row key, part, range) of the Parameters table for a lane: its preset, then every live setting."""
    rows = [("preset", "lane", f"{len(available())} presets")]
    return rows + [(key, part, rule_range(rule)) for key, part, rule in spec.live_keys()]


@functools.cache
def key_actions(cls: type) -> dict[str, str]:
    """key -> action of a widget class's BINDINGS, a subclass's binding winning over its bases'."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        for b in klass.__dict__.get("BINDINGS", ()):
            key, action = (b.key, b.action) if isinstance(b, Binding) else (b[0], b[1])
            out.update({k.strip(): action for k in key.split(",")})
    return out


class FieldInput(Input):
    """A one-line text field; escape leaves it (focus goes back to the Parameters table).

    Its editing keys (backspace, arrows, home, ctrl+u, enter...) run here, in the order keys arrive.
    Textual runs a widget's bindings only after the key has bubbled up to the app, while it inserts
    a character at once: in a burst (a paste, tmux send-keys, a fast typist) "backspace x4, 0.015"
    typed the digits first and then deleted them.
    """

    BINDINGS = [Binding("escape", "leave", "Leave field", key_display="esc")]

    async def on_key(self, event: events.Key) -> None:
        actions = key_actions(type(self))
        action = next((actions[k] for k in (event.key, *event.aliases) if k in actions), None)
        if action is not None:
            event.stop()
            event.prevent_default()  # neither Input's own handler nor the bubbled binding runs it again
            await self.run_action(action)

    def action_leave(self) -> None:
        self.post_message(self.Left(self))

    class Left(Message):
        """The user pressed escape in this field."""

        def __init__(self, field: Input) -> None:
            super().__init__()
            self.field = field


class PromptInput(FieldInput):
    BINDINGS = [Binding("enter", "submit", "Apply", key_display="⏎")]


class ParamEditor(FieldInput):
    BINDINGS = [Binding("enter", "submit", "Apply", key_display="⏎")]


class PromptPane(Vertical):
    """The prompt field and the reason a prompt was refused.

    Enter posts `PromptPane.Submitted`, so the screen learns the text from the message and never
    reads the field; the pane alone decides when the run's prompt may overwrite what is typed.
    """

    class Submitted(Message):
        """The user applied this prompt text (enter in the field); the screen validates and queues it."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, prompt: str) -> None:
        super().__init__(id="prompt-pane")
        self.border_title = "Prompt"
        self.prompt = prompt

    def compose(self) -> ComposeResult:
        yield PromptInput(
            self.prompt,
            id="prompt-input",
            compact=True,
            placeholder="a prompt; terms joined by | each with optional :weight",
        )
        yield Static("", id="prompt-error")

    def on_mount(self) -> None:
        self.query_one(PromptInput).cursor_position = 0  # show the start of a long prompt

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Submitted(event.value))

    def show(self, prompt: str) -> None:
        """Show the run's prompt, unless the user is typing in the field or a refused edit waits there.

        A refused edit stays with its reason until it is fixed (not Textual's own "-invalid" class:
        Input clears that on blur, and the next snapshot would overwrite the text).
        """
        field = self.query_one(PromptInput)
        if not field.has_focus and field.value != prompt and not field.has_class("-refused"):
            field.value = prompt

    def focus_input(self) -> None:
        self.screen.set_focus(self.query_one(PromptInput))  # at once: the next typed key is text

    def set_error(self, reason: str | None) -> None:
        err = self.query_one("#prompt-error", Static)
        err.update(f"refused: {escape(reason)}" if reason else "")
        err.display = bool(reason)
        self.query_one(PromptInput).set_class(bool(reason), "-refused")


def set_line(widget: Static, text: str | Text, fixed_height: bool = False) -> None:
    """Update a Static only when its text changed, and relayout only when its length did.

    Static.update relayouts by default, and a relayout repaints the whole screen: done for the status
    line and the similarity numbers on every snapshot, that cost tens of milliseconds a frame and
    delayed key presses. Same-length text wraps to the same lines; a fixed-height line never needs it.
    """
    old, new = str(widget.content), str(text)
    if old != new:
        widget.update(text, layout=not fixed_height and len(old) != len(new))


class FrameView(Vertical):
    """A frame slot: one lane's canvas (textual-image widget), lane, preset, step and similarity in its title.

    Slots, not lanes, own the widgets: in the single view slot 0 shows whichever lane is active, so
    toggling lanes swaps the picture in place (a repaint) instead of hiding one widget and showing
    another (a relayout and a full-screen repaint). In the split view slot i shows lane i.
    """

    def __init__(self, slot: int, image_cls: type[Widget]) -> None:
        super().__init__(id=f"frame-{slot}", classes="frame")
        self.slot = slot
        self.lane: str | None = None  # the lane shown now
        self.image_cls = image_cls
        self.border_title = "Frame"
        self._shown: object = None
        self._pictures: dict[str, tuple[np.ndarray, PILImage.Image]] = {}  # lane -> its newest canvas, as PIL
        self.frames_drawn = 0

    def compose(self) -> ComposeResult:
        yield self.image_cls(id=f"image-{self.slot}")

    def redraw(self) -> None:
        """Draw the next picture given even if it is the one shown now (scrubbing swaps sources)."""
        self._shown = None

    def _picture(self, lane: str, pixels: np.ndarray) -> PILImage.Image:
        """The lane's canvas as a PIL image: the same object while the canvas is the same (so the image
        widget reuses its cells when a lane comes back), and only the newest per lane. The image
        widget forgets an older picture's cells at once: cells are ~10,000 objects a picture that
        every full garbage collection walks, and stale ones made those collections slow keys down."""
        kept = self._pictures.get(lane)
        if kept is not None and kept[0] is pixels:
            return kept[1]
        picture = PILImage.fromarray(pixels)
        self._pictures[lane] = (pixels, picture)
        image = self.query_one(f"#image-{self.slot}")
        if kept is not None and isinstance(image, FastHalfcellImage):
            image.forget(kept[1])
        return picture

    def prepare(self, lane: str, pixels: np.ndarray | None) -> None:
        """Make another lane's picture ready to show (see FastHalfcellImage.prepare)."""
        image = self.query_one(f"#image-{self.slot}")
        if pixels is not None and isinstance(image, FastHalfcellImage):
            image.prepare(self._picture(lane, pixels))

    def show(self, lane: str, pixels: np.ndarray | None, title: str) -> None:
        self.border_title = title
        image = self.query_one(f"#image-{self.slot}")
        if lane != self.lane:
            self.lane, self._shown = lane, None
            if pixels is None and image.image is not None:
                image.image = None  # never another lane's picture under this lane's title
        if pixels is None or pixels is self._shown:
            return
        self._shown = pixels
        # one half-block cell per canvas pixel at most: more cells add no detail, only drawing work
        image.styles.max_width, image.styles.max_height = pixels.shape[1], (pixels.shape[0] + 1) // 2
        image.image = self._picture(lane, pixels)
        self.frames_drawn += 1


class ParamsPane(Vertical):
    """The active lane's preset and live parameters; enter edits the row under the cursor.

    Enter in the editor posts `ParamsPane.Edited`, so the screen gets the key and the typed value from
    the message instead of reading the editor; escape there closes the editor within the pane.
    """

    class Edited(Message):
        """The user applied `value` (as typed, stripped) to parameter `key` of the shown lane."""

        def __init__(self, key: str, value: str) -> None:
            super().__init__()
            self.key, self.value = key, value

    def __init__(self) -> None:
        super().__init__(id="params")
        self.border_title = "Parameters"
        self.spec: LaneSpec | None = None
        self.rows: list[str] = []
        self.editing: str | None = None

    def compose(self) -> ComposeResult:
        yield ParamTable(id="param-table")
        with Horizontal(id="param-edit-row"):
            yield Label("", id="param-edit-label")
            yield ParamEditor(id="param-editor", compact=True)
        yield Static("", id="param-error")

    def show(self, lane: str, spec: LaneSpec) -> None:
        """The lane's parts and live settings; rows are rebuilt only when the parts change."""
        self.border_title = f"Parameters · lane {lane.upper()} · {spec.preset} · {spec.param.name}"
        if spec == self.spec:
            return
        self.spec = spec
        table = self.query_one(ParamTable)
        rows = param_rows(spec)
        if [r[0] for r in rows] != self.rows:
            table.set_rows([(part, key, fmt_value(self.value(key)), rng) for key, part, rng in rows])
            self.rows = [r[0] for r in rows]
        for key in self.rows:
            table.set_value(key, fmt_value(self.value(key)))

    def value(self, key: str) -> object:
        assert self.spec is not None
        return self.spec.preset if key == "preset" else self.spec.value(key)

    def edit_cursor_row(self, lane: str) -> None:
        """Open the editor on the row under the table's cursor."""
        self.open_editor(self.query_one(ParamTable).cursor_key, lane)

    def focus_table(self) -> None:
        self.screen.set_focus(self.query_one(ParamTable))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.editing is not None:
            self.post_message(self.Edited(self.editing, event.value.strip()))

    def on_field_input_left(self, event: FieldInput.Left) -> None:
        event.stop()
        self.close_editor()

    def open_editor(self, key: str, lane: str) -> None:
        self.editing = key
        self.query_one("#param-edit-label", Label).update(f"{key} (lane {lane.upper()}) = ")
        editor = self.query_one(ParamEditor)
        editor.value = fmt_value(self.value(key)) if self.spec else ""
        self.set_error(None)
        self.add_class("-editing")
        self.screen.set_focus(editor)  # at once, so keys typed right after land in the field

    def close_editor(self) -> None:
        self.editing = None
        self.remove_class("-editing")
        self.set_error(None)
        self.screen.set_focus(self.query_one(ParamTable))

    def set_error(self, reason: str | None) -> None:
        err = self.query_one("#param-error", Static)
        err.update(f"refused: {escape(reason)}" if reason else "")
        err.display = bool(reason)
        self.query_one(ParamEditor).set_class(bool(reason), "-refused")


class LaneSimilarity(Vertical):
    """Sparkline of one lane's raw similarity plus its numbers."""

    def __init__(self, lane: str) -> None:
        super().__init__(id=f"sim-{lane}", classes="lane-sim")
        self.lane = lane
        self.active = False

    def mark(self, active: bool) -> None:
        """The active lane's letter in reverse video. Not a CSS class: a class change restyles the
        pane's whole subtree, ~5 ms of every lane toggle on a busy 2-core box."""
        if active != self.active:
            self.active = active
            self.query_one(".spark-label", Label).update(
                Text(self.lane.upper(), style="bold reverse" if active else ""), layout=False
            )

    def compose(self) -> ComposeResult:
        with Horizontal(classes="spark-row"):
            yield Label(self.lane.upper(), classes="spark-label")
            yield Sparkline([], id=f"spark-{self.lane}")
        yield Static("", id=f"numbers-{self.lane}", classes="numbers")

    def show(self, view: LaneView, wide: bool) -> None:
        data = [float(x) for x in view.sims if math.isfinite(float(x))]
        self.query_one(Sparkline).data = data
        j = view.judge
        if wide:
            judge = f"judge {j.judge} #{j.rank}/{j.of}" if j else "judge —"
            text = (  # single spaces: with a negative robust and a two-digit rank it is 78 columns
                f"now {fmt_sim(view.current)} best {fmt_sim(view.best)} robust {fmt_sim(view.robust)} "
                f"verified {fmt_sim(view.verified)} {judge}"
            )
        else:
            judge = f"{j.judge} #{j.rank}" if j else "#—"  # the judge and its rank of the prompt
            text = f"now {short_sim(view.current)} best {short_sim(view.best)} rob {short_sim(view.robust)} {judge}"
        set_line(self.query_one(f"#numbers-{self.lane}", Static), text)


class SimilarityPane(Vertical):
    def __init__(self, lanes: tuple[str, ...]) -> None:
        super().__init__(id="similarity")
        self.border_title = "Similarity"
        self.lanes = lanes

    def compose(self) -> ComposeResult:
        for lane in self.lanes:
            yield LaneSimilarity(lane)

    def show(self, snap: Snapshot, active: str, wide: bool) -> None:
        for lane in self.lanes:
            pane = self.query_one(f"#sim-{lane}", LaneSimilarity)
            pane.mark(lane == active)
            if lane in snap.lanes:
                pane.show(snap.lanes[lane], wide)


def fmt_stat(v: float) -> str:
    return "—" if not math.isfinite(v) else f"{v:.3g}"


TREND_GLYPHS = "▁▂▃▄▅▆▇█"


def trend_text(values: tuple[float, ...]) -> str:
    """One glyph per value, scaled between the row's own min and max (· where a value is missing)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "·" * len(values)
    lo, hi = min(finite), max(finite)
    top = len(TREND_GLYPHS) - 1
    out = []
    for v in values:
        if not math.isfinite(v):
            out.append("·")
        elif hi <= lo:
            out.append(TREND_GLYPHS[top // 2])
        else:
            out.append(TREND_GLYPHS[round((v - lo) / (hi - lo) * top)])
    return "".join(out)


class LayersPane(Vertical):
    """The active lane's newest layer-probe record: one row per layer (canvas, then each block)."""

    # short labels so the trend still fits the side column of the split view; the title says what they are
    COLUMNS = (
        ("layer", "name"),
        ("mean", "act_mean"),
        ("std", "act_std"),
        ("norm", "act_norm"),
        ("grad", "grad_norm"),
        ("grad trend", "trend"),
    )

    class Picked(Message):
        """Enter (or a click) on a block's row: open the units dialog on that block (numbered from 0)."""

        def __init__(self, block: int) -> None:
            super().__init__()
            self.block = block

    def __init__(self) -> None:
        super().__init__(id="layers")
        self.border_title = "Layers · activation mean, std, norm · gradient norm"
        self.display = False
        self._names: tuple[str, ...] = ()

    def compose(self) -> ComposeResult:
        table = DataTable(id="layer-table", cursor_type="row", zebra_stripes=False)
        for label, key in self.COLUMNS:
            table.add_column(label, key=key)
        yield table

    def show(self, lane: str, view: LaneView | None) -> None:
        rows = view.layers if view is not None and view.layers is not None else ()
        step = view.layers_step if view is not None else None
        self.border_subtitle = (
            f"lane {lane.upper()} · step {step}" if step is not None else f"lane {lane.upper()} · no probe record yet"
        )
        trends = view.layers_trend if view is not None and view.layers_trend is not None else ()
        cells = [
            (r[0], *(fmt_stat(v) for v in r[1:]), trend_text(trends[i]) if i < len(trends) else "")
            for i, r in enumerate(rows)
        ]
        table = self.query_one("#layer-table", DataTable)
        names = tuple(r[0] for r in rows)
        if names != self._names:
            table.clear()
            for i, row in enumerate(cells):
                table.add_row(*row, key=str(i))
            self._names = names
            return
        for i, row in enumerate(cells):
            for (_, key), text in zip(self.COLUMNS[1:], row[1:], strict=True):
                table.update_cell(str(i), key, text)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        row = int(str(event.row_key.value))
        if row >= 1:  # row 0 is the canvas, not a block
            self.post_message(self.Picked(row - 1))

    def values(self) -> list[tuple[str, ...]]:
        """What the table shows, row by row (for tests)."""
        table = self.query_one("#layer-table", DataTable)
        return [tuple(str(c) for c in table.get_row(str(i))) for i in range(table.row_count)]


class HelpScreen(ModalScreen[None]):
    """Every key, what it does, and where else to find it."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close help")]

    def __init__(self, rows: list[tuple[str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        table = DataTable(id="help-table", cursor_type="none", show_header=True)
        table.add_column("key")
        table.add_column("action")
        for key, desc in self.rows:
            table.add_row(key, desc)
        with Vertical(id="help-box"):
            yield table
            yield Static("every action is also in the command palette (ctrl+p) · esc closes", id="help-hint")

    def on_mount(self) -> None:
        self.query_one("#help-box").border_title = "Keys"
