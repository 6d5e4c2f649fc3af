"""The one way clipterm reads an image file a user names (judge, score and its --baseline, batch
judging, --init and the session's init.png; any future examples reader goes through here too).

Image files are untrusted: a 69-byte PNG can claim 60000 x 60000 pixels, and a real photo can be
far larger than any CLIP input (224-448 px). `read_image` therefore

- opens only regular files (a directory or a FIFO is named as such; a FIFO is never opened for
  reading, which would block),
- keeps Pillow's own limit, `Image.MAX_IMAGE_PIXELS` (89.5 Mpx by default), as the most pixels it
  ever decodes at full size: Pillow must hold a PNG's whole decoded raster (4 bytes a pixel for
  RGB) before anything can shrink it, so 89.5 Mpx bounds that raster to about 360 MB; larger
  images are refused in one line, with their size and the limit,
- except JPEG (and MPO), whose decoder can scale by 1/2, 1/4 or 1/8 while decoding (`Image.draft`):
  those are decoded straight at a reduced size, so a 12000 x 12000 photo costs tens of MB, not 2 GB,
- and reduces what it decoded to at most `READ_SIDE` pixels a side (`Image.reduce`, a box filter)
  before converting to RGB, so the full-size raster is never copied.

Every failure is a ClipTermError naming the file: one line and exit code 2 from the CLI.
"""

from __future__ import annotations

import math
import os
import stat
import struct
import warnings
import zlib
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from clipterm.errors import ClipTermError
from clipterm.text import printable

# Longest side kept after reading: far above any CLIP input size, so a model's own preprocessing
# (resize to its input, centre crop) sees the same picture, while a huge photo costs little.
READ_SIDE = 2048
# Modes whose pixels can be averaged by Image.reduce (palette and 16-bit modes cannot)
_BOX_MODES = frozenset({"L", "La", "RGB", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "F"})


class ImageReadError(ClipTermError):
    """An image file that cannot or must not be read: missing, not a file, not an image, too large."""


def regular_input(path: Path, what: str = "image file") -> Path:
    """`path` if it names a regular file (symlinks followed); else a one-line error saying what it is.

    Why: `is_file()` answers False for a missing path, a directory and a FIFO alike, and a FIFO
    opened for reading blocks until someone writes to it.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ImageReadError(f"{p}: no such {what}") from None
    except OSError as e:
        raise ImageReadError(f"{p}: cannot read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageReadError(f"{p}: is a directory, not a file")
    if stat.S_ISFIFO(st.st_mode):
        raise ImageReadError(f"{p}: is a FIFO (named pipe), not a regular file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageReadError(f"{p}: is a socket or device, not a regular file")
    return p


def _too_large(p: Path, size: tuple[int, int]) -> ImageReadError:
    w, h = size
    return ImageReadError(
        f"{p}: {w}x{h} pixels is more than clipterm decodes at full size "
        f"({Image.MAX_IMAGE_PIXELS / 1e6:.1f} Mpx, Pillow's limit); scale it down first"
    )


def _shrink(img: Image.Image, factor: int) -> Image.Image:
    """`img` reduced by a whole `factor` without a second full-size copy where it can be avoided.

    A box filter (Image.reduce) where averaging means something; RGBA and LA band by band, since
    Image.reduce would first copy them whole as premultiplied alpha and the alpha is dropped anyway
    (as convert("RGB") drops it); palette and 16-bit images by picking pixels (indices cannot be
    averaged, and Image.reduce refuses 16-bit modes).
    """
    if img.mode in ("RGBA", "LA"):
        bands = [img.getchannel(b).reduce(factor) for b in img.mode[:-1]]  # one 1-byte band at a time
        return Image.merge("RGB", bands) if len(bands) == 3 else bands[0]
    if img.mode == "1":
        img = img.convert("L")  # as many bytes a pixel as "1" in Pillow's memory
    if img.mode in _BOX_MODES:
        return img.reduce(factor)
    return img.resize((math.ceil(img.width / factor), math.ceil(img.height / factor)), Image.Resampling.NEAREST)


def read_image(path: Path, max_side: int = READ_SIDE) -> Image.Image:
    """An image file as an RGB picture of at most `max_side` pixels a side, read in bounded memory."""
    p = regular_input(path)
    limit = Image.MAX_IMAGE_PIXELS
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)  # never blocks, even if a FIFO was swapped in
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ImageReadError(f"{p}: not a regular file")
            with warnings.catch_warnings():
                # between the limit and twice it Pillow only warns: the size is judged below instead
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(f)
            full = img.size
            # A baseline JPEG decodes at 1/2, 1/4 or 1/8 scale in small memory; a progressive one keeps
            # every full-size coefficient while decoding, so it is held to the limit like a PNG.
            if max(full) > max_side and img.format in ("JPEG", "MPO") and not img.info.get("progressive"):
                img.draft("RGB", (max_side, max_side))
            if limit is not None and img.width * img.height > limit:
                raise _too_large(p, full)
            img.load()
            factor = math.ceil(max(img.size) / max_side)
            if factor > 1:
                img = _shrink(img, factor)
            return img if img.mode == "RGB" else img.convert("RGB")
    except ImageReadError:
        raise
    except Image.DecompressionBombError:  # over twice the limit: Pillow refuses it at open, from the header
        raise ImageReadError(
            f"{p}: declares more pixels than clipterm decodes "
            f"({Image.MAX_IMAGE_PIXELS / 1e6:.1f} Mpx, Pillow's limit): a decompression bomb or a huge image"
        ) from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{p}: not a readable image (not a format Pillow recognises)") from None
    except MemoryError:
        raise ImageReadError(f"{p}: not enough memory to decode it") from None
    except (OSError, ValueError, EOFError, SyntaxError, struct.error, zlib.error) as e:
        reason = printable(str(e).splitlines()[0][:100]) if str(e) else type(e).__name__
        raise ImageReadError(f"{p}: not a readable image ({reason})") from None
