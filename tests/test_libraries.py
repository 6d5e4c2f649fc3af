"""Libraries instead of hand-written parts (issue 15, item 8).

- the headless progress is Rich's progress display on a terminal, plain lines otherwise;
- the frame widget's use of textual-image internals is pinned to the tested release range, and
  every internal name it relies on is checked here, so an upgrade that moves one fails loudly;
- bench/steps.py's output holds no torch-profiler (libkineto) log lines.
"""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
import time
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.specifiers import SpecifierSet
from PIL import Image as PILImage
from sessionkit import CHILD_ENV, PROMPT

from clipterm.launch import Progress

ROOT = Path(__file__).resolve().parent.parent
PLAIN = re.compile(r"^step (\d+)/30  \d+\.\d steps/s  A 0\.\d{3}  B 0\.\d{3}$")


def feed(progress: Progress, pause: float = 0.0) -> None:
    for step in range(1, 31):
        if pause:
            time.sleep(pause)
        progress.update(step, {"a": 0.5 + step / 100, "b": 0.25})


def test_progress_on_a_terminal_is_richs_display():
    out = io.StringIO()
    progress = Progress(30, 0, False, stream=out, tty=True)
    feed(progress, pause=0.005)
    text = out.getvalue()
    assert "━" in text  # Rich's bar
    final = text.rsplit("\r", 1)[-1]
    assert "30/30" in final and "steps/s" in final and "eta" in final and "A 0.800  B 0.250" in final
    assert re.search(r"\d:\d\d:\d\d", final)  # elapsed and remaining time
    assert text.endswith("\x1b[?25h")  # stopped at the last step: the cursor is shown again
    progress.close()  # idempotent


def test_progress_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    feed(Progress(30, 0, False, stream=out, tty=False))
    lines = out.getvalue().splitlines()
    assert all(PLAIN.match(ln) for ln in lines), lines
    assert 3 <= len(lines) <= 11 and lines[-1].startswith("step 30/30")
    quiet = io.StringIO()
    feed(Progress(30, 0, True, stream=quiet, tty=True))
    assert quiet.getvalue() == ""


def test_headless_run_on_a_terminal_draws_richs_progress(tmp_path):
    """`clipterm run` with stderr on a pseudo-terminal shows Rich's display, and gives the cursor back."""
    leader, follower = pty.openpty()
    env = {**CHILD_ENV, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "30"}
    argv = ["run", str(tmp_path / "s"), "--prompt", PROMPT, "--steps", "20", "--model", "shapes-a", "--device", "cpu"]
    argv += ["--lanes", "ab"]  # about the progress display: lane c would only make it slower
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipterm", *argv], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=follower, env=env,
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(120) == 0
    text = b"".join(chunks).decode(errors="replace")
    assert "━" in text and "20/20" in text and "steps/s" in text and "eta" in text, text
    assert "\x1b[?25h" in text  # cursor shown again
    assert "[#" not in text  # not the hand-written bar


def test_textual_image_is_pinned_to_the_tested_range():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if d.startswith("textual-image"))
    specifiers = SpecifierSet(spec.removeprefix("textual-image"))
    assert any(s.operator in ("<", "<=", "~=", "==") for s in specifiers), f"{spec}: no upper bound"
    assert version("textual-image") in specifiers


def test_textual_image_internals_the_frame_widget_uses_still_exist():
    """Every textual-image name clipterm/app/render.py reaches past the public API, by use."""
    from textual_image._terminal import get_cell_size
    from textual_image.renderable.halfcell import Image as HalfcellRenderable
    from textual_image.widget import HalfcellImage

    from clipterm.app.render import FastHalfcell, FastHalfcellImage

    cells = get_cell_size()
    picture = PILImage.new("RGB", (8, 8), (200, 10, 10))
    renderable = HalfcellRenderable(picture, None, None)
    width, height = renderable._render_size.get_cell_size(10, 10, cells)
    assert isinstance(width, int) and isinstance(height, int)
    assert renderable._image_data.scaled(4, 4).pil_image.size == (4, 4)
    assert HalfcellImage._Renderable is HalfcellRenderable and FastHalfcellImage._Renderable is FastHalfcell
    assert isinstance(HalfcellImage.image, property) and HalfcellImage.image.fset is not None
    assert callable(HalfcellImage._get_styled_size)
    widget = FastHalfcellImage(picture)
    assert widget._image is picture and widget._renderable is None
    rows = FastHalfcell(picture, 4, 2).strips(4, 2)
    assert len(rows) == 2 and rows[0].cell_length == 4


def test_bench_steps_profiler_keeps_kineto_lines_out(tmp_path):
    """bench/steps.py's CPU memory measurement runs the torch profiler; its native log stays out,
    while anything else written to stderr meanwhile still gets through."""
    code = (
        "import os, sys, torch\n"
        f"sys.path.insert(0, {str(ROOT / 'bench')!r})\n"
        "import steps\n"
        "fn = lambda: (torch.ones(1000) + 1, os.write(2, b'a real warning\\n'))\n"
        "print('peak', steps.step_peak_mib(fn, torch.device('cpu')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, env=CHILD_ENV)
    assert proc.returncode == 0, proc.stderr
    both = proc.stdout + proc.stderr
    assert "USDT" not in both and "profiler_start" not in both and "profiler_stop" not in both, both
    assert proc.stderr.count("a real warning") == 2 and proc.stdout.startswith("peak ")
