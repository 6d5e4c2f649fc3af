"""Frame widgets: textual-image's, with a faster half-block path.

textual-image's half-block renderable builds every cell's colours through Rich one pixel at a time
and is rebuilt on every repaint; on a busy CPU that cost tens of milliseconds per repaint and
delayed key presses. `FastHalfcellImage` is the same textual-image widget (same sizing, same
"▀" cells, same colours) whose renderable makes the segments from a colour table and caches them
per size, and which repaints without a relayout when a new frame of the same size arrives.
"""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage
from rich.color import Color, ColorType
from rich.color_triplet import ColorTriplet
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style
from textual_image._terminal import get_cell_size
from textual_image.renderable.halfcell import Image as HalfcellRenderable
from textual_image.widget._base import Image as BaseImage

_HEX = [f"{i:02x}" for i in range(256)]


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
    for up_row, lo_row in zip(top, bottom):
        for (r1, g1, b1), (r2, g2, b2) in zip(up_row, lo_row):
            out.append(Segment("▀", Style(color=_color(r1, g1, b1, colors), bgcolor=_color(r2, g2, b2, colors))))
        out.append(Segment("\n"))
    return out


class FastHalfcell(HalfcellRenderable):
    """textual-image's half-block renderable with table-made colours and a per-size cache."""

    def __init__(self, image, width=None, height=None) -> None:
        super().__init__(image, width, height)
        self._cache: dict[tuple[int, int], list[Segment]] = {}

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width, height = self._render_size.get_cell_size(options.max_width, options.max_height, get_cell_size())
        segs = self._cache.get((width, height))
        if segs is None:
            segs = self._cache[(width, height)] = halfcell_segments(
                self._image_data.scaled(width, height * 2).pil_image)
        yield from segs


class FastHalfcellImage(BaseImage, Renderable=FastHalfcell):
    """Half-block frame widget: keeps its renderable while image and size stay, no relayout per frame."""

    _cached_for: tuple | None = None

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
        BaseImage.image.fset(self, value)  # type: ignore[attr-defined]

    def render(self):
        if not self._image:
            return ""
        size = self._get_styled_size()
        key = (id(self._image), size)
        if self._renderable is None or self._cached_for != key:
            self._renderable = self._Renderable(self._image, *size)
            self._cached_for = key
        return self._renderable
