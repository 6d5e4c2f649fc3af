"""Snapshot tests of the app's main layouts (pytest-textual-snapshot).

Deterministic by construction: the worker is paused, the run's metric history and judge verdicts
are fixed numbers injected before the app starts, the canvas is the seed-0 initial noise, the
renderer is forced to half-blocks, and the status line shows no rate while paused.
Update with: pytest tests/snapshots --snapshot-update (then look at the SVGs).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from sessionkit import APP_FLAGS

from clipterm.app import build_app
from clipterm.app.controller import JudgeView
from clipterm.cli import build_app_parser

pytestmark = [
    pytest.mark.filterwarnings("ignore:Image.Image.getdata is deprecated:DeprecationWarning"),
    pytest.mark.usefixtures("shared_shapes_a"),  # every app here reuses one loaded shapes-a
]


def fixed_app(tmp_path, split: bool = False):
    argv = [str(tmp_path / "demo"), *APP_FLAGS, "--lanes", "ab"]  # the two lanes whose curves are fixed below
    app = build_app(build_app_parser().parse_args(argv))
    t = np.arange(1, 121, dtype=np.float32)
    curves = {"a": 0.15 + 0.80 * (1 - np.exp(-t / 25)), "b": 0.10 + 0.35 * (1 - np.exp(-t / 60))}
    for name, ln in app.run_.engine.lanes.items():
        h = np.zeros((120, 6), np.float32)
        h[:, 0] = curves[name] + 0.01 * np.sin(t / 3)
        ln.history = h
        ln.evals = np.array(
            [[50, 0.05 if name == "a" else 0.30, 0.20], [100, 0.04 if name == "a" else 0.36, 0.25]], np.float32
        )
    app.controller._verdicts = {
        "a": JudgeView("shapes-c", 14, 25, 0.0812, "a blue square on a white background"),
        "b": JudgeView("shapes-c", 2, 25, 0.2741, "a red square on a black background"),
    }
    if split:
        app._initial_split = True
    return app


async def _ready(pilot) -> None:
    end = time.monotonic() + 20
    while pilot.app.snapshot is None and time.monotonic() < end:
        await pilot.pause(0.02)
    await pilot.pause(0.1)


@pytest.mark.parametrize("size", [(160, 48), (80, 24)], ids=["160x48", "80x24"])
@pytest.mark.parametrize("split", [False, True], ids=["single", "split"])
def test_layout(snap_compare, tmp_path, size, split):
    app = fixed_app(tmp_path, split)
    try:
        assert snap_compare(app, terminal_size=size, run_before=_ready)
    finally:
        app.controller.shutdown()
