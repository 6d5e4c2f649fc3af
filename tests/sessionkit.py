"""Helpers shared by the session tests: build sessions, fingerprint directories, edit session files.

Sessions are edited the way a damaged disk or a hostile user would, but [files] in session.toml
is updated after an edit unless a test asks not to, so each case reaches the check it is about
(instead of always stopping at the sha256 check).
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import stat
import struct
import subprocess
import sys
import time
import tomllib
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tomli_w

from clipterm.cli import main

PROMPT = "a red circle on a black background"
# Lanes a and b only, for tests about other things: the default lane c (the best preset, with many
# views a step) makes every step several times slower. Tests of the default lanes leave this out; a
# later --lanes in the same command wins, and --lane adds to (or replaces) these.
TWO_LANES = ["--lanes", "ab"]
# Small and fast: the bundled 64px model on the CPU, two lanes, frequent evals, frames and autosaves.
RUN_FLAGS = [
    *TWO_LANES,
    "--model",
    "shapes-a",
    "--device",
    "cpu",
    "--prompt",
    PROMPT,
    "--eval-every",
    "5",
    "--autosave-steps",
    "5",
    "--autosave-seconds",
    "0",
    "--quiet",
]
# One thread in every child: bit-exact comparisons need the same reduction order in each process.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """`clipterm ARGV` in this process, as the shell sees it: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def clipterm(*argv: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m clipterm ARGV` in a child process (single-threaded unless another env is given)."""
    return subprocess.run(
        [sys.executable, "-m", "clipterm", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=CHILD_ENV if env is None else env,
    )


def offline_env(home: Path) -> dict[str, str]:
    """A child environment with no model hub and empty caches under HOME (nothing cached, nothing fetched)."""
    return dict(
        os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(home / "hf"), XDG_CACHE_HOME=str(home / "xdg"), HOME=str(home)
    )


def make_run(path: Path, *extra: str, prompt: str = PROMPT, steps: int = 6, model: str = "shapes-a") -> Path:
    """A finished `clipterm run` session on the CPU, lanes a and b unless `extra` says otherwise, made in
    this process (exit code 0 asserted)."""
    argv = ["run", str(path), "--prompt", prompt, "--steps", str(steps), "--model", model, "--device", "cpu"]
    argv += TWO_LANES
    assert main([*argv, *map(str, extra)]) == 0
    return path


# The app as tests drive it: bundled model on the CPU, no judge, paused, half-block frames.
APP_FLAGS = ["--model", "shapes-a", "--device", "cpu", "--judge", "none", "--paused", "--render", "halfcell"]


def open_world_copy(folder: Path) -> str:
    """shapes-a's trained weights in `folder` without its training record: a real, trained model that
    clipterm cannot tell is a shapes model, as it would see a CLIP of the open world (a `local-dir:`
    name; lane C's default is then the one for real CLIP models)."""
    import shutil

    from clipterm.modelnames import TRAINING_RECORD
    from clipterm.models import bundled_dir

    shutil.copytree(bundled_dir("shapes-a"), folder)
    (folder / TRAINING_RECORD).unlink()
    return f"local-dir:{folder}"


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under `root` (not following symlinks) -> its content hash, link target or kind."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link:" + os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            elif stat.S_ISREG(st.st_mode):
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = f"special:{stat.S_IFMT(st.st_mode)}"
    return out


def lane_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every .npy of a session (relative path -> array), read without pickle."""
    return {
        str(p.relative_to(path)): np.load(p, allow_pickle=False)
        for p in sorted(path.rglob("*.npy"))
        if ".pending" not in p.parts
    }


def read_doc(s: Path) -> dict:
    return tomllib.loads((s / "session.toml").read_text())


def edit_toml(s: Path, fn: Callable[[dict], None]) -> None:
    doc = read_doc(s)
    fn(doc)
    (s / "session.toml").write_text(tomli_w.dumps(doc))


def npy_bytes(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def put_bytes(s: Path, rel: str, data: bytes, rehash: bool = True) -> None:
    """Overwrite a session file; record its new sha256 in session.toml unless rehash is False."""
    (s / rel).write_bytes(data)
    if rehash:
        edit_toml(s, lambda d: d["files"].__setitem__(rel, hashlib.sha256(data).hexdigest()))


def put_npy(s: Path, rel: str, arr: np.ndarray, rehash: bool = True) -> None:
    put_bytes(s, rel, npy_bytes(arr), rehash)


def get_npy(s: Path, rel: str) -> np.ndarray:
    return np.load(s / rel, allow_pickle=False)


async def until(pilot, cond, timeout: float = 20.0, what: str = "condition") -> None:
    """Let a Textual app under test (and its worker) run until cond() holds."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


def run_killed_at_recipe(session: Path, *argv: object) -> None:
    """`clipterm run SESSION ARGV...` in a child, SIGKILLed as soon as its recipe.toml is on disk
    (torch and the model are still loading then): the start-up crash a recipe must survive."""
    from clipterm.recipe import RECIPE

    child = subprocess.Popen(
        [sys.executable, "-m", "clipterm", "run", str(session), *map(str, argv)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=CHILD_ENV,
    )
    try:
        end = time.monotonic() + 60
        while not (session / RECIPE).exists():
            assert child.poll() is None and time.monotonic() < end, "no recipe before the child ended"
            time.sleep(0.002)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        assert child.wait(30) == -signal.SIGKILL


_CHANNELS = {0: 1, 2: 3, 3: 1, 6: 4}  # PNG colour type -> samples a pixel


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path: Path, w: int, h: int, colour_type: int = 2, rows: bool = True, plte: bytes = b"") -> Path:
    """A valid 8-bit PNG of one colour, streamed row by row (or only its header when rows is False)."""
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)))
        if plte:
            f.write(_chunk(b"PLTE", plte))
        comp = zlib.compressobj(1)
        pixel = b"\x01" if colour_type == 3 else bytes([200, 30, 30, 255][: _CHANNELS[colour_type]])
        row = b"\x00" + pixel * w
        for _ in range(h if rows else 0):
            data = comp.compress(row)
            if data:
                f.write(_chunk(b"IDAT", data))
        f.write(_chunk(b"IDAT", comp.flush()))
        f.write(_chunk(b"IEND", b""))
    return path
