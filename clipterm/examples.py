"""Dataset examples of a unit: which real images drive a channel most and least (and a folder to try it on).

`render_shapes` writes base-world renders (../shared/SHAPES.md) with their captions, a folder every
machine can make offline. `examples` streams a folder of images through the model in batches,
ranks them by the unit's mean activation (the channel's mean over its block's positions, on the
model's own preprocessing of each file) and writes a contact sheet of the top 16 and bottom 16
with their scores, plus a CSV of every readable image's rank. Unreadable files are skipped and
counted; every refusal (a bad block or channel, an unreadable or empty folder) comes before
anything is written.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from clipterm.errors import ClipTermError, err
from clipterm.outputs import check_output, check_output_file, write_file
from clipterm.text import printable

SHOWN = 16  # images on each half of the sheet
THUMB = 96
COLS = 8
LABEL = 30  # pixels of text under each thumbnail
MARGIN = 10
BG = (24, 24, 28)
FG = (235, 235, 235)
DIM = (160, 160, 170)
MAX_RENDERS = 100_000


def render_shapes(n: int, out: Path, seed: int = 0) -> list[Path]:
    """N base-world renders as `shape-NNNNN.png` in `out` (new or empty) and `captions.csv` beside them."""
    import numpy as np

    from clipterm import shapes

    if not 1 <= n <= MAX_RENDERS:
        raise ClipTermError(f"render-shapes: N must be within 1..{MAX_RENDERS}, got {n}")
    out = check_output(Path(out), "renders")
    if os.path.lexists(out) and (not out.is_dir() or out.is_symlink()):
        raise ClipTermError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise ClipTermError(f"{out}: is not empty; give a new or empty directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ClipTermError(f"{out}: cannot create ({e.strerror})") from None
    rng = np.random.default_rng(seed)
    width = max(5, len(str(n - 1)))
    rows = [("file", "caption", "colour", "shape", "background")]
    written = []
    for k in range(n):
        img, (colour, shape, background) = shapes.sample_base(rng)
        name = f"shape-{k:0{width}d}.png"
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        write_file(out / name, buf.getvalue())
        rows.append((name, shapes.base_caption(colour, shape, background), colour, shape, background))  # type: ignore[arg-type]
        written.append(out / name)
    write_file(out / "captions.csv", _csv(rows))
    return [*written, out / "captions.csv"]


def _csv(rows: list[tuple]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode()


@dataclass(frozen=True)
class Scored:
    path: Path
    score: float


def list_images(folder: Path) -> list[Path]:
    """The regular, non-hidden files directly in `folder`, sorted; one-line refusals for a folder that
    is missing, not a directory, unreadable or empty."""
    folder = Path(folder)
    if not folder.exists():
        raise ClipTermError(f"{printable(str(folder))}: no such folder")
    if not folder.is_dir():
        raise ClipTermError(f"{printable(str(folder))}: is not a folder")
    try:
        names = sorted(os.listdir(folder))
    except OSError as e:
        raise ClipTermError(f"{printable(str(folder))}: cannot read the folder ({e.strerror})") from None
    files = [folder / n for n in names if not n.startswith(".") and (folder / n).is_file()]
    if not files:
        raise ClipTermError(f"{printable(str(folder))}: holds no files to rank")
    return files


def score_folder(
    bundle: object,
    block: int,
    channel: int,
    files: list[Path],
    batch: int = 64,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Scored], int]:
    """Each readable file's mean activation of (block, channel), most active first; and how many were skipped."""
    import torch

    from clipterm.images import read_image
    from clipterm.units import block_activations, channel_means

    scored: list[Scored] = []
    skipped = 0
    for start in range(0, len(files), batch):
        chunk, pixels = [], []
        for path in files[start : start + batch]:
            try:
                pixels.append(bundle.preprocess_uint8(read_image(path)))  # type: ignore[attr-defined]
                chunk.append(path)
            except ClipTermError:
                skipped += 1
        if pixels:
            means = channel_means(block_activations(bundle, torch.cat(pixels), block))[:, channel]
            scored.extend(Scored(p, float(v)) for p, v in zip(chunk, means.tolist()))
        if progress is not None:
            progress(min(start + batch, len(files)))
    scored.sort(key=lambda s: -s.score)
    return scored, skipped


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _cut(draw: ImageDraw.ImageDraw, text: str, font: object, width: int) -> str:
    """`text` (escaped) cut with an ellipsis to fit `width` pixels."""
    text = printable(text)
    if draw.textlength(text, font=font) <= width:  # type: ignore[arg-type]
        return text
    while text and draw.textlength(text + "…", font=font) > width:  # type: ignore[arg-type]
        text = text[:-1]
    return text + "…"


def contact_sheet(title: str, top: list[Scored], bottom: list[Scored], total: int) -> Image.Image:
    """Two grids (most active, least active) of thumbnails, each with its score and file name."""
    from clipterm.images import read_image

    font, small = _font(14), _font(11)
    cell_w, cell_h = THUMB + MARGIN, THUMB + LABEL
    rows_top, rows_bottom = -(-len(top) // COLS), -(-len(bottom) // COLS)
    head = 24
    height = MARGIN + head + (head + rows_top * cell_h) + (head + rows_bottom * cell_h if bottom else 0) + MARGIN
    sheet = Image.new("RGB", (MARGIN + COLS * cell_w, height), BG)
    draw = ImageDraw.Draw(sheet)
    draw.text((MARGIN, MARGIN), _cut(draw, title, font, sheet.width - 2 * MARGIN), fill=FG, font=font)
    y = MARGIN + head
    for label, group in ((f"top {len(top)} of {total}", top), (f"bottom {len(bottom)} of {total}", bottom)):
        if not group:
            continue
        draw.text((MARGIN, y + 4), label, fill=DIM, font=font)
        y += head
        for k, item in enumerate(group):
            x0, y0 = MARGIN + (k % COLS) * cell_w, y + (k // COLS) * cell_h
            thumb = read_image(item.path).resize((THUMB, THUMB), Image.Resampling.LANCZOS)
            sheet.paste(thumb, (x0, y0))
            draw.text((x0, y0 + THUMB + 2), f"{item.score:+.4f}", fill=FG, font=small)
            draw.text((x0, y0 + THUMB + 15), _cut(draw, item.path.name, small, THUMB), fill=DIM, font=small)
        y += -(-len(group) // COLS) * cell_h
    return sheet


def examples(
    model: str,
    pretrained: str | None,
    device: str,
    block: int,
    channel: int,
    folder: Path,
    out: Path,
    quiet: bool = False,
    batch: int = 64,
    log: Callable[[str], None] = err,
) -> list[Path]:
    """Rank `folder`'s images by the unit's mean activation; write the sheet `out` and `out`.csv."""
    from clipterm.launch import Progress
    from clipterm.models import load_model
    from clipterm.units import check_channel, tower

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ClipTermError(f"{printable(str(out))}: the sheet is a PNG (--out SHEET.png)")
    for path in (out, out.with_suffix(".csv")):  # refused now; their folder is made only when writing
        check_output(path, "sheet")
        if path.is_dir():
            raise ClipTermError(f"{printable(str(path))}: is a directory; give a file name")
    bundle = load_model(model, pretrained, device)
    info = check_channel(tower(bundle.model, bundle.image_size), block, channel, bundle.name)
    files = list_images(folder)
    bar = Progress(len(files), 0, quiet, noun="image")
    try:
        scored, skipped = score_folder(bundle, block, channel, files, batch, lambda n: bar.update(n, {}))
    finally:
        bar.close()
    if not scored:
        raise ClipTermError(f"{printable(str(folder))}: none of its {len(files)} files is a readable image")
    if skipped:
        log(f"skipped {skipped} unreadable file{'s' * (skipped != 1)} of {len(files)}")
    top = scored[:SHOWN]
    bottom = scored[max(len(top), len(scored) - SHOWN) :]
    title = f"{bundle.name} block {block} ({info.name}) channel {channel}: {len(scored)} images"
    sheet = contact_sheet(title, top, bottom, len(scored))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    rows = [("rank", "file", "score")] + [(k + 1, s.path.name, f"{s.score:.6f}") for k, s in enumerate(scored)]
    table = check_output_file(out.with_suffix(".csv"), "table")
    write_file(table, _csv(rows))
    write_file(check_output_file(out, "sheet"), buf.getvalue())
    return [out, table]
