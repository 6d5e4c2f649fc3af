"""The units dialog (`u`): edit the active lane's unit objective, or pick a block and a channel for it.

The lane's units are edited as text in the `--unit` syntax, several joined by ';' (`2:5; 1:3@4:-0.5`;
an empty field removes them, which a lane of units alone refuses). Below, the blocks are listed as
the Layers pane names them, numbered from 0; choosing one and typing a channel adds `BLOCK:CHANNEL`
to the field. Enter on the field sends it to the lane (the worker checks the ranges against the
model; a refusal comes back as a toast that gives the valid ranges); escape leaves unchanged.
The text is checked here first with the same parser the worker uses, so a typo never leaves the
dialog. No tensors here: the block names come from the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList

from clipterm.errors import ClipTermError
from clipterm.text import printable
from clipterm.unitspec import parse_units


def add_unit(text: str, block: int, channel: str) -> str:
    """`text` with `BLOCK:CHANNEL` appended as one more unit (';'-joined)."""
    unit = f"{block}:{channel.strip()}"
    return f"{text.strip()}; {unit}" if text.strip() else unit


class UnitsScreen(ModalScreen[str | None]):
    """Dismissed with the lane's new units text (enter), or None (escape)."""

    DEFAULT_CSS = """
    UnitsScreen { align: center middle; }
    UnitsScreen > Vertical { width: 72; height: auto; max-height: 90%; border: round $accent; padding: 0 1; }
    UnitsScreen #units-blocks { height: auto; max-height: 10; }
    UnitsScreen #units-error { color: $error; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, lane: str, units: str, blocks: Sequence[str], picked: int | None = None) -> None:
        super().__init__()
        self.lane, self.units, self.blocks = lane, units, list(blocks)
        self.picked = picked  # a block chosen in the Layers pane: the dialog opens on its channel field

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Units of lane {self.lane.upper()}: BLOCK:CHANNEL[@POS][:WEIGHT] or text:A - B, ';' between")
            yield Input(self.units, id="units-text", placeholder="e.g. 2:5; 2:7:-0.5")
            yield Label("", id="units-error")
            yield Label("pick a block (numbered as in the Layers pane), type a channel, enter adds it:")
            yield OptionList(*[f"{k}  {printable(name)}" for k, name in enumerate(self.blocks)], id="units-blocks")
            yield Input("", id="units-channel", placeholder="channel (enter adds BLOCK:CHANNEL)")

    def on_mount(self) -> None:
        if self.picked is not None and 0 <= self.picked < len(self.blocks):
            self.query_one(OptionList).highlighted = self.picked
            self.query_one("#units-channel", Input).focus()
            return
        self.query_one("#units-text", Input).focus()
        if self.blocks:
            self.query_one(OptionList).highlighted = 0

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text_field = self.query_one("#units-text", Input)
        if event.input.id == "units-channel":
            picked = self.query_one(OptionList).highlighted
            if picked is None or not event.value.strip().isdigit():
                self._error("choose a block above and type a channel number")
                return
            text_field.value = add_unit(text_field.value, picked, event.value)
            event.input.value = ""
            text_field.focus()
            self._error("")
            return
        try:
            parse_units(event.value)
        except ClipTermError as e:
            self._error(str(e))
            return
        self.dismiss(event.value.strip())

    def on_option_list_option_selected(self, _event: OptionList.OptionSelected) -> None:
        self.query_one("#units-channel", Input).focus()

    def _error(self, text: str) -> None:
        self.query_one("#units-error", Label).update(printable(text))

    def action_cancel(self) -> None:
        self.dismiss(None)
