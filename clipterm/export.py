"""Exports of a saved session: the canvas as PNG, the trajectory as a GIF, a contact sheet of the lanes.

Everything is read from the session on disk (validated by session.load), so exports work on a
session another clipterm is still running, and never need the model. Upscaling is NEAREST so
every model pixel stays a crisp square: the point is to see what the model made, not to smooth it.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from clipterm import session as sess
from clipterm.errors import ClipTermError
from clipterm.outputs import check_output_file, write_file
from clipterm.text import printable

FORMATS = ("png", "gif", "sheet")
PNG_TARGET = 512  # the upscaled PNG copy is at least this wide
GIF_TARGET = 256
SHEET_TARGET = 256  # each lane's panel on the contact sheet
GIF_FRAME_MS = 100
MARGIN = 12
FONT_SIZE = 14
LINE = 18  # text line height on the sheet
HEADER_LINES = 2
FOOTER_LINES = 4
BG = (24, 24, 28)
FG = (235, 235, 235)
DIM = (160, 160, 170)


def auto_scale(size: int, target: int) -> int:
    """Smallest whole factor that makes `size` at least `target` (at least 1)."""
    return max(1, math.ceil(target / max(1, size)))


def to_uint8(canvas: np.ndarray) -> np.ndarray:
    """(3,H,W) float in [0,1] -> (H,W,3) uint8, rounded as final.png is."""
    return (np.clip(canvas, 0, 1).transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)


def upscale(img: Image.Image, k: int) -> Image.Image:
    return img if k == 1 else img.resize((img.width * k, img.height * k), Image.NEAREST)


def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """`text` as one drawable line (controls escaped: Pillow refuses to measure a newline) cut with an
    ellipsis so it fits `width` pixels."""
    text = printable(text)
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _open(path: Path, lane: str | None) -> sess.Session:
    s = sess.load(Path(path))
    if lane is not None:
        if lane not in s.lanes:
            raise ClipTermError(f"{path}: has no lane {lane} (lanes: {', '.join(s.lanes)})")
    return s


def _prepare_out(out: Path) -> Path:
    """`--out`, refused when it is or would replace a session's file (a PNG over session.toml)."""
    return check_output_file(out, "export")


def _save(img: Image.Image, out: Path, **kw: object) -> None:
    """Encode in memory, then write whole or not at all (outputs.write_file)."""
    buf = io.BytesIO()
    img.save(buf, **kw)
    write_file(out, buf.getvalue())


def upscaled_name(out: Path, k: int) -> Path:
    return out.with_name(f"{out.stem}-x{k}.png")


def export_png(session: Path, lane: str, out: Path, scale: int | None = None) -> list[Path]:
    """The lane's canvas at native size, plus an upscaled copy next to it (NAME-xK.png)."""
    s = _open(session, lane)
    out = _prepare_out(out)
    img = Image.fromarray(to_uint8(s.arrays[lane]["image"]))
    k = scale or auto_scale(img.width, PNG_TARGET)
    big = _prepare_out(upscaled_name(out, k))
    _save(img, out, format="PNG")
    _save(upscale(img, k), big, format="PNG")
    return [out, big]


def export_gif(
    session: Path, lane: str, out: Path, scale: int | None = None, frame_ms: int = GIF_FRAME_MS
) -> list[Path]:
    """The lane's saved trajectory (frames/lane-X.npy) as a looping GIF."""
    s = _open(session, lane)
    frames, _steps = s.frames.get(lane, (np.zeros((0,)), None))
    if not len(frames):
        raise ClipTermError(f"{session}: lane {lane} has no saved frames to animate")
    out = _prepare_out(out)
    k = scale or auto_scale(frames.shape[2], GIF_TARGET)
    images = [upscale(Image.fromarray(f), k) for f in frames]
    _save(
        images[0], out, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0, optimize=False
    )
    return [out]


SHEET_COLUMNS = 4  # lanes per row of a contact sheet


def sheet_size(n_lanes: int, panel: int) -> tuple[int, int]:
    """(width, height) of a contact sheet with `n_lanes` panels of `panel` pixels, 4 to a row."""
    cols, rows = min(n_lanes, SHEET_COLUMNS), -(-n_lanes // SHEET_COLUMNS)
    width = cols * panel + (cols + 1) * MARGIN
    height = MARGIN + HEADER_LINES * LINE + MARGIN + rows * (panel + MARGIN // 2 + FOOTER_LINES * LINE + MARGIN)
    return width, height


def _lane_scores(arrays: dict[str, np.ndarray], steps: int) -> list[str]:
    """Footer lines: own (last raw similarity), robust and verified (latest measurement)."""
    h, ev = arrays["history"], arrays["evals"]
    own = f"own {h[-1, 0]:.4f}" if len(h) else "own -"
    if len(ev):
        at = "" if int(ev[-1, 0]) == steps else f"  (@{int(ev[-1, 0])})"
        return [own, f"robust {ev[-1, 1]:.4f}  verified {ev[-1, 2]:.4f}{at}"]
    return [own, "robust -  verified -"]


def export_sheet(session: Path, out: Path, scale: int | None = None) -> list[Path]:
    """Every lane side by side (4 to a row), upscaled, with the prompt, step and scores written on the sheet."""
    s = _open(session, None)
    out = _prepare_out(out)
    lanes = list(s.lanes)
    size = s.arrays[lanes[0]]["image"].shape[-1]
    k = scale or auto_scale(size, SHEET_TARGET)
    panel = size * k
    width, height = sheet_size(len(lanes), panel)
    sheet = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(sheet)
    font = _font()
    text_w = width - 2 * MARGIN
    y = MARGIN
    title = s.prompt or "no prompt: each lane's objective is its units (below)"
    draw.text((MARGIN, y), _fit(draw, title, font, text_w), fill=FG, font=font)
    model = f"{s.model.get('name', '?')}"
    draw.text(
        (MARGIN, y + LINE),
        _fit(draw, f"step {s.steps}   model {model}   seed {s.seed}", font, text_w),
        fill=DIM,
        font=font,
    )
    top = MARGIN + HEADER_LINES * LINE + MARGIN
    row_h = panel + MARGIN // 2 + FOOTER_LINES * LINE + MARGIN
    for i, lane in enumerate(lanes):
        x = MARGIN + (i % SHEET_COLUMNS) * (panel + MARGIN)
        top = MARGIN + HEADER_LINES * LINE + MARGIN + (i // SHEET_COLUMNS) * row_h
        img = upscale(Image.fromarray(to_uint8(s.arrays[lane]["image"])), k)
        sheet.paste(img, (x, top))
        ty = top + panel + MARGIN // 2
        lines = [f"lane {lane.upper()}  {s.lanes[lane].preset}", s.lanes[lane].describe()]
        lines += _lane_scores(s.arrays[lane], s.steps)
        for j, line in enumerate(lines):
            draw.text((x, ty + j * LINE), _fit(draw, line, font, panel), fill=FG if j == 0 else DIM, font=font)
    _save(sheet, out, format="PNG")
    return [out]


def export(session: Path, lane: str, fmt: str, out: Path, scale: int | None = None) -> list[Path]:
    """Dispatch on `fmt` (png, gif or sheet); returns the files written."""
    if fmt not in FORMATS:
        raise ClipTermError(f"unknown export format {fmt!r}: use {', '.join(FORMATS)}")
    if scale is not None and not 1 <= scale <= 64:
        raise ClipTermError(f"--scale must be within 1..64, got {scale}")
    if fmt == "png":
        return export_png(session, lane, out, scale)
    if fmt == "gif":
        return export_gif(session, lane, out, scale)
    return export_sheet(session, out, scale)
