"""`clipterm export`: real PNG/GIF files of the expected sizes and content, and one-line errors."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageSequence
from sessionkit import cli as run_main
from sessionkit import edit_toml, make_run, snapshot

from clipterm import export as ex
from clipterm import session as sess

PROMPT = "a yellow circle on a black background"


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "s"
    return make_run(path, "--frame-every", "2", "--eval-every", "4", "--quiet", prompt=PROMPT, steps=8)


@pytest.fixture(scope="module")
def one_lane(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("export1") / "s", "--lanes", "b", "--quiet", prompt=PROMPT, steps=2)


def test_png_native_and_upscaled(session, tmp_path, capsys):
    out = tmp_path / "a.png"
    code, stdout, err = run_main(capsys, "export", session, "--lane", "a", "--format", "png", "--out", out)
    assert code == 0, err
    big = tmp_path / "a-x8.png"
    assert stdout.split() == [str(out), str(big)]
    native, up = Image.open(out), Image.open(big)
    assert native.format == "PNG" and native.size == (64, 64)
    assert up.format == "PNG" and up.size == (512, 512)
    final = np.asarray(Image.open(session / "lane-a" / "final.png"))
    assert np.array_equal(np.asarray(native), final)
    up_arr = np.asarray(up)
    assert np.array_equal(up_arr[::8, ::8], final) and np.array_equal(up_arr[7::8, 7::8], final)  # NEAREST


def test_gif_is_the_trajectory(session, tmp_path, capsys):
    out = tmp_path / "b.gif"
    code, _, err = run_main(capsys, "export", session, "--lane", "b", "--format", "gif", "--out", out, "--scale", "2")
    assert code == 0, err
    frames = sess.load(session).frames["b"][0]
    assert len(frames) == 5  # steps 0, 2, 4, 6, 8
    gif = Image.open(out)
    assert gif.format == "GIF" and gif.size == (128, 128) and gif.info.get("loop") == 0
    shown = [np.asarray(f.convert("RGB"), dtype=np.float32) for f in ImageSequence.Iterator(gif)]
    assert len(shown) == len(frames)
    for got, want in zip(shown, frames):  # a GIF has a 256-colour palette: close, not exact
        assert np.abs(got[::2, ::2] - want.astype(np.float32)).mean() < 12


def test_contact_sheet_has_both_lanes_and_text(session, tmp_path, capsys):
    out = tmp_path / "sheet.png"
    code, _, err = run_main(capsys, "export", session, "--format", "sheet", "--out", out)
    assert code == 0, err
    sheet = Image.open(out)
    assert sheet.format == "PNG" and sheet.size == ex.sheet_size(2, 256) == (548, 406)
    arr = np.asarray(sheet.convert("RGB"))
    top = ex.MARGIN + ex.HEADER_LINES * ex.LINE + ex.MARGIN
    for i, lane in enumerate("ab"):
        x = ex.MARGIN + i * (256 + ex.MARGIN)
        panel = arr[top : top + 256, x : x + 256]
        final = np.asarray(Image.open(session / f"lane-{lane}" / "final.png"))
        assert np.array_equal(panel[::4, ::4], final)
        footer = arr[top + 256 :, x : x + 256]
        assert (footer.max(axis=2) > 150).sum() > 100  # scores written under the panel
    header = arr[: top - ex.MARGIN]
    assert (header.max(axis=2) > 150).sum() > 200  # the prompt and step line


def test_sheet_text_is_drawn_from_the_session():
    s_hist = np.array([[0.5, 0, 0, 0, 0, 0], [0.6125, 0, 0, 0, 0, 0]], np.float32)
    evals = np.array([[1, 0.25, 0.375]], np.float32)
    lines = ex._lane_scores({"history": s_hist, "evals": evals}, steps=2)
    assert lines == ["own 0.6125", "robust 0.2500  verified 0.3750  (@1)"]


def test_one_lane_sheet(one_lane, tmp_path, capsys):
    out = tmp_path / "one.png"
    code, _, err = run_main(capsys, "export", one_lane, "--format", "sheet", "--out", out, "--scale", "3")
    assert code == 0, err
    assert Image.open(out).size == ex.sheet_size(1, 192)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--lane", "c"], "has no lane c (lanes: a, b)"),
        (["--format", "jpeg"], "unknown export format"),
        (["--format", "png", "--scale", "0"], "--scale"),
    ],
)
def test_bad_options_one_line_exit_2(session, tmp_path, capsys, args, needle):
    code, _, err = run_main(capsys, "export", session, "--out", tmp_path / "x.png", *args)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_bad_inputs_one_line_exit_2(session, one_lane, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    cases = [
        ([one_lane, "--lane", "a", "--out", tmp_path / "x.png"], "has no lane a"),
        ([tmp_path / "missing", "--out", tmp_path / "x.png"], "missing"),
        ([tmp_path / "empty", "--out", tmp_path / "x.png"], "not a clipterm session"),
        ([session, "--out", tmp_path], "is a directory"),
        ([session, "--out", tmp_path / "file" / "x.png"], "cannot"),
        ([session, "--format", "gif", "--out", tmp_path / "file" / "x.gif"], "cannot"),
    ]
    for argv, needle in cases:
        code, _, err = run_main(capsys, "export", *argv)
        assert code == 2, argv
        assert needle in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_sheet_text_with_controls_is_one_escaped_line():
    """Pillow cannot measure a newline; a sheet's text is drawn as one line with controls escaped."""
    draw = ImageDraw.Draw(Image.new("RGB", (200, 20)))
    text = ex._fit(draw, "a red\x1b[31m circle\r\nline2", ex._font(), 2000)
    assert text == "a red\\x1b[31m circle\\x0d\\x0aline2"
    assert ex._fit(draw, "a\nb" * 50, ex._font(), 100).endswith("…")


def test_sheet_of_a_session_whose_prompt_holds_a_newline_is_refused_in_one_line(session, tmp_path, capsys):
    s = tmp_path / "s"
    shutil.copytree(session, s)
    edit_toml(s, lambda d: d.__setitem__("prompt", "a red circle\nline2"))
    code, _, err = run_main(capsys, "export", s, "--format", "sheet", "--out", tmp_path / "sheet.png")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "control character (\\x0a)" in lines[0], err
    assert not (tmp_path / "sheet.png").exists()


def test_out_that_is_or_lies_in_a_session_is_refused(session, tmp_path, capsys):
    """`--out S/session.toml` once replaced the session's own file with a PNG (exit 0)."""
    s = tmp_path / "s"
    shutil.copytree(session, s)
    os.symlink(s / "session.toml", tmp_path / "link.png")
    (tmp_path / "starting").mkdir()  # a start-up killed before its first save holds only its recipe
    (tmp_path / "starting" / "recipe.toml").write_text("recipe_version = 1\n")
    before = snapshot(tmp_path)
    starting = tmp_path / "starting"
    cases = [
        ("png", s / "session.toml", s),
        ("png", s / "lane-a" / "image.npy", s),
        ("png", s / "lane-a" / "new.png", s),
        ("gif", s / "frames" / "lane-a.npy", s),
        ("sheet", s / "notes" / "sheet.png", s),  # not even a new folder in it
        ("png", tmp_path / "link.png", s),  # a symlink to a session file
        ("png", starting / "recipe.toml", starting),
    ]
    for fmt, out, where in cases:
        code, stdout, err = run_main(capsys, "export", s, "--format", fmt, "--out", out)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and f"lies inside the session {where}" in lines[0], (out, err)
        assert not stdout
    assert snapshot(tmp_path) == before
    assert sess.load(s).steps == 8


def test_out_hard_linked_to_a_session_file_is_replaced_not_written_through(session, tmp_path, capsys):
    s = tmp_path / "s"
    shutil.copytree(session, s)
    os.link(s / "session.toml", tmp_path / "x.png")
    before = snapshot(s)
    code, _, err = run_main(capsys, "export", s, "--format", "png", "--out", tmp_path / "x.png")
    assert code == 0, err
    assert Image.open(tmp_path / "x.png").format == "PNG"
    assert snapshot(s) == before and sess.load(s).steps == 8
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary left beside it
