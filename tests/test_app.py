"""Pilot-driven tests of the app: every key and pane, on the bundled shapes-a model, CPU only.

The app opens paused (`--paused`) so each test steps explicitly ('.') and stays deterministic and quick.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sessionkit import APP_FLAGS, cli, until

from clipterm import session as sess
from clipterm.app import DEFAULT_PROMPT, build_app, new_session_path
from clipterm.app.controller import read_ui_state
from clipterm.app.paramtable import ParamTable
from clipterm.app.ui import KEYS, ClipTermApp
from clipterm.app.widgets import (
    TREND_GLYPHS,
    HelpScreen,
    LayersPane,
    ParamEditor,
    ParamsPane,
    PromptInput,
    PromptPane,
    trend_text,
)
from clipterm.cli import build_app_parser
from clipterm.launch import DEFAULT_LANES
from clipterm.prompts import slugify

SIZE = (160, 48)
pytestmark = [
    pytest.mark.filterwarnings("ignore:Image.Image.getdata is deprecated:DeprecationWarning"),
    pytest.mark.usefixtures("shared_shapes_a"),  # every app here reuses one loaded shapes-a
]


def make_app(path: Path | None, *extra: str, lanes: str | None = "ab") -> ClipTermApp:
    """The app on `path`; a new session gets lanes a and b unless `lanes` says otherwise (None: no --lanes,
    the default lanes; lane c's many views a step would slow the tests about other things)."""
    argv = ([str(path)] if path is not None else []) + [*APP_FLAGS, *(["--lanes", lanes] if lanes else []), *extra]
    return build_app(build_app_parser().parse_args(argv))


async def started(pilot) -> None:
    await until(pilot, lambda: pilot.app.snapshot is not None, what="first snapshot")


def screen_rows(app: ClipTermApp, widget) -> list[list[tuple[str, str]]]:
    """What the compositor draws over the widget's screen region: (text, style) of each segment."""
    r = widget.region
    strips = app.screen._compositor.render_strips()
    return [[(seg.text, str(seg.style)) for seg in strip.crop(r.x, r.right)] for strip in strips[r.y : r.bottom]]


def log_text(app: ClipTermApp) -> str:
    return "\n".join(str(line.text) for line in app.query_one("#log").lines)


async def step(pilot, n: int = 1) -> None:
    app = pilot.app
    target = app.run_.steps + n
    for _ in range(n):
        await pilot.press("full_stop")
    await until(pilot, lambda: app.snapshot.steps >= target, what=f"step {target}")


def close(app: ClipTermApp) -> None:
    app.controller.shutdown()


# ---------------------------------------------------------------------------- layout and panes
async def test_panes_titles_and_status(tmp_path):
    app = make_app(tmp_path / "s")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            assert app.query_one("#prompt-pane").border_title == "Prompt"
            assert app.query_one(ParamsPane).border_title == "Parameters · lane A · unconstrained · pixel"
            assert app.query_one("#frame-0").border_title.startswith("Frame A · unconstrained · step 0 · sim")
            assert app.query_one("#similarity").border_title == "Similarity"
            assert app.query_one("#log").border_title == "Log"
            status = str(app.query_one("#status").render())
            for part in ("s", "shapes-a", "cpu", "paused", "step 0", "steps/s"):
                assert part in status
            assert app.query_one(PromptInput).value == DEFAULT_PROMPT
            assert "new session s on shapes-a (cpu)" in log_text(app)
            assert app.query_one("#image-0").image is not None  # the canvas reached the Frame pane
            await step(pilot, 2)
            assert "step 2" in app.query_one("#frame-0").border_title
            assert "now 0." in str(app.query_one("#numbers-a").render())
            assert len(app.query_one("#spark-a").data) == 2
    finally:
        close(app)


async def test_toggle_lane_changes_frame_and_parameters(tmp_path):
    app = make_app(tmp_path / "s")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await step(pilot, 2)  # the lanes' canvases differ from here on
            frame, image = app.query_one("#frame-0"), app.query_one("#image-0")
            assert frame.lane == "a" and not app.query_one("#frame-1").display
            shown_a = np.asarray(image.image)
            assert np.array_equal(shown_a, app.snapshot.lanes["a"].preview)
            screen_a = screen_rows(app, image)
            await pilot.press("ctrl+t")
            assert app.active == "b"
            await until(pilot, lambda: frame.border_title.startswith("Frame B · constrained"))
            assert frame.lane == "b" and not app.query_one("#frame-1").display
            assert np.array_equal(np.asarray(image.image), app.snapshot.lanes["b"].preview)  # lane B's canvas
            assert not np.array_equal(np.asarray(image.image), shown_a)
            await pilot.pause()
            assert screen_rows(app, image) != screen_a  # and it reached the screen, not just the widget
            assert app.query_one(ParamsPane).border_title == "Parameters · lane B · constrained · pixel"
            assert app.query_one("#sim-b").active and not app.query_one("#sim-a").active  # its letter is marked
            await pilot.press("t")
            assert app.active == "a" and frame.lane == "a"
            await pilot.pause()
            assert screen_rows(app, image) == screen_a
            # in a text field 't' is text, ctrl+t still toggles
            await pilot.press("p", "t")
            assert app.active == "a" and app.query_one(PromptInput).value.endswith("t")
            await pilot.press("ctrl+t")
            assert app.active == "b"
    finally:
        close(app)


async def test_split_view_shows_both_lanes(tmp_path):
    app = make_app(tmp_path / "s")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await pilot.press("vertical_line")
            await until(pilot, lambda: app.query_one("#image-1").image is not None)
            left, right = app.query_one("#frame-0"), app.query_one("#frame-1")
            assert app.split and left.display and right.display and (left.lane, right.lane) == ("a", "b")
            assert left.border_title.startswith("Frame A") and right.border_title.startswith("Frame B")
            assert left.has_class("-active") and not right.has_class("-active")
            await pilot.press("t")  # in the split view the toggle moves the highlight, not the pictures
            assert right.has_class("-active") and not left.has_class("-active") and left.lane == "a"
            await pilot.press("vertical_line")
            assert not app.split and not right.display and left.lane == "b"
    finally:
        close(app)


# ---------------------------------------------------------------------------- edits reach the engine
async def test_layers_pane_shows_probe_rows_of_the_active_lane(tmp_path):
    app = make_app(tmp_path / "s")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            pane = app.query_one(LayersPane)
            assert not pane.display  # hidden by default
            await pilot.press("l")
            assert app.layers and pane.display and pane.border_title.startswith("Layers")
            names = app.run_.engine.probe.names
            assert names[0] == "canvas" and len(names) > 1
            await step(pilot, 1)  # the first step is always probed
            await until(pilot, lambda: len(pane.values()) == len(names), what="layer rows")
            first = pane.values()
            assert [r[0] for r in first] == names
            assert all(len(r) == 6 for r in first)
            assert "step 1" in pane.border_subtitle and "lane A" in pane.border_subtitle
            assert all(np.isfinite(float(v)) for r in first for v in r[1:5])  # numbers, not placeholders
            assert all(len(r[5]) == 1 for r in first)  # one record so far: a one-glyph trend
            await step(pilot, 9)  # the next record: step 10
            await until(pilot, lambda: "step 10" in pane.border_subtitle, what="second probe record")
            second = pane.values()
            assert [r[0] for r in second] == names
            assert second != first
            assert second[0][1:] != first[0][1:]  # the canvas row moved with the canvas
            assert all(len(r[5]) == 2 and set(r[5]) <= set(TREND_GLYPHS) for r in second)
            # the trend is the record's own gradient norms: the newer one is drawn higher iff it is larger
            for r1, r2 in zip(first, second):
                assert (r2[5][1] > r2[5][0]) == (float(r2[4]) > float(r1[4]))
            await pilot.press("ctrl+t")  # the pane follows the active lane
            await until(pilot, lambda: "lane B" in pane.border_subtitle, what="lane B rows")
            assert [r[0] for r in pane.values()] == names
            await pilot.press("vertical_line")  # split view: the side column narrows, every column still fits
            await until(pilot, lambda: app.split, what="split view")
            await pilot.pause(0.2)
            table = pane.query_one("#layer-table")
            assert 0 < table.virtual_size.width <= table.scrollable_content_region.width
            await pilot.press("l")
            assert not app.layers and not pane.display
    finally:
        close(app)


async def test_parameter_edit_reaches_engine_and_invalid_is_refused(tmp_path):
    app = make_app(tmp_path / "s")
    e = app.run_.engine
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            table = app.query_one(ParamTable)
            assert table.has_focus
            await pilot.press("down", "enter")  # row 'lr'
            editor = app.query_one(ParamEditor)
            assert editor.has_focus and editor.value == "0.05"
            await pilot.press(*"1000", "enter")
            err = app.query_one("#param-error")
            assert err.display and "lr must be within" in str(err.render())
            assert e.lanes["a"].spec.value("lr") == 0.05 and editor.has_focus
            await pilot.press("ctrl+u", *"0.2", "enter")
            await until(pilot, lambda: e.lanes["a"].spec.value("lr") == 0.2, what="lr edit")
            assert e.lanes["a"].optimizer.param_groups[0]["lr"] == 0.2
            assert e.lanes["b"].spec.value("lr") == 0.05
            assert e.changes[-1] == {"step": 0, "lane": "a", "key": "lr", "old": 0.05, "new": 0.2}
            await until(pilot, lambda: table.get_value("lr") == "0.2")
            assert table.has_focus and not err.display
            assert "lane A: lr 0.05 → 0.2" in log_text(app)
            # the active lane is the one edited
            await pilot.press("ctrl+t", "down", "down", "enter", "ctrl+u", "4", "enter")  # 'views' of lane B
            await until(pilot, lambda: e.lanes["b"].spec.value("views") == 4, what="views edit on B")
            assert e.lanes["a"].spec.value("views") == 1
            # escape abandons an edit
            await pilot.press("enter", "9", "escape")
            assert table.has_focus and e.lanes["b"].spec.value("views") == 4
            # the preset row takes a preset name
            await pilot.press("home", "ctrl+home", "enter", *"foo", "enter")
            assert "unknown preset 'foo'" in str(err.render())
            await pilot.press("ctrl+u", *"self-guided", "enter")
            await until(pilot, lambda: e.lanes["b"].spec.preset == "self-guided", what="preset edit")
            await until(pilot, lambda: table.has_focus, what="editor closed")
            assert table.get_value("preset") == "self-guided"
            await step(pilot)
            await pilot.press("ctrl+s")
            await until(pilot, lambda: "saved at step 1" in log_text(app))
        s = sess.load(tmp_path / "s", with_arrays=False)
        assert s.lanes["a"].value("lr") == 0.2 and s.lanes["b"].preset == "self-guided"  # a preset resets its values
        assert [c["key"] for c in s.changes] == ["lr", "views", "preset"]
    finally:
        close(app)


async def test_m_flips_preset(tmp_path):
    app = make_app(tmp_path / "s")
    e = app.run_.engine
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await pilot.press("m")
            await until(pilot, lambda: e.lanes["a"].spec.preset == "constrained")
            await until(pilot, lambda: "· constrained ·" in app.query_one("#frame-0").border_title)
            await pilot.press("m")
            await until(pilot, lambda: e.lanes["a"].spec.preset == "unconstrained")
            assert "lane A: preset constrained → unconstrained" in log_text(app)
            await until(pilot, lambda: "· unconstrained ·" in app.query_one("#frame-0").border_title)
    finally:
        close(app)


async def test_m_pressed_twice_at_once_flips_twice(tmp_path):
    """The flip is decided by the worker from the engine's state, not from the (possibly stale) screen."""
    app = make_app(tmp_path / "s")
    e = app.run_.engine
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            for _ in range(3):  # three presses handled before any new snapshot can arrive
                app.action_flip_mode()
            await until(pilot, lambda: log_text(app).count("lane A: preset") == 3, what="three flips")
            assert e.lanes["a"].spec.preset == "constrained"
            flips = [c for c in e.changes if c["key"] == "preset"]
            assert [(c["old"], c["new"]) for c in flips] == [
                ("unconstrained", "constrained"),
                ("constrained", "unconstrained"),
                ("unconstrained", "constrained"),
            ]
    finally:
        close(app)


async def test_prompt_apply_reencodes(tmp_path, shapes_a):
    app = make_app(tmp_path / "s")
    e = app.run_.engine
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await step(pilot)
            before = e.text_features().clone()
            await pilot.press("p")
            field = app.query_one(PromptInput)
            assert field.has_focus
            await pilot.press("ctrl+u", *"a blue square on a white background", "enter")
            await until(pilot, lambda: e.prompt == "a blue square on a white background", what="prompt")
            assert not torch.equal(before, e.text_features())
            assert torch.allclose(e.text_features(), shapes_a.encode_text(["a blue square on a white background"]))
            assert e.lanes["a"].steps == 1  # continues from the current canvas
            assert "prompt: 'a red circle on a black background' → 'a blue square" in log_text(app)
            await pilot.press("ctrl+u", *"nothing:0", "enter")
            assert "weight 0" in str(app.query_one("#prompt-error").render())
            assert e.prompt == "a blue square on a white background"
            await pilot.press("escape")
            assert app.query_one(ParamTable).has_focus
            await pilot.press("t")
            assert app.active == "b"
    finally:
        close(app)


# ---------------------------------------------------------------------------- run control
async def test_space_pauses_and_resumes(tmp_path):
    app = make_app(tmp_path / "s", "--fps", "20")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            assert not app.snapshot.running
            await pilot.press("space")
            await until(pilot, lambda: app.snapshot.running and app.snapshot.steps >= 3, what="running")
            assert "running" in str(app.query_one("#status").render())
            await pilot.press("space")
            await until(pilot, lambda: not app.snapshot.running, what="paused")
            n = app.snapshot.steps
            await asyncio.sleep(0.3)
            assert app.run_.steps == n
            await step(pilot)
            assert app.snapshot.steps == n + 1
    finally:
        close(app)


async def test_ctrl_s_saves(tmp_path):
    app = make_app(tmp_path / "s")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await step(pilot, 2)
            assert sess.load(tmp_path / "s", with_arrays=False).steps == 0
            await pilot.press("ctrl+s")
            await until(pilot, lambda: sess.load(tmp_path / "s", with_arrays=False).steps == 2, what="save")
    finally:
        close(app)


async def test_quit_saves_and_resume_restores_steps_and_lane(tmp_path):
    path = tmp_path / "s"
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await step(pilot, 3)
        await pilot.press("ctrl+t")
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, what="exit")
    close(app)
    assert app.controller.saved_ok
    assert sess.load(path, with_arrays=False).steps == 3
    assert read_ui_state(path) == {"lane": "b", "split": False}
    with sess.SessionLock(path):  # the lock was released
        pass

    again = make_app(path)
    try:
        assert again.run_.steps == 3
        async with again.run_test(size=SIZE) as pilot:
            await started(pilot)
            assert again.snapshot.steps == 3 and again.active == "b"
            assert again.query_one("#frame-0").lane == "b" and not again.query_one("#frame-1").display
            assert again.query_one("#frame-0").border_title.startswith("Frame B")
            assert "step 3" in again.query_one("#frame-0").border_title
            assert "resumed s at step 3" in log_text(again)
    finally:
        close(again)


async def test_ctrl_c_saves_and_quits(tmp_path):
    app = make_app(tmp_path / "s")
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await step(pilot)
        await pilot.press("ctrl+c")
        await until(pilot, lambda: not app.is_running, what="exit")
    close(app)
    assert sess.load(tmp_path / "s", with_arrays=False).steps == 1


async def test_export_png(tmp_path):
    from PIL import Image

    app = make_app(tmp_path / "s")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await step(pilot)
            await pilot.press("e")
            out = tmp_path / "s" / "exports" / "lane-a-step-0000001.png"
            await until(pilot, out.exists, what="export")
            assert Image.open(out).size == (64, 64)
            assert "exported lane A" in log_text(app)
    finally:
        close(app)


async def test_export_refuses_an_exports_folder_that_is_a_symlink(tmp_path):
    """A session handed to you cannot aim the app's exports (e) at another directory."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    app = make_app(tmp_path / "s")
    os.symlink(elsewhere, tmp_path / "s" / "exports")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await step(pilot)
            await pilot.press("e")
            await until(pilot, lambda: "refusing to write exports" in log_text(app), what="the refusal")
            assert list(elsewhere.iterdir()) == []
    finally:
        close(app)


async def test_scrub_through_saved_trajectory(tmp_path):
    app = make_app(tmp_path / "s", "--frame-every", "1")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await step(pilot, 3)  # frames at steps 0..3
            title = app.query_one("#frame-0")
            live = app.query_one("#image-0").image
            await pilot.press("left_square_bracket")
            assert app.scrub == 2 and "step 2 (saved 3/4)" in title.border_title
            await pilot.press("left_square_bracket", "left_square_bracket", "left_square_bracket")
            assert app.scrub == 0 and "step 0 (saved 1/4)" in title.border_title
            assert app.query_one("#image-0").image is not live
            assert "scrubbing" in str(app.query_one("#status").render())
            await pilot.press("e")  # exports the shown (saved) frame, written by the worker
            saved = tmp_path / "s" / "exports" / "lane-a-step-0000000-saved.png"
            await until(pilot, saved.exists, what="saved frame exported")
            for _ in range(4):
                await pilot.press("right_square_bracket")
            assert app.scrub is None and "step 3 · sim" in title.border_title
    finally:
        close(app)


# ---------------------------------------------------------------------------- help, palette, themes
async def test_help_screen_lists_every_key(tmp_path):
    app = make_app(tmp_path / "s")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            keys = [row[0] for row in app.screen.rows]
            for k in (
                "ctrl+t",
                "t",
                "|",
                "m",
                "space",
                "ctrl+s",
                "q",
                "e",
                "[",
                "]",
                "?",
                "l",
                "esc",
                "enter",
                "ctrl+p",
            ):
                assert k in keys
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)
    finally:
        close(app)


async def test_footer_and_palette_reach_every_action(tmp_path):
    app = make_app(tmp_path / "s")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            shown = {key for key, (_, b, enabled, _) in app.screen.active_bindings.items() if b.show and enabled}
            assert {k.key for k in KEYS if k.show} <= shown  # hidden ones (t, ctrl+c) repeat a shown action
            commands = [c.title for c in app.get_system_commands(app.screen)]
            for k in KEYS:
                if k.show:
                    assert any(c.startswith(k.label + ":") for c in commands), k.label
            assert {"Theme: clipterm-midnight", "Theme: clipterm-paper", "Theme: clipterm-phosphor"} <= set(commands)
            await pilot.press("ctrl+p")
            await pilot.press(*"Split: all lanes")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await until(pilot, lambda: app.split, what="split via palette")
    finally:
        close(app)


async def test_theme_is_switchable_and_remembered(tmp_path):
    path = tmp_path / "s"
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        assert app.theme == "clipterm-midnight"
        assert {"clipterm-midnight", "clipterm-paper", "clipterm-phosphor"} <= set(app.available_themes)
        frame_border = app.query_one("#frame-0").styles.border_top[1]
        app.theme = "clipterm-paper"
        await until(pilot, lambda: app.run_.theme == "clipterm-paper", what="theme reaches the run")
        assert app.query_one("#frame-0").styles.border_top[1] != frame_border  # borders follow the theme
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running)
    close(app)
    assert sess.load(path, with_arrays=False).theme == "clipterm-paper"
    again = make_app(path)
    try:
        assert again.theme == "clipterm-paper"
    finally:
        again.run_.close()


# ---------------------------------------------------------------------------- failures
async def test_out_of_memory_in_worker_keeps_app_up(tmp_path, monkeypatch):
    app = make_app(tmp_path / "s")
    run = app.run_
    real = run.step
    calls = {"n": 0}

    def flaky(n: int = 1) -> bool:
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(n)

    monkeypatch.setattr(run, "step", flaky)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await step(pilot)
            await pilot.press("full_stop")
            await until(pilot, lambda: "out of memory" in log_text(app), what="OOM in the log")
            assert any("out of memory" in n.message for n in app._notifications)
            assert "rolled back to the last save (step 0)" in log_text(app)
            assert app.is_running and run.steps == 0
            await pilot.press("down", "down", "down", "enter", "ctrl+u", "2", "enter")  # 'views'
            await until(pilot, lambda: run.engine.lanes["a"].spec.value("views") == 2)
            await step(pilot, 2)
            assert app.snapshot.steps == 2
    finally:
        close(app)


async def test_full_disk_at_autosave_keeps_the_run_going_and_the_next_autosave_retries(tmp_path, monkeypatch):
    from clipterm.session import journal

    app = make_app(tmp_path / "s", "--autosave-steps", "2", "--autosave-seconds", "0")
    real, calls = journal.write_bytes, {"n": 0}

    def full_once(path: Path, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # the first autosave (step 2) runs out of space on its third file
            raise OSError(28, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(journal, "write_bytes", full_once)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await pilot.press("space")  # run
            await until(pilot, lambda: "autosave failed" in log_text(app), what="the failed autosave")
            assert "No space left on device" in log_text(app) and "still running" in log_text(app)
            await until(pilot, lambda: "autosaved at step" in log_text(app), what="the retry")
            assert app.controller.running and "(paused)" not in log_text(app)
            await pilot.press("space")
    finally:
        close(app)
    assert not (tmp_path / "s" / ".pending").exists()
    assert sess.load(tmp_path / "s", with_arrays=False).steps >= 4


def test_a_refused_session_is_one_line_from_the_app(tmp_path, capsys):
    """The app once printed `opening DIR …` and then the refusal: two lines."""
    s = tmp_path / "s"
    s.mkdir()
    (s / "session.toml").write_text("format_version = 2\nsteps = = 1\n")
    code, out, err = cli(capsys, s, *APP_FLAGS)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "TOML syntax error" in lines[0], err


def test_opening_status_on_a_terminal_is_erased_by_the_refusal(tmp_path):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    s = tmp_path / "s"
    s.mkdir()
    (s / "session.toml").write_text("format_version = 2\nsteps = = 1\n")
    term = Terminal()
    with pytest.raises(sess.SessionError):
        build_app(build_app_parser().parse_args([str(s), *APP_FLAGS]), log_stream=term)
    shown = term.getvalue()
    assert shown.startswith("clipterm: opening ") and shown.endswith("\r\x1b[K") and "\n" not in shown


async def test_nan_canvas_rolls_back_to_last_save(tmp_path):
    app = make_app(tmp_path / "s")
    e = app.run_.engine
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await step(pilot, 2)
            await pilot.press("ctrl+s")
            await until(pilot, lambda: "saved at step 2" in log_text(app))
            await step(pilot)
            with torch.no_grad():  # the worker is idle (paused): poison lane A as a diverging lr would
                e.lanes["a"].image.tensors["param"].fill_(float("nan"))
            await pilot.press("full_stop")
            await until(pilot, lambda: "NaN" in log_text(app), what="NaN reported")
            await until(pilot, lambda: "rolled back" in log_text(app))
            assert e.step_count == 2 and torch.isfinite(e.lanes["a"].image.tensors["param"]).all()
            assert app.is_running
            await step(pilot)
            assert np.isfinite(e.lanes["a"].history[:, 0]).all()
    finally:
        close(app)
    assert sess.load(tmp_path / "s", with_arrays=False).steps == 3


# ---------------------------------------------------------------------------- sessions and throttling
async def test_new_session_gets_a_readable_name_and_default_prompt(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = make_app(None)
    try:
        p = app.run_.path
        assert p.parent == Path("sessions") and p.name.endswith("-a-red-circle-on-a-black-background")
        assert app.run_.engine.prompt == DEFAULT_PROMPT
    finally:
        app.run_.close()
    assert slugify("A Red  circle | blue:0.5", max_len=40, fallback="session") == "a-red-circle-blue-0-5"
    import datetime as dt

    t = dt.datetime(2025, 1, 2, 3, 4, 5)
    a = new_session_path("hello world", now=t)
    a.mkdir(parents=True)
    assert a.name == "20250102-030405-hello-world"
    assert new_session_path("hello world", now=t).name == "20250102-030405-hello-world-2"


async def test_single_lane_run(tmp_path):
    app = make_app(tmp_path / "s", lanes="a")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await pilot.press("t", "vertical_line")
            assert app.active == "a" and not app.split
            await step(pilot)
    finally:
        close(app)


def test_frames_are_throttled_to_fps(tmp_path, shapes_a):
    """Flat out, the worker posts at most ~fps snapshots a second (each with a device-side preview)."""
    import threading

    from clipterm.app.controller import Controller, SnapshotReady
    from clipterm.launch import open_run

    args = build_app_parser().parse_args(
        [
            str(tmp_path / "s"),
            "--model",
            "shapes-a",
            "--device",
            "cpu",
            "--prompt",
            "a red circle on a black background",
            "--lanes",
            "ab",
        ]
    )
    run = open_run(args, tmp_path / "s", log=lambda m: None)
    snaps = []

    def post(msg):
        if isinstance(msg, SnapshotReady):
            snaps.append(msg.snapshot)
            ctl.ack()

    ctl = Controller(run, post, fps=4, judge=None)
    t = threading.Thread(target=ctl.loop)
    t.start()
    time.sleep(1.5)
    ctl.shutdown()
    t.join()
    assert 3 <= len(snaps) <= 1.5 * 4 + 2
    assert run.steps > len(snaps)  # more steps than frames: the screen is not a bottleneck
    assert snaps[-1].lanes["a"].preview.shape == (64, 64, 3) and snaps[-1].lanes["a"].preview.dtype == np.uint8


def test_fast_halfcell_draws_exactly_what_textual_image_draws():
    """The cached half-block renderable is a speed-up only: same cells, same colours as textual-image's."""
    from PIL import Image
    from rich.console import Console
    from textual_image.renderable.halfcell import Image as Halfcell

    from clipterm.app.render import FastHalfcell

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    console = Console(width=200, height=100, color_system="truecolor", force_terminal=True)
    for w, h in ((30, "auto"), (17, "auto"), ("auto", 9)):
        opts = console.options.update(width=40, height=20)
        ref = list(console.render(Halfcell(img, w, h), opts))
        fast = FastHalfcell(img, w, h)
        got = list(console.render(fast, opts))
        assert [(s.text, s.style) for s in got] == [(s.text, s.style) for s in ref]
        assert list(console.render(fast, opts)) == got  # cached


async def test_fast_halfcell_widget_draws_what_textual_image_widget_draws():
    """The half-block frame widget's own row drawing (and its picture cache) is a speed-up only: on the
    screen it gives the same cells as textual-image's HalfcellImage widget, for new and repeated images."""
    from PIL import Image
    from textual.app import App
    from textual.containers import Horizontal
    from textual_image.widget import HalfcellImage

    from clipterm.app.render import FastHalfcellImage

    rng = np.random.default_rng(1)
    pics = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(3)]

    class Pair(App):
        CSS = "Horizontal > * { width: auto; height: auto; max-width: 64; max-height: 32; }"

        def compose(self):
            with Horizontal():
                yield FastHalfcellImage(pics[0], id="fast")
                yield HalfcellImage(pics[0], id="ref")

    app = Pair()
    async with app.run_test(size=(140, 40)) as pilot:
        fast, ref = app.query_one("#fast"), app.query_one("#ref")
        for pic in (pics[0], pics[1], pics[2], pics[1], pics[0]):  # new pictures, then cached ones again
            fast.image = pic
            ref.image = pic
            await pilot.pause()
            got, want = screen_rows(app, fast), screen_rows(app, ref)
            assert fast.size == ref.size and len(got) == 32
            assert [[t for t, _ in row] for row in got] == [[t for t, _ in row] for row in want]
            assert got == want


async def test_full_garbage_collections_come_from_the_apps_timer_between_keys(tmp_path):
    """Full collections were the slowest keys' extra 15-30 ms: Python started them while a key's own
    repaint allocated. While the app runs, Python starts none; the app's timer runs them at quiet
    moments, none within `quiet` of a key; once the app ends Python's thresholds are back."""
    import gc

    from clipterm.app.collector import NEVER, QuietCollector

    before = gc.get_threshold()
    full: list[float] = []

    def note(phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(time.monotonic())

    app = make_app(tmp_path / "s")
    app.collector = QuietCollector(every=0.1, quiet=3.0, longest=100.0)
    gc.callbacks.append(note)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            assert gc.get_threshold() == (before[0], before[1], NEVER)
            await until(pilot, lambda: app.collector.collections >= 1, what="a collection before any key")
            await pilot.press("t")
            first_key = time.monotonic()
            done = app.collector.collections
            for _ in range(3):
                await step(pilot, 1)  # the worker steps and frames are drawn: garbage is made
                await pilot.press("t")
            last_key = time.monotonic()
            assert app.collector.collections == done  # the keys' run is never interrupted
            assert not [t for t in full if first_key <= t <= last_key]
            await until(pilot, lambda: app.collector.collections > done, timeout=10, what="quiet again")
    finally:
        gc.callbacks.remove(note)
        close(app)
    assert gc.get_threshold() == before


def test_keep_recent_remembers_the_last_pictures_per_size():
    """The frame caches: a picture shown again (a lane toggled back) reuses what was made for it; the
    same picture at another size (a resize) and a third picture (beyond KEEP) are made anew."""
    from clipterm.app.render import KEEP, keep_recent
    from clipterm.lanespec import MAX_LANES

    cache: dict = {}
    made: list[str] = []

    def get(obj, tag=None):
        return keep_recent(cache, obj, lambda: made.append(f"{obj[0]}@{tag}") or f"{obj[0]}@{tag}", tag, keep=2)

    a, b, c = ["a"], ["b"], ["c"]
    assert get(a) == "a@None" and get(b) == "b@None" and get(a) == "a@None" and made == ["a@None", "b@None"]
    assert get(a, (10, 5)) == "a@(10, 5)" and len(made) == 3  # new size: made again
    assert get(c) == "c@None" and len(cache) == 2  # b was the oldest: evicted
    assert KEEP == MAX_LANES  # the frames keep one picture per lane a run can have
    get(b)
    assert made[-1] == "b@None" and len(made) == 5


async def test_set_line_relayouts_only_when_the_length_changes():
    """Numbers that grow must still wrap onto a second line (relayout), while same-length updates
    (every snapshot) repaint without one."""
    from textual.app import App
    from textual.widgets import Static

    from clipterm.app.widgets import set_line

    class One(App):
        CSS = "Static { width: 20; height: auto; }"

        def compose(self):
            yield Static("now .951 best .953", id="n")

    app = One()
    async with app.run_test(size=(40, 10)) as pilot:
        n = app.query_one("#n")
        await pilot.pause()
        assert n.size.height == 1
        layouts = []
        real = n.refresh
        n.refresh = lambda *a, **k: (layouts.append(k.get("layout", False)), real(*a, **k))[1]
        set_line(n, "now .952 best .953")  # same length: repaint only
        set_line(n, "now .952 best .953")  # unchanged: nothing at all
        assert layouts == [False]
        set_line(n, "now .952 best .953 rob .040 #14")  # longer: wraps, needs the relayout
        assert layouts == [False, True]
        await pilot.pause()
        assert n.size.height == 2 and "#14" in str(n.render())


async def test_judge_scores_are_shown(tmp_path, monkeypatch, shapes_a, shapes_c):
    """The held-out judge (shapes-c, the default) ranks the prompt for every lane; the Similarity pane names
    it with its rank."""
    import clipterm.models

    monkeypatch.setattr(
        clipterm.models,
        "load_model",
        lambda name, pretrained=None, device="auto": shapes_c if name == "shapes-c" else shapes_a,
    )
    argv = [str(tmp_path / "s"), "--model", "shapes-a", "--device", "cpu", "--paused", "--render", "halfcell"]
    app = build_app(build_app_parser().parse_args(argv))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            assert app.lanes == tuple(DEFAULT_LANES)  # no lane flags: the default lanes, judged alike
            for lane in app.lanes:
                j = app.snapshot.lanes[lane].judge
                assert j is not None and j.judge == "shapes-c" and 1 <= j.rank <= j.of == 24  # a base caption
                assert f"judge shapes-c #{j.rank}/24" in str(app.query_one(f"#numbers-{lane}").render())
            assert "judge: shapes-c ranks" in log_text(app)
    finally:
        close(app)


async def test_judge_line_ranks_among_the_chosen_labels(tmp_path, monkeypatch, shapes_a, shapes_b):
    """`--judge shapes-b --labels FILE`: the Similarity pane's judge line counts the file's labels plus the
    prompt (not one of them), and the log names the labels."""
    import clipterm.models

    monkeypatch.setattr(
        clipterm.models,
        "load_model",
        lambda name, pretrained=None, device="auto": shapes_b if name == "shapes-b" else shapes_a,
    )
    labels = tmp_path / "labels.txt"
    labels.write_text("a blue square on a white background\na green circle\n")
    argv = [str(tmp_path / "s"), "--model", "shapes-a", "--device", "cpu", "--paused", "--render", "halfcell"]
    app = build_app(build_app_parser().parse_args([*argv, "--judge", "shapes-b", "--labels", str(labels)]))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            for lane in app.lanes:
                j = app.snapshot.lanes[lane].judge
                assert j is not None and j.judge == "shapes-b" and 1 <= j.rank <= j.of == 3
                assert f"judge shapes-b #{j.rank}/3" in str(app.query_one(f"#numbers-{lane}").render())
            assert "judge: shapes-b ranks the 2 labels of" in log_text(app)
    finally:
        close(app)


async def test_app_starts_a_new_session_from_a_picture(tmp_path, monkeypatch):
    """`clipterm --init PHOTO`: the app's lanes start from the picture; the log gives each lane's fit error."""
    from PIL import Image

    from clipterm import shapes

    monkeypatch.chdir(tmp_path)  # a short name: the log pane wraps long lines
    photo = Path("red.png")
    Image.fromarray(shapes.render("red", "circle", "black", 15, 30, 30)).save(photo)
    app = make_app(Path("s"), "--init", str(photo), "--prompt", "a blue square on a white background")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            for lane in ("a", "b"):
                assert f"lane {lane}: init from {photo}, fit error 0.0000 (max abs)" in log_text(app)
                shown = app.run_.engine.shown(lane)
                assert np.abs(shown - np.asarray(Image.open(photo), np.float32).transpose(2, 0, 1) / 255).max() < 1e-6
    finally:
        close(app)


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--judge", "NoSuchNet-7"], "unknown model"),
        (["--judge", "shapes-c", "--labels", "EMPTY"], "has no labels"),
        (["--judge", "shapes-c", "--labels", "nonsense"], "not 'shapes', 'imagenet'"),
    ],
)
def test_app_refuses_a_bad_judge_before_the_session_exists(tmp_path, capsys, flags, needle):
    (tmp_path / "empty.txt").write_text("\n# no labels\n")
    flags = [str(tmp_path / "empty.txt") if f == "EMPTY" else f for f in flags]
    s = tmp_path / "s"
    code, _, err = cli(capsys, s, "--model", "shapes-a", "--device", "cpu", "--prompt", "a red circle", *flags)
    assert code == 2 and [needle in line for line in err.strip().splitlines()] == [True] and not s.exists(), err


async def test_keys_typed_in_a_burst_follow_the_focus(tmp_path):
    """'p' moves the focus before the next key is routed: a burst 'p','q','t' types "qt", it does not quit."""
    from textual import events

    app = make_app(tmp_path / "s")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            for ch in "pqt":
                app.post_message(events.Key(ch, ch))
            await pilot.pause(0.3)
            assert app.is_running and app.active == "a"
            assert app.query_one(PromptInput).value == "qt"
    finally:
        close(app)


async def test_value_typed_in_a_burst_after_enter_lands_in_the_editor(tmp_path):
    """Enter on a parameter row moves the focus before the next key is routed: a burst (a paste, a fast
    typist, tmux send-keys) of down, enter, '0.02', enter sets lr (the field opens with its value
    selected, so typing replaces it); the '.' does not step the run."""
    from textual import events

    app = make_app(tmp_path / "s")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            for key, ch in [
                ("down", None),
                ("enter", "\r"),
                ("0", "0"),
                ("full_stop", "."),
                ("0", "0"),
                ("2", "2"),
                ("enter", "\r"),
            ]:
                app.post_message(events.Key(key, ch))
            await until(pilot, lambda: app.run_.engine.lanes["a"].spec.value("lr") == 0.02, what="lr edit applied")
            await pilot.pause(0.2)
            assert app.snapshot.steps == 0 and app.active == "a"  # the '.' was text, not 'step once'
            assert not app.query_one(ParamsPane).editing
    finally:
        close(app)


def burst(app, keys: list[str]) -> None:
    """Post keys to the app at once, as a paste or tmux send-keys delivers them (no await between)."""
    from textual import events

    chars = {"full_stop": ".", "space": " ", "enter": "\r", "backspace": "\x7f"}
    for key in keys:
        app.post_message(events.Key(key, chars.get(key, key if len(key) == 1 else None)))


async def test_a_20_key_burst_with_edit_keys_arrives_complete_in_the_editor(tmp_path):
    """Backspaces and cursor moves are the field's bindings, which Textual runs only after the key
    bubbles up to the app, while characters are inserted at once: in a burst the digits came before
    the backspaces that preceded them (lr went to '' and was refused). 21 keys while optimizing."""
    app = make_app(tmp_path / "s")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            keys = ["down", "enter", *["backspace"] * 10, "0", "full_stop", "1", "5", "left", "left", "0"]
            burst(app, [*keys, "end", "enter"])
            await until(pilot, lambda: app.run_.engine.lanes["a"].spec.value("lr") == 0.015, what="lr 0.015")
            assert not app.query_one("#param-error").display
    finally:
        close(app)


async def test_a_burst_into_the_prompt_arrives_complete(tmp_path):
    """p, end, ctrl+u, a typo fixed by backspace, enter: 20 keys at once give exactly the typed prompt."""
    app = make_app(tmp_path / "s")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            burst(app, ["p", "end", "ctrl+u", *"a blue squarx", "backspace", "e", "home", "delete", "A", "enter"])
            await until(pilot, lambda: app.run_.engine.prompt == "A blue square", what="the typed prompt")
    finally:
        close(app)


async def test_the_worker_gives_way_while_the_ui_handles_a_key(tmp_path):
    """give_way holds new steps back (the one in flight may finish) until resume; a key asks for it and
    the screen's refresh after the key gives the worker back its turn."""
    app = make_app(tmp_path / "s")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            c = app.controller
            await pilot.press("space")  # the tests' apps start paused
            await until(pilot, lambda: app.run_.steps >= 2, what="running")
            c.give_way(30.0)
            await pilot.pause(0.1)
            held = app.run_.steps
            await pilot.pause(0.5)
            assert app.run_.steps <= held + 1  # at most the step that was in flight
            c.resume()
            await until(pilot, lambda: app.run_.steps >= held + 3, what="steps again after resume")
            await pilot.press("t")  # a key gives way, and its redraw resumes the worker
            await until(pilot, lambda: app.run_.steps >= held + 6, what="steps again after a key")
            assert app.active == "b"
    finally:
        close(app)


async def test_the_frame_keeps_cells_for_the_newest_picture_of_each_lane_only(tmp_path):
    """Cells are ~10,000 objects a picture that every full garbage collection walks (those collections
    were the slowest keys' extra 30 ms), so a lane's older pictures are dropped when a newer one comes:
    after many steps and toggles with two lanes, at most one picture per lane (plus the one on screen,
    until it is replaced) is kept, not the last eight."""
    app = make_app(tmp_path / "s")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            image = app.query_one("#image-0")
            for _ in range(6):
                await step(pilot, 1)
                await pilot.pause(0.15)  # drawn, then the next lane's cells made
                await pilot.press("t")
                await pilot.pause(0.1)
            assert app.frames_shown >= 6
            assert 1 <= image.cached <= 3
    finally:
        close(app)


async def test_the_next_lanes_cells_are_made_before_its_toggle(tmp_path, monkeypatch):
    """After a snapshot is drawn the app makes the cells of the lane `t` shows next, so the toggle
    itself builds no picture (that cost ~10 ms of the key's time on a busy box)."""
    from clipterm.app import render

    app = make_app(tmp_path / "s")
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await step(pilot, 2)
            await pilot.pause(0.3)  # the snapshot is drawn, then the next lane's cells are made
            made: list[int] = []
            real = render.halfcell_segments
            monkeypatch.setattr(render, "halfcell_segments", lambda img: made.append(1) or real(img))
            await pilot.press("t")
            await pilot.pause(0.2)
            assert app.active == "b" and app.query_one("#image-0").image is not None
            assert made == []
    finally:
        close(app)


@pytest.mark.parametrize("render", ["unicode", "sixel", "kitty", "auto"])
async def test_every_renderer_shows_the_frame(tmp_path, render):
    """--render forces textual-image's Unicode, Sixel or Kitty (TGP) widget; none of them breaks the app."""
    app = make_app(tmp_path / "s", "--render", render)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await started(pilot)
            await pilot.pause(0.2)
            assert app.query_one("#image-0").image is not None
            await pilot.press("t")
            assert app.active == "b"
    finally:
        close(app)


def test_trend_text_scales_each_row_to_its_own_range():
    assert trend_text((1.0, 2.0, 3.0)) == "▁▅█"
    assert trend_text((5.0, 5.0)) == "▄▄"  # flat: mid height, not a bogus rise
    assert trend_text((float("nan"), 0.0, 10.0)) == "·▁█"
    assert trend_text((float("inf"),)) == "·"
    assert trend_text(()) == ""


async def test_refused_prompt_survives_leaving_the_field(tmp_path):
    """A refused prompt keeps its text and its reason after esc and later snapshots (no silent revert)."""
    app = make_app(tmp_path / "s")
    e = app.run_.engine
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            live = e.prompt
            await pilot.press("p", "end", "ctrl+u", *"a cat | :2", "enter")
            field, reason = app.query_one(PromptInput), app.query_one("#prompt-error")
            await until(pilot, lambda: reason.display, what="the refusal")
            await pilot.press("escape")
            await step(pilot, 2)  # new snapshots arrive while the field is left
            assert field.value == "a cat | :2" and reason.display and "empty prompt term" in str(reason.render())
            assert e.prompt == live
            await pilot.press("p", "end", "ctrl+u", *"a cat", "enter")  # fixed: applied, reason gone
            await until(pilot, lambda: e.prompt == "a cat", what="the fixed prompt")
            assert not reason.display
    finally:
        close(app)


async def test_prompt_field_refuses_control_characters(tmp_path):
    """A prompt pasted with escape sequences is refused by the field (parse_prompt), never applied."""
    app = make_app(tmp_path / "s")
    e = app.run_.engine
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            live = e.prompt
            app.query_one(PromptPane).post_message(PromptPane.Submitted("a red\x1b[31m circle\x07"))
            reason = app.query_one("#prompt-error")
            await until(pilot, lambda: reason.display, what="the refusal")
            assert "control character (\\x1b)" in str(reason.render())
            await step(pilot, 1)
            assert e.prompt == live
    finally:
        close(app)


# ---------------------------------------------------------------------------- many lanes, old sessions
async def test_a_new_session_shows_the_default_lanes(tmp_path):
    """No lane flags: lanes a, b and c with the DEFAULT_LANES presets, each reachable with t."""
    app = make_app(tmp_path / "s", lanes=None)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            assert app.lanes == ("a", "b", "c") == tuple(DEFAULT_LANES)
            assert {n: v.spec.preset for n, v in app.snapshot.lanes.items()} == DEFAULT_LANES
            await pilot.press("t", "t")
            assert app.active == "c"
            best = DEFAULT_LANES["c"]
            await until(pilot, lambda: app.query_one("#frame-0").border_title.startswith(f"Frame C · {best} · step 0"))
            assert app.query_one(ParamsPane).border_title.startswith(f"Parameters · lane C · {best}")
            table = app.query_one(ParamTable)  # the preset row shows the whole name, not its first 14 letters
            await until(pilot, lambda: table.get_value("preset") == best, what="lane C's rows")
            row = table.render_line(1 + table.keys.index("preset")).text
            assert f" {best} " in row and row.index(best) < row.index("presets"), row
            assert app.query_one("#numbers-c").display and app.query_one("#spark-c") is not None  # Similarity
            await pilot.press("t")
            assert app.active == "a"  # three lanes: the cycle wraps after c
    finally:
        close(app)


FIVE = ["--lane", "c=constrained,param=fourier", "--lane", "d=constrained,param=pyramid", "--lane", "e=self-guided"]


async def test_five_lanes_cycle_jump_and_show_a_grid_in_pages(tmp_path):
    app = make_app(tmp_path / "s", *FIVE)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            assert app.lanes == ("a", "b", "c", "d", "e") and app.active == "a"
            await pilot.press("t", "t")
            assert app.active == "c"
            await until(pilot, lambda: "fourier" in app.query_one(ParamsPane).border_title, what="params follow")
            assert "spectrum" not in app.query_one(ParamTable).keys  # live settings only, no tensors
            await pilot.press("5")
            assert app.active == "e"
            await pilot.press("t")
            assert app.active == "a"  # the cycle wraps
            await pilot.press("9")  # no lane 9: a warning, nothing changes
            assert app.active == "a"
            await pilot.press("vertical_line")
            frames = list(app.query("FrameView"))
            assert len(frames) == 4 and app.query_one("#frames").has_class("-grid")
            await until(pilot, lambda: [f.lane for f in frames] == ["a", "b", "c", "d"], what="page 1")
            assert all(f.display for f in frames)
            await pilot.press("5")  # the grid turns to the active lane's page
            await until(pilot, lambda: frames[0].lane == "e", what="page 2")
            assert frames[0].display and not any(f.display for f in frames[1:])
            assert "page 2/2" in str(app.query_one("#status").render())
    finally:
        close(app)


async def test_a_format_1_session_opens_shows_and_resumes_in_the_app(tmp_path):
    import shutil

    path = tmp_path / "v1"
    shutil.copytree(Path(__file__).parent / "fixtures" / "v1-session", path)
    app = make_app(path, lanes=None)  # as opened before lane c was a default lane: no --lanes
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            assert app.lanes == ("a", "b") and app.snapshot.steps == 20
            assert app.snapshot.lanes["a"].preview is not None
            assert app.query_one("#frame-0").border_title.startswith("Frame A · unconstrained · step 20")
            await step(pilot, 2)
            await pilot.press("ctrl+s")
            await until(pilot, lambda: "saved at step 22" in log_text(app))
    finally:
        close(app)
    s = sess.load(path)
    assert s.steps == 22 and s.lanes["b"].value("views") == 2
    assert sess.read_toml(path)["format_version"] == sess.FORMAT_VERSION == 2
