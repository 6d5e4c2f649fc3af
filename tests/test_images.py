"""clipterm.images: every image a user names is read by one safe reader, in bounded memory.

Image bombs (a 69-byte PNG claiming 60000 x 60000 pixels, a real 20000 x 20000 PNG) end in one
line and exit code 2, not a DecompressionBombError traceback; a 12000 x 12000 photo is read in a
fraction of the 1.1 GB a plain Image.open().load().convert() costs. Big PNGs are written row by
row with zlib (sessionkit.write_png), so the tests never hold their pixels in memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sessionkit import cli, write_png

from clipterm import batch
from clipterm.errors import ClipTermError
from clipterm.images import READ_SIDE, ImageReadError, read_image

PEAK_LIMIT_MB = 500


def read_in_child(path: Path) -> dict:
    """read_image in a fresh process: the result, or the refusal, and that process's peak RSS in MB
    (its whole peak: interpreter, Pillow and the read)."""
    code = """
import json, resource, sys
from clipterm.images import read_image
from clipterm.errors import ClipTermError
try:
    img = read_image(sys.argv[1])
    out = {"size": list(img.size), "mode": img.mode, "pixel": list(img.getpixel((3, 3)))}
except ClipTermError as e:
    out = {"error": str(e)}
try:  # VmHWM: this process's own peak; ru_maxrss would also count the parent it was forked from
    hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
    out["peak_mb"] = int(hwm.split()[1]) / 1024
except OSError:
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def one_line_refusal(capsys, *argv: object) -> str:
    code, out, err = cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert out == ""
    return lines[0]


# ---------------------------------------------------------------------------- bombs
def test_header_claiming_60000_squared_is_refused_in_one_line(tmp_path, capsys):
    bomb = write_png(tmp_path / "bomb.png", 60000, 60000, rows=False)
    assert bomb.stat().st_size < 100
    with pytest.raises(ImageReadError, match="decompression bomb"):
        read_image(bomb)
    assert "bomb.png" in one_line_refusal(capsys, "judge", bomb)
    ok = write_png(tmp_path / "ok.png", 64, 64)
    line = one_line_refusal(capsys, "score", ok, "--prompt", "a red circle", "--model", "shapes-a", "--baseline", bomb)
    assert "bomb.png" in line and "decompression bomb" in line


def test_real_20000_squared_png_is_refused_in_one_line(tmp_path, capsys):
    big = write_png(tmp_path / "big.png", 20000, 20000, colour_type=0)
    line = one_line_refusal(capsys, "judge", big)
    assert "big.png" in line and "more pixels than clipterm decodes" in line
    result = read_in_child(big)
    assert "decompression bomb" in result["error"] and result["peak_mb"] < 100


def test_12000_squared_png_is_refused_above_the_pixel_budget_before_decoding(tmp_path):
    """A PNG has no reduced decode: Pillow would hold 576 MB of RGB raster, so it is refused from its header."""
    result = read_in_child(write_png(tmp_path / "big.png", 12000, 12000))
    assert "12000x12000 pixels is more than clipterm decodes" in result["error"], result
    assert result["peak_mb"] < 100, result


def test_12000_squared_jpeg_is_read_in_bounded_memory(tmp_path):
    """A baseline JPEG is decoded at 1/4 scale (Image.draft), then reduced: tens of MB, not 1.1 GB."""
    photo = tmp_path / "photo.jpg"
    make = "import sys; from PIL import Image; Image.new('RGB', (12000, 12000), (200, 30, 30)).save(sys.argv[1])"
    subprocess.run([sys.executable, "-c", make, str(photo)], check=True, timeout=120)
    result = read_in_child(photo)
    assert "error" not in result, result
    assert max(result["size"]) <= READ_SIDE and result["size"][0] == result["size"][1] >= 1024
    assert result["mode"] == "RGB" and np.abs(np.array(result["pixel"]) - [200, 30, 30]).max() <= 4
    assert result["peak_mb"] < PEAK_LIMIT_MB, result


def test_largest_accepted_png_is_read_in_bounded_memory(tmp_path):
    """The worst case under the budget: an RGBA PNG just below Pillow's 89.5 Mpx limit."""
    side = int((Image.MAX_IMAGE_PIXELS - 1) ** 0.5)
    result = read_in_child(write_png(tmp_path / "rgba.png", side, side, colour_type=6))
    assert "error" not in result, result
    assert max(result["size"]) <= READ_SIDE and result["pixel"] == [200, 30, 30]
    assert result["peak_mb"] < PEAK_LIMIT_MB, result


# ---------------------------------------------------------------------------- ordinary images
def test_small_images_are_read_exactly_as_before(tmp_path):
    rng = np.random.default_rng(0)
    for mode in ("RGB", "RGBA", "L", "P"):
        src = Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).convert(mode)
        src.save(tmp_path / f"x-{mode}.png")
        got = read_image(tmp_path / f"x-{mode}.png")
        want = Image.open(tmp_path / f"x-{mode}.png").convert("RGB")
        assert got.mode == "RGB" and np.array_equal(np.asarray(got), np.asarray(want)), mode


def test_large_images_are_reduced_to_the_working_size(tmp_path):
    img = read_image(write_png(tmp_path / "wide.png", 5000, 1000))
    assert img.size == (1667, 334) and img.getpixel((10, 10)) == (200, 30, 30)
    palette = write_png(tmp_path / "p.png", 4000, 50, colour_type=3, plte=bytes([0, 0, 0, 10, 200, 30]))
    img = read_image(palette)
    assert img.size == (2000, 25) and img.getpixel((3, 3)) == (10, 200, 30)  # indices picked, not averaged


# ---------------------------------------------------------------------------- not image files
def test_directory_fifo_and_device_are_named_as_such(tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "notes.txt").write_text("not an image")
    cases = {
        tmp_path / "dir.png": "is a directory",
        tmp_path / "pipe.png": "is a FIFO",  # never opened: reading a FIFO would block
        Path("/dev/null"): "socket or device",
        tmp_path / "missing.png": "no such image file",
        tmp_path / "notes.txt": "not a readable image",
    }
    for path, needle in cases.items():
        with pytest.raises(ClipTermError, match=needle):
            read_image(path)
        assert needle in one_line_refusal(capsys, "judge", path)


def test_prompts_file_that_is_a_fifo_or_directory(tmp_path):
    os.mkfifo(tmp_path / "pipe.txt")
    with pytest.raises(ClipTermError, match="is a FIFO"):
        batch.read_prompts(tmp_path / "pipe.txt")
    with pytest.raises(ClipTermError, match="is a directory"):
        batch.read_prompts(tmp_path)
