"""Small commands start without torch: `--help`, `presets` and `info` (issue 15, item 7).

Each command runs in a fresh interpreter, which then reports whether torch (or open_clip) was
imported. bench/startup.py measures the times these tests protect.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sessionkit import CHILD_ENV, make_run, put_npy

from clipterm.rngstate import STATE_SIZE, valid_cpu_generator_state

# Runs clipterm's main in a fresh interpreter with stdout discarded, then prints what got imported.
PROBE = r"""
import contextlib, io, json, sys
from clipterm.cli import main
code = 0
with contextlib.redirect_stdout(io.StringIO()):
    try:
        code = main(sys.argv[1:])
    except SystemExit as e:
        code = e.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules, "open_clip": "open_clip" in sys.modules}))
"""


def probe(*argv: object) -> tuple[dict, str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, argv)], capture_output=True, text=True, timeout=120, env=CHILD_ENV
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("startup") / "s", steps=2)


@pytest.mark.parametrize(
    "argv", [["--help"], ["run", "--help"], ["presets"], ["info", "SESSION"], ["info", "SESSION", "--json"]]
)
def test_small_commands_do_not_import_torch(argv, session):
    got, err = probe(*[session if a == "SESSION" else a for a in argv])
    assert got == {"code": 0, "torch": False, "open_clip": False}, err


def test_info_without_torch_still_refuses_a_bad_generator_state(session, tmp_path):
    s = tmp_path / "s"
    shutil.copytree(session, s)
    put_npy(s, "lane-a/rng.npy", np.zeros(100, np.uint8))
    got, err = probe("info", s)
    assert got == {"code": 2, "torch": False, "open_clip": False}
    assert "lane-a/rng.npy" in err and "generator state" in err


def _torch_accepts(state: np.ndarray) -> bool:
    try:
        torch.Generator().set_state(torch.from_numpy(state.copy()))
    except (RuntimeError, ValueError, TypeError):
        return False
    return True


def test_torch_free_generator_check_agrees_with_torch():
    """The rule rngstate spells out is torch's own: 1500 mutated and random states, same verdicts."""
    rng = random.Random(15)
    gen = torch.Generator().manual_seed(7)
    torch.randn(5, generator=gen)  # a state part-way through its words, with a cached normal
    base = gen.get_state().numpy().copy()
    assert base.size == STATE_SIZE and valid_cpu_generator_state(base)
    verdicts = set()
    for i in range(1500):
        s = base.copy()
        kind = i % 5
        if kind == 0:  # left
            struct.pack_into(
                "<i", s, 8, rng.choice([-(2**31), -1, 0, 1, 623, 624, 625, rng.randrange(-(2**31), 2**31)])
            )
        elif kind == 1:  # seeded
            struct.pack_into("<i", s, 12, rng.choice([0, 1, 2, -1, rng.randrange(-(2**31), 2**31)]))
        elif kind == 2:  # next (torch compares its low 32 bits)
            struct.pack_into("<Q", s, 16, rng.choice([0, 624, 625, 2**32 + 624, 2**32 + 625, rng.randrange(2**64)]))
        elif kind == 3:  # random bytes of plausible and implausible sizes
            s = np.frombuffer(rng.randbytes(rng.choice([STATE_SIZE, STATE_SIZE - 8, 100, 8])), np.uint8).copy()
        else:  # all four header fields at once
            struct.pack_into(
                "<QiiQ", s, 0, rng.randrange(2**64), rng.randrange(-3, 700), rng.randrange(-1, 3), rng.randrange(700)
            )
        want = _torch_accepts(s)
        assert valid_cpu_generator_state(s) == want, (i, s[:24].tobytes().hex())
        verdicts.add(want)
    assert verdicts == {True, False}


def test_lazy_torch_imports_on_first_attribute_use():
    code = (
        "import sys\n"
        "from clipterm.lazy import F, torch\n"
        "import clipterm.parts; clipterm.parts.load_all()\n"
        "assert 'torch' not in sys.modules, 'imported too early'\n"
        "x = torch.ones(2)\n"
        "assert 'torch' in sys.modules and float(F.relu(-x).sum()) == 0.0\n"
        "assert torch.ones is sys.modules['torch'].ones\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=CHILD_ENV)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_info_escapes_text_from_the_session(session, monkeypatch, capsys):
    """Strings from session.toml reach the terminal escaped (a loader that let one through is simulated)."""
    import clipterm.cli as cli
    from clipterm import session as sess

    real = sess.load(session)
    real.prompt = "a red\x1b[31m circle\x07"
    real.model = {**real.model, "name": "shapes-a\x9b2J"}
    monkeypatch.setattr(sess, "load", lambda path: real)
    assert cli.main(["info", str(session)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "a red\\x1b[31m circle\\x07" in out and "shapes-a\\x9b2J" in out
