"""Runs tests/e2e_tmux.sh: the real app in a real terminal (tmux), driven by keystrokes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("e2e_tmux.sh")


@pytest.mark.skipif(
    shutil.which("tmux") is None or shutil.which("flock") is None, reason="needs tmux and flock (apt-get install tmux)"
)
def test_e2e_in_tmux(tmp_path):
    env = dict(os.environ, CLIPTERM=f"{sys.executable} -m clipterm", TMPDIR=str(tmp_path), E2E_TIMEOUT="120")
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, errors="replace", timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "E2E OK" in out, out[-6000:]
    assert "quit saved step" in out and "SIGHUP saved step" in out
