"""The Parameters table: a few dozen rows of part, parameter, value and range, with a row cursor.

Textual's DataTable re-renders every row after any cell changes (its line cache is keyed by an
update counter), and toggling lanes changes the values column: on a busy 2-core box that was the
largest single cost between the key and the screen. Here each row's line is cached by its own
text, so a toggle re-renders only the rows whose text changed, and a row that has looked the same
before (the other lane's value) costs a dictionary lookup.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

Row = tuple[str, str, str, str]  # part, parameter, value, range
WIDTHS = (8, 15, 15)  # part, parameter and value columns at least; range takes the rest
MAX_VALUE = 24  # the value column grows to its longest value up to this (a preset's name, 18)
MIN_RANGE = 10  # ... while the pane leaves the range column this many cells
HEADER: Row = ("part", "parameter", "value", "range")


class ParamTable(ScrollView, can_focus=True):
    """Rows keyed by parameter; `cursor_row` is the row enter edits (enter is an app-level key)."""

    COMPONENT_CLASSES = {"param-table--header", "param-table--cursor"}
    DEFAULT_CSS = """
    ParamTable { background: $surface; }
    ParamTable > .param-table--header { text-style: bold; background: $panel; }
    ParamTable > .param-table--cursor { background: $primary 30%; }
    ParamTable:focus > .param-table--cursor { background: $accent 40%; text-style: bold; }
    """
    BINDINGS = [Binding("up", "cursor_up", show=False), Binding("down", "cursor_down", show=False)]

    class RowSelected(Message):
        """A row was clicked (the screen opens the editor on it, as enter does)."""

        def __init__(self, table: ParamTable, key: str) -> None:
            super().__init__()
            self.table, self.key = table, key

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.keys: list[str] = []
        self.cells: dict[str, Row] = {}
        self.cursor_row = 0
        self.widths = WIDTHS
        self._lines: dict[tuple, Strip] = {}  # (row text, style, widths, width) -> its line

    # ------------------------------------------------------------------ content
    def set_rows(self, rows: list[Row]) -> None:
        """Replace every row (keyed by its parameter); the cursor stays on the same row number."""
        self.keys = [r[1] for r in rows]
        self.cells = {r[1]: r for r in rows}
        self.cursor_row = max(0, min(self.cursor_row, len(rows) - 1))
        self.virtual_size = Size(1, len(rows) + 1)  # rows scroll; the width is always the pane's
        self._fit_values()
        self.refresh()

    def set_value(self, key: str, value: str) -> None:
        """The value cell of one row; only that row is drawn again (all of them if its column widens)."""
        part, name, old, rng = self.cells[key]
        if old != value:
            self.cells[key] = (part, name, value, rng)
            if self._fit_values():
                self.refresh()
            else:
                self._refresh_row(self.keys.index(key))

    def _fit_values(self) -> bool:
        """Widen the value column to the longest value (up to MAX_VALUE), so a preset's name is not
        cut; the range column gives way. Whether the widths changed."""
        longest = max((len(c[2]) + 1 for c in self.cells.values()), default=0)
        widths = (*WIDTHS[:2], max(WIDTHS[2], min(MAX_VALUE, longest)))
        changed, self.widths = widths != self.widths, widths
        return changed

    def get_value(self, key: str) -> str:
        return self.cells[key][2]

    @property
    def cursor_key(self) -> str:
        return self.keys[self.cursor_row]

    # ------------------------------------------------------------------ drawing
    def _refresh_row(self, row: int) -> None:
        y = row + 1 - round(self.scroll_offset.y)
        if 1 <= y < self.size.height:
            self.refresh_line(y)

    def _line(self, cells: Row, style: Style) -> Strip:
        width = self.size.width
        key = (cells, style, self.widths, width)
        strip = self._lines.get(key)
        if strip is None:
            if len(self._lines) > 512:  # rows x looks x widths seen lately; far more than ever shown
                self._lines.clear()
            room = width - 1 - sum(WIDTHS[:2]) - MIN_RANGE  # a narrow pane keeps some of the range column
            widths = (*self.widths[:2], max(WIDTHS[2], min(self.widths[2], room)))
            texts = [c.ljust(w - 1)[: w - 1] + " " for c, w in zip(cells, widths)] + [cells[3]]
            text = " " + "".join(texts)
            strip = self._lines[key] = Strip([Segment(text[:width].ljust(width), style)], width)
        return strip

    def render_line(self, y: int) -> Strip:
        base = self.rich_style
        if y == 0:  # the header stays put while rows scroll under it
            return self._line(HEADER, base + self.get_component_rich_style("param-table--header"))
        row = y - 1 + round(self.scroll_offset.y)
        if not 0 <= row < len(self.keys):
            return Strip.blank(self.size.width, base)
        style = base + self.get_component_rich_style("param-table--cursor") if row == self.cursor_row else base
        return self._line(self.cells[self.keys[row]], style)

    def watch_has_focus(self, _focused: bool) -> None:
        self.refresh()  # the cursor row's look depends on focus

    # ------------------------------------------------------------------ the cursor
    def move_cursor(self, row: int) -> None:
        if not self.keys:
            return
        old, self.cursor_row = self.cursor_row, max(0, min(row, len(self.keys) - 1))
        if old != self.cursor_row:
            self._refresh_row(old)
            self._refresh_row(self.cursor_row)
        top = round(self.scroll_offset.y)
        rows_shown = max(1, self.size.height - 1)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False)
        elif self.cursor_row >= top + rows_shown:
            self.scroll_to(y=self.cursor_row - rows_shown + 1, animate=False)

    def action_cursor_up(self) -> None:
        self.move_cursor(self.cursor_row - 1)

    def action_cursor_down(self) -> None:
        self.move_cursor(self.cursor_row + 1)

    def action_page_up(self) -> None:
        self.move_cursor(self.cursor_row - max(1, self.size.height - 2))

    def action_page_down(self) -> None:
        self.move_cursor(self.cursor_row + max(1, self.size.height - 2))

    def action_scroll_home(self) -> None:
        self.move_cursor(0)

    def action_scroll_end(self) -> None:
        self.move_cursor(len(self.keys) - 1)

    action_scroll_top = action_scroll_home
    action_scroll_bottom = action_scroll_end

    def on_click(self, event: Click) -> None:
        row = event.y - 1 + round(self.scroll_offset.y)
        if event.y >= 1 and 0 <= row < len(self.keys):
            self.move_cursor(row)
            self.post_message(self.RowSelected(self, self.keys[row]))
