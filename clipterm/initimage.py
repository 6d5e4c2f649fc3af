"""Starting a new session from a picture instead of noise: `--init IMAGE`.

Pushing a real picture toward another caption shows what CLIP needs to change to see it, which
noise cannot. The picture is read with the one safe reader (`images.read_image`), centre-cropped
to its largest square and kept at most INIT_SIDE px a side. That square is the session's copy:
`init.png` in the session directory, written before the recipe names it, so a start-up killed at
any moment resumes from the same pixels without the original file. Only when the model has loaded
is the square resized to the model's input (Pillow's bicubic filter, which averages when it
shrinks) and fitted by each lane's parameterization.

The pixels' sha256 identifies the picture: the recipe holds it, and session.toml's change history
records it at step 0, so `--init` given again on an existing session is accepted only when it is
the very picture the session started from (repeating a command resumes; anything else is refused).

Torch-free: the picture is prepared and checked before torch loads.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from clipterm.errors import ClipTermError, SessionError
from clipterm.images import read_image
from clipterm.text import printable

INIT_FILE = "init.png"
INIT_SIDE = 512  # at least every common CLIP input (224-448 px), so the session's copy loses nothing
CHANGE_KEY = "init"


@dataclass(frozen=True, eq=False)
class InitImage:
    """The picture a session starts from: the centre square, 8-bit RGB, at most INIT_SIDE px."""

    pixels: np.ndarray  # (side, side, 3) uint8
    source: str  # the file as the user named it, escaped (it is logged and stored in TOML)

    @cached_property
    def digest(self) -> str:
        """sha256 of the pixels (and their size), not of a file: the same picture however encoded."""
        h = hashlib.sha256(f"{self.pixels.shape[0]}x{self.pixels.shape[1]}:".encode())
        h.update(np.ascontiguousarray(self.pixels).tobytes())
        return h.hexdigest()

    def canvas(self, size: int) -> np.ndarray:
        """float32 (3, size, size) in [0, 1]: the square resized to the model's input."""
        img = Image.fromarray(self.pixels)
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BICUBIC)
        return (np.asarray(img, dtype=np.float32) / 255.0).transpose(2, 0, 1).copy()

    def png(self) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(self.pixels).save(buf, format="PNG")
        return buf.getvalue()

    def change(self) -> dict:
        """The step-0 entry of a session's change history that records where it started."""
        return {"step": 0, "lane": "*", "key": CHANGE_KEY, "old": "noise", "new": f"{self.source} sha256:{self.digest}"}


def square(img: Image.Image) -> np.ndarray:
    """The centre square of an RGB picture, shrunk to INIT_SIDE px when larger, as uint8 HWC."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if side > INIT_SIDE:
        img = img.resize((INIT_SIDE, INIT_SIDE), Image.Resampling.BICUBIC)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def prepare(path: Path) -> InitImage:
    """`--init IMAGE` read and squared; an unreadable, empty or oversized file is one ClipTermError."""
    return InitImage(square(read_image(Path(path))), printable(str(path)))


def load(folder: Path, digest: str, source: str) -> InitImage:
    """The session's copy (`init.png`), refused unless it holds exactly the pixels `digest` names."""
    from clipterm.session import is_regular_file

    path = Path(folder) / INIT_FILE
    if not is_regular_file(path):  # a session file: never a symlink or a special file
        raise SessionError(f"{path}: missing or not a regular file (the picture this session starts from)")
    try:
        img = InitImage(np.asarray(read_image(path, max_side=INIT_SIDE), dtype=np.uint8), source)
    except ClipTermError as e:
        raise SessionError(str(e)) from None
    if img.pixels.shape[0] != img.pixels.shape[1] or img.digest != digest:
        raise SessionError(f"{path}: does not hold the picture the recipe names (sha256 {digest[:12]}…)")
    return img


def started_from(changes: list[dict]) -> tuple[str, str] | None:
    """(source, sha256) of the picture a session started from, from its change history; None: noise."""
    for c in changes:
        if c.get("key") == CHANGE_KEY and c.get("step") == 0:
            source, _, digest = str(c.get("new", "")).rpartition(" sha256:")
            return (source, digest) if digest else None
    return None


def recorded(changes: list[dict]) -> str | None:
    """The sha256 of the picture a session started from; None when it started from noise."""
    start = started_from(changes)
    return start[1] if start else None


def check_same(path: Path, changes: list[dict], img: InitImage) -> None:
    """`--init` on an existing session: fine when it is the session's own start, else refused."""
    had = recorded(changes)
    if had == img.digest:
        return
    how = "from noise" if had is None else "from another picture"
    raise SessionError(
        f"{path}: --init {img.source} only starts a new session; this one already started {how} "
        f"(resume it without --init, or give a new directory)"
    )
