"""Frame widgets: textual-image's, with a faster half-block path.

textual-image's half-block renderable builds every cell's colours through Rich one pixel at a time
and is rebuilt on every repaint; on a busy CPU that cost tens of milliseconds per repaint and
delayed key presses. `FastHalfcellImage` is the same textual-image widget (same sizing, same
"▀" cells, same colours) whose renderable makes the segments from a colour table and caches them
per size, and which repaints without a relayout when a new frame of the same size arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from PIL import Image as PILImage
from rich.color import Color, ColorType
from rich.color_triplet import ColorTriplet
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

# textual-image has no public API for the terminal's cell size in pixels (its renderables call this
# themselves). It and the attributes FastHalfcell/FastHalfcellImage reuse (_render_size,
# _image_data, _image, _renderable, _get_styled_size, _Renderable) are pinned in pyproject.toml to
# the tested range, and tests/test_textual_image_api.py fails when any of them moves.
from textual_image._terminal import get_cell_size
from textual_image.renderable.halfcell import Image as HalfcellRenderable
from textual_image.widget import HalfcellImage

from clipterm.lanespec import MAX_LANES

T = TypeVar("T")
_HEX = [f"{i:02x}" for i in range(256)]
KEEP = MAX_LANES  # pictures remembered per frame: one per lane, so toggling back reuses its cells


def keep_recent(cache: dict[int, tuple], obj: Any, make: Callable[[], T], tag: Any = None, keep: int = KEEP) -> T:
    """What was made for `obj` (by identity, and for the same `tag`) in the last `keep` calls, or
    make it now. The cache holds `obj` beside its value, so no other object can take over its id."""
    hit = cache.pop(id(obj), None)
    if hit is None or hit[0] is not obj or hit[1] != tag:
        hit = (obj, tag, make())
    cache[id(obj)] = hit  # newest last
    while len(cache) > keep:
        cache.pop(next(iter(cache)))
    return hit[2]


def _color(r: int, g: int, b: int, cache: dict[int, Color]) -> Color:
    key = (r << 16) | (g << 8) | b
    c = cache.get(key)
    if c is None:
        c = cache[key] = Color(f"#{_HEX[r]}{_HEX[g]}{_HEX[b]}", ColorType.TRUECOLOR, triplet=ColorTriplet(r, g, b))
    return c


def halfcell_segments(img: PILImage.Image) -> list[Segment]:
    """Rows of '▀' cells: foreground = upper pixel, background = lower pixel (as textual-image draws)."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if arr.shape[0] % 2:
        arr = np.concatenate([arr, arr[-1:]], axis=0)
    top, bottom = arr[0::2].tolist(), arr[1::2].tolist()
    colors: dict[int, Color] = {}
    out: list[Segment] = []
    style = Style.from_color  # Rich's fast path for a colour-only style (a third faster than Style())
    for up_row, lo_row in zip(top, bottom):
        for (r1, g1, b1), (r2, g2, b2) in zip(up_row, lo_row):
            out.append(Segment("▀", style(_color(r1, g1, b1, colors), _color(r2, g2, b2, colors))))
        out.append(Segment("\n"))
    return out


class FastHalfcell(HalfcellRenderable):
    """textual-image's half-block renderable with table-made colours and a per-size cache."""

    def __init__(self, image, width=None, height=None) -> None:
        super().__init__(image, width, height)
        self._cache: dict[tuple[int, int], list[Segment]] = {}
        self._rows: dict[tuple[int, int], list[Strip]] = {}

    def _segments(self, max_width: int, max_height: int | None) -> tuple[int, list[Segment]]:
        width, height = self._render_size.get_cell_size(max_width, max_height, get_cell_size())
        segs = self._cache.get((width, height))
        if segs is None:
            segs = self._cache[(width, height)] = halfcell_segments(
                self._image_data.scaled(width, height * 2).pil_image
            )
        return width, segs

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self._segments(options.max_width, options.max_height)[1]

    def strips(self, max_width: int, max_height: int) -> list[Strip]:
        """The same cells as Textual strips, one per row, for a widget's render_line."""
        rows = self._rows.get((max_width, max_height))
        if rows is None:
            width, segs = self._segments(max_width, max_height)
            rows, row = [], []
            for seg in segs:
                if seg.text == "\n":
                    rows.append(Strip(row, width))
                    row = []
                else:
                    row.append(seg)
            self._rows[(max_width, max_height)] = rows
        return rows


class FastHalfcellImage(HalfcellImage, Renderable=FastHalfcell):
    """Half-block frame widget: no relayout per frame, and the last two pictures' renderables kept.

    One frame slot shows lane A or lane B in turn, so toggling back to a lane whose canvas has not
    changed (paused, scrubbing) reuses its cells instead of rebuilding them.
    """

    def __init__(self, *args, **kwargs) -> None:
        self._recent: dict[int, tuple] = {}  # the last KEEP pictures' renderables (keep_recent)
        super().__init__(*args, **kwargs)

    @property
    def image(self):  # type: ignore[override]
        return self._image

    @image.setter
    def image(self, value) -> None:
        old = getattr(self, "_image", None)
        if isinstance(value, PILImage.Image) and isinstance(old, PILImage.Image) and value.size == old.size:
            self._image = value  # same size: same layout, only the cells change
            self._renderable = None
            self.refresh()
            return
        HalfcellImage.image.fset(self, value)  # type: ignore[attr-defined]

    def prepare(self, image: PILImage.Image) -> None:
        """Make a picture's cells now, while nothing waits for them (the lane a toggle would show
        next), so the toggle itself only swaps ready-made rows. Same-size pictures only."""
        if not isinstance(self._image, PILImage.Image) or image.size != self._image.size or not self.size.area:
            return  # nothing shown yet, another size, or not laid out (no cells to make)
        size = self._get_styled_size()
        picture = keep_recent(self._recent, image, lambda: self._Renderable(image, *size), size)
        picture.strips(self.size.width, self.size.height)
        shown = self._recent.pop(id(self._image), None)
        if shown is not None:
            self._recent[id(self._image)] = shown  # the picture on screen stays the newest

    @property
    def cached(self) -> int:
        """How many pictures' cells are kept (the one on screen included)."""
        return len(self._recent)

    def forget(self, image: PILImage.Image) -> None:
        """Drop a picture's cells: its lane has a newer picture (which, if the old one is on screen, is
        shown next; were the old one drawn again first, its cells would simply be made again)."""
        self._recent.pop(id(image), None)

    def render(self):
        if not self._image:
            return ""
        size = self._get_styled_size()  # a new size (resize) makes a new renderable
        self._renderable = keep_recent(self._recent, self._image, lambda: self._Renderable(self._image, *size), size)
        return self._renderable

    def render_line(self, y: int) -> Strip:
        """A row straight from the cached cells. Textual's default path re-renders the picture through
        Rich and merges the widget's style into each of its thousands of cells, which changes
        nothing here (every cell sets both its colours) but cost most of a frame's drawing time."""
        picture = self.render()
        rows = picture.strips(self.size.width, self.size.height) if isinstance(picture, FastHalfcell) else []
        return rows[y] if 0 <= y < len(rows) else Strip.blank(self.size.width, self.visual_style.rich_style)
