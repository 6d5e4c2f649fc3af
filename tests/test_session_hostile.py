"""Damaged and hostile sessions: each is refused with exit code 2 and one line naming the file and
the problem, runs no code, and leaves every file (the session and anything it points at)
byte-identical, for `clipterm run` (resume) and `clipterm info` alike."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.lib.format as npformat
import pytest
from sessionkit import (
    PROMPT,
    RUN_FLAGS,
    cli,
    clipterm,
    edit_toml,
    get_npy,
    npy_bytes,
    put_bytes,
    put_npy,
    snapshot,
)

from clipterm.text import printable


@pytest.fixture(scope="module")
def base_session(tmp_path_factory) -> Path:
    """One valid 10-step session (both lanes, evals, frames, probes); each case edits a copy."""
    path = tmp_path_factory.mktemp("base") / "s"
    assert cli_plain("run", path, "--steps", "10", *RUN_FLAGS) == 0
    return path


def cli_plain(*argv: object) -> int:
    from clipterm.cli import main

    return main([str(a) for a in argv])


class Evil:
    """Unpickling this would create a file: proof that no pickle is ever loaded."""

    marker: Path = Path("/nonexistent")

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# ---------------------------------------------------------------------------- the cases
def _empty(s: Path, out: Path) -> None:
    put_bytes(s, "lane-a/image.npy", b"")


def _truncated(s: Path, out: Path) -> None:
    data = (s / "lane-a/param.npy").read_bytes()
    put_bytes(s, "lane-a/param.npy", data[: len(data) // 2])


def _truncated_header(s: Path, out: Path) -> None:
    put_bytes(s, "lane-b/best.npy", (s / "lane-b/best.npy").read_bytes()[:30])


def _trailing_bytes(s: Path, out: Path) -> None:
    put_bytes(s, "lane-b/history.npy", (s / "lane-b/history.npy").read_bytes() + b"\0" * 24)


def _huge_header_shape(s: Path, out: Path) -> None:
    """A header promising 120 GB over 64 bytes: refused before any allocation."""
    buf = io.BytesIO()
    npformat.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (3, 100000, 100000)})
    put_bytes(s, "lane-a/best.npy", buf.getvalue() + b"\0" * 64)


def _wrong_dtype(s: Path, out: Path) -> None:
    put_npy(s, "lane-a/image.npy", get_npy(s, "lane-a/image.npy").astype(np.float64))


def _wrong_dtype_rng(s: Path, out: Path) -> None:
    put_npy(s, "lane-b/rng.npy", get_npy(s, "lane-b/rng.npy").astype(np.int64))


def _wrong_shape_canvas(s: Path, out: Path) -> None:
    put_npy(s, "lane-a/param.npy", get_npy(s, "lane-a/param.npy")[:, :32, :32].copy())


def _wrong_shape_history(s: Path, out: Path) -> None:
    put_npy(s, "lane-b/history.npy", get_npy(s, "lane-b/history.npy")[:, :4].copy())


def _history_rows(s: Path, out: Path) -> None:
    put_npy(s, "lane-a/history.npy", get_npy(s, "lane-a/history.npy")[:-1].copy())


def _object_array(s: Path, out: Path) -> None:
    Evil.marker = out / "pwned"
    arr = np.empty((1, 3), dtype=object)
    arr[0, 0] = Evil()
    put_bytes(s, "lane-a/evals.npy", npy_bytes(arr, allow_pickle=True))


def _nan_canvas(s: Path, out: Path) -> None:
    p = get_npy(s, "lane-a/param.npy")
    p[1, 5, 7] = np.nan
    put_npy(s, "lane-a/param.npy", p)


def _inf_image(s: Path, out: Path) -> None:
    p = get_npy(s, "lane-b/image.npy")
    p[0, 0, 0] = np.inf
    put_npy(s, "lane-b/image.npy", p)


def _image_range(s: Path, out: Path) -> None:
    put_npy(s, "lane-a/image.npy", get_npy(s, "lane-a/image.npy") * 3 - 1)


def _toml_syntax(s: Path, out: Path) -> None:
    with open(s / "session.toml", "a") as f:
        f.write("\nsteps = = 3\n")


def _toml_not_utf8(s: Path, out: Path) -> None:
    (s / "session.toml").write_bytes(b'prompt = "\xff\xfe"\n')


def _toml_too_large(s: Path, out: Path) -> None:
    with open(s / "session.toml", "a") as f:
        f.write("# padding\n" * 500_000)


def _missing_key(s: Path, out: Path) -> None:
    edit_toml(s, lambda d: d.pop("steps"))


def _mistyped_key(s: Path, out: Path) -> None:
    edit_toml(s, lambda d: d.__setitem__("seed", "zero"))


def _mistyped_param(s: Path, out: Path) -> None:
    edit_toml(s, lambda d: d["lanes"]["a"]["optim"].__setitem__("lr", "fast"))


def _preset_not_string(s: Path, out: Path) -> None:
    edit_toml(s, lambda d: d["lanes"]["b"].__setitem__("preset", [1, 2]))


def _unknown_lane(s: Path, out: Path) -> None:
    edit_toml(s, lambda d: d["lanes"].__setitem__("c", {**d["lanes"]["a"], "dir": "lane-c"}))


def _unknown_part(s: Path, out: Path) -> None:
    edit_toml(s, lambda d: d["lanes"]["b"]["transforms"][0].__setitem__("kind", "swirl"))


def _unknown_field(s: Path, out: Path) -> None:
    edit_toml(s, lambda d: d["lanes"]["b"]["param"].__setitem__("sharpness", 2.0))


def _bad_lane_name(s: Path, out: Path) -> None:
    edit_toml(s, lambda d: d["lanes"].__setitem__("../x", d["lanes"].pop("b")))


def _summary_not_number(s: Path, out: Path) -> None:
    edit_toml(s, lambda d: d["lanes"]["a"].__setitem__("last_similarity", "high"))


def _change_in_future(s: Path, out: Path) -> None:
    edit_toml(
        s, lambda d: d.__setitem__("changes", [{"step": 999, "lane": "*", "key": "prompt", "old": "", "new": "x"}])
    )


def _future_version(s: Path, out: Path) -> None:
    edit_toml(s, lambda d: d.__setitem__("format_version", 99))


def _negative_steps(s: Path, out: Path) -> None:
    edit_toml(s, lambda d: d.__setitem__("steps", -5))


def _huge_steps(s: Path, out: Path) -> None:
    edit_toml(s, lambda d: d.__setitem__("steps", 10**15))


def _files_table_missing(s: Path, out: Path) -> None:
    edit_toml(s, lambda d: d.pop("files"))


def _file_sha_mismatch(s: Path, out: Path) -> None:
    p = get_npy(s, "lane-a/param.npy")
    p[0, 0, 0] = np.float32(0.123)  # plausible, finite: only the recorded sha256 can tell
    put_npy(s, "lane-a/param.npy", p, rehash=False)


def _checkpoint_sha_mismatch(s: Path, out: Path) -> None:
    edit_toml(s, lambda d: d["model"].__setitem__("sha256", "0" * 64))


def _lane_dir_outside(s: Path, out: Path) -> None:
    shutil.copytree(s / "lane-a", out / "lane-a")
    edit_toml(s, lambda d: d["lanes"]["a"].__setitem__("dir", "../outside/lane-a"))


def _lane_dir_symlink(s: Path, out: Path) -> None:
    shutil.move(s / "lane-a", out / "lane-a")
    os.symlink(out / "lane-a", s / "lane-a")


def _file_symlink(s: Path, out: Path) -> None:
    shutil.copy(s / "lane-b/param.npy", out / "param.npy")
    (s / "lane-b/param.npy").unlink()
    os.symlink(out / "param.npy", s / "lane-b/param.npy")


def _toml_symlink(s: Path, out: Path) -> None:
    shutil.move(s / "session.toml", out / "session.toml")
    os.symlink(out / "session.toml", s / "session.toml")


def _journal_escape(s: Path, out: Path) -> None:
    (s / ".pending").mkdir()
    (s / ".pending" / "..__outside__x.npy").write_bytes(b"x")
    (s / ".pending" / "COMPLETE").write_text("session.toml\n../outside/x.npy\n")


def _journal_symlink(s: Path, out: Path) -> None:
    (out / "journal").mkdir()
    os.symlink(out / "journal", s / ".pending")


def _opt_step_fraction(s: Path, out: Path) -> None:
    put_npy(s, "lane-a/opt_step.npy", np.array(3.5, np.float32))


def _negative_moments(s: Path, out: Path) -> None:
    put_npy(s, "lane-b/opt_exp_avg_sq.npy", -np.ones((3, 64, 64), np.float32))


def _bad_rng(s: Path, out: Path) -> None:
    put_npy(s, "lane-a/rng.npy", np.zeros(100, np.uint8))


def _frames_shape(s: Path, out: Path) -> None:
    put_npy(s, "frames/lane-a.npy", get_npy(s, "frames/lane-a.npy")[:, :32, :32].copy())


def _missing_file(s: Path, out: Path) -> None:
    (s / "lane-b/opt_step.npy").unlink()


def _fifo(s: Path, out: Path) -> None:
    (s / "lane-a/best_loss.npy").unlink()
    os.mkfifo(s / "lane-a/best_loss.npy")


def _prompt_escapes(s: Path, out: Path) -> None:
    edit_toml(s, lambda d: d.__setitem__("prompt", "a red\x1b[31m circle\x07\r\nline2"))


def _prompt_only_controls(s: Path, out: Path) -> None:
    edit_toml(s, lambda d: d.__setitem__("prompt", "\x01\x02\x1b"))


def _prompt_nul(s: Path, out: Path) -> None:
    edit_toml(s, lambda d: d.__setitem__("prompt", "a red\x00 circle"))


def _change_escapes(s: Path, out: Path) -> None:
    change = {"step": 1, "lane": "*", "key": "prompt", "old": "a", "new": "x\x1b]0;pwned\x07"}
    edit_toml(s, lambda d: d.__setitem__("changes", [change]))


def _model_name_c1(s: Path, out: Path) -> None:
    edit_toml(s, lambda d: d["model"].__setitem__("name", "shapes-a\x9b2J"))


def _unknown_top_level_key(s: Path, out: Path) -> None:
    """The next save would silently drop it, so it is refused instead."""
    edit_toml(s, lambda d: d.__setitem__("notes", "mine"))


def _wrong_shape_image(s: Path, out: Path) -> None:
    put_npy(s, "lane-a/image.npy", get_npy(s, "lane-a/image.npy")[:, :32, :32].copy())


def _wrong_shape_image_and_best(s: Path, out: Path) -> None:
    """Once reported as param.npy (the first array that disagreed with the damaged ones)."""
    for rel in ("lane-a/image.npy", "lane-a/best.npy"):
        put_npy(s, rel, get_npy(s, rel)[:, :32, :32].copy())


def _lock_is_directory(s: Path, out: Path) -> None:
    (s / ".lock").unlink()
    (s / ".lock").mkdir()


def _lock_symlink(s: Path, out: Path) -> None:
    (out / "precious.txt").write_text("a writer must not truncate me")
    (s / ".lock").unlink()
    os.symlink(out / "precious.txt", s / ".lock")


# id -> (edit, words the error line must contain, commands to try)
BOTH = ("run", "info")
CASES: dict[str, tuple[Callable[[Path, Path], None], tuple[str, ...], tuple[str, ...]]] = {
    "empty-npy": (_empty, ("lane-a/image.npy", "empty file"), BOTH),
    "truncated-npy": (_truncated, ("lane-a/param.npy", "truncated"), BOTH),
    "truncated-header": (_truncated_header, ("lane-b/best.npy", "not a valid .npy"), BOTH),
    "trailing-bytes": (_trailing_bytes, ("lane-b/history.npy", "trailing bytes"), BOTH),
    "huge-header-shape": (_huge_header_shape, ("lane-a/best.npy", "truncated"), BOTH),
    "wrong-dtype": (_wrong_dtype, ("lane-a/image.npy", "dtype float64, expected float32"), BOTH),
    "wrong-dtype-rng": (_wrong_dtype_rng, ("lane-b/rng.npy", "dtype int64, expected uint8"), BOTH),
    "wrong-shape-canvas": (_wrong_shape_canvas, ("lane-a/param.npy", "shape (3, 32, 32)"), BOTH),
    "wrong-shape-history": (_wrong_shape_history, ("lane-b/history.npy", "expected (steps, 6)"), BOTH),
    "history-vs-steps": (_history_rows, ("lane-a/history.npy", "9 rows but session.toml says steps = 10"), BOTH),
    "object-array-pickle": (_object_array, ("lane-a/evals.npy", "pickle"), BOTH),
    "nan-canvas": (_nan_canvas, ("lane-a/param.npy", "NaN or Inf"), BOTH),
    "inf-image": (_inf_image, ("lane-b/image.npy", "NaN or Inf"), BOTH),
    "image-out-of-range": (_image_range, ("lane-a/image.npy", "outside [0, 1]"), BOTH),
    "toml-syntax": (_toml_syntax, ("session.toml", "TOML syntax error"), BOTH),
    "toml-not-utf8": (_toml_not_utf8, ("session.toml", "not UTF-8"), BOTH),
    "toml-too-large": (_toml_too_large, ("session.toml", "too large"), BOTH),
    "missing-key": (_missing_key, ("session.toml", "missing key 'steps'"), BOTH),
    "mistyped-key": (_mistyped_key, ("session.toml", "'seed' must be int"), BOTH),
    "mistyped-param": (_mistyped_param, ("session.toml", "lane a:", "lr must be a number"), BOTH),
    "preset-not-string": (_preset_not_string, ("session.toml", "'preset' must be a string"), BOTH),
    "unknown-lane": (_unknown_lane, ("session.toml", "[files] does not list lane-c/"), BOTH),
    "unknown-part": (_unknown_part, ("session.toml", "lane b:", "unknown transform 'swirl'"), BOTH),
    "unknown-field": (_unknown_field, ("session.toml", "lane b:", "unknown field 'sharpness'"), BOTH),
    "bad-lane-name": (_bad_lane_name, ("session.toml", "lane name"), BOTH),
    "summary-not-number": (_summary_not_number, ("session.toml", "'last_similarity' must be a finite"), BOTH),
    "change-after-last-step": (_change_in_future, ("session.toml", "changes[0] 'step'"), BOTH),
    "future-format-version": (_future_version, ("session.toml", "format_version 99", "newer clipterm"), BOTH),
    "negative-steps": (_negative_steps, ("session.toml", "steps -5 out of range"), BOTH),
    "huge-steps": (_huge_steps, ("session.toml", "steps 1000000000000000 out of range"), BOTH),
    "files-table-missing": (_files_table_missing, ("session.toml", "missing key 'files'"), BOTH),
    "file-sha256-mismatch": (_file_sha_mismatch, ("lane-a/param.npy", "sha256 differs"), BOTH),
    "checkpoint-sha256-mismatch": (
        _checkpoint_sha_mismatch,
        ("shapes-a/open_clip_model.safetensors", "no longer matches", "--retarget"),
        ("run",),
    ),
    "lane-dir-outside": (_lane_dir_outside, ("session.toml", "points outside the session directory"), BOTH),
    "lane-dir-symlink": (_lane_dir_symlink, ("/s/lane-a", "symlink"), BOTH),
    "file-symlink": (_file_symlink, ("lane-b/param.npy", "is a symlink"), BOTH),
    "toml-symlink": (_toml_symlink, ("s/session.toml", "is a symlink"), BOTH),
    "journal-escapes": (_journal_escape, (".pending/COMPLETE", "not a session file"), BOTH),
    "journal-symlink": (_journal_symlink, (".pending", "is a symlink"), BOTH),
    "opt-step-fraction": (_opt_step_fraction, ("lane-a/opt_step.npy", "not a whole number"), BOTH),
    "negative-moments": (_negative_moments, ("lane-b/opt_exp_avg_sq.npy", "negative"), BOTH),
    "bad-rng-state": (_bad_rng, ("lane-a/rng.npy", "generator state"), BOTH),
    "frames-shape": (_frames_shape, ("frames/lane-a.npy", "expected (N, 64, 64, 3)"), BOTH),
    "missing-file": (_missing_file, ("lane-b/opt_step.npy", "missing"), BOTH),
    "fifo-not-regular": (_fifo, ("lane-a/best_loss.npy", "not a regular file"), BOTH),
    "prompt-escapes": (_prompt_escapes, ("session.toml", "'prompt' holds a control character (\\x1b)"), BOTH),
    "prompt-only-controls": (_prompt_only_controls, ("session.toml", "'prompt'", "control character (\\x01)"), BOTH),
    "prompt-nul": (_prompt_nul, ("session.toml", "'prompt'", "control character (\\x00)"), BOTH),
    "change-escapes": (_change_escapes, ("session.toml", "'changes[0].new'", "control character (\\x1b)"), BOTH),
    "model-name-c1": (_model_name_c1, ("session.toml", "'model.name'", "control character (\\x9b)"), BOTH),
    "unknown-top-level-key": (_unknown_top_level_key, ("session.toml", "unknown key 'notes'"), BOTH),
    "wrong-shape-image": (_wrong_shape_image, ("lane-a/image.npy", "shape (3, 32, 32), expected (3, 64, 64)"), BOTH),
    "wrong-shape-image-and-best": (_wrong_shape_image_and_best, ("lane-a/image.npy", "shape (3, 32, 32)"), BOTH),
    "lock-is-directory": (_lock_is_directory, (".lock", "cannot open the session lock"), ("run",)),
    "lock-is-symlink": (_lock_symlink, (".lock", "is a symlink"), ("run",)),
}


def check_refused(capsys, tmp_path: Path, argv: list[str], needles: tuple[str, ...]) -> str:
    """Run `clipterm ARGV`: exit 2, exactly one line naming the problem, nothing under tmp_path changed."""
    before = snapshot(tmp_path)
    code, out, err = cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert printable(lines[0]) == lines[0], lines[0]  # nothing from a file reaches the terminal raw
    for word in needles:
        assert word in lines[0], (word, lines[0])
    assert snapshot(tmp_path) == before
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_session_is_refused_and_left_untouched(case, base_session, tmp_path, capsys):
    edit, needles, commands = CASES[case]
    s, outside = tmp_path / "s", tmp_path / "outside"
    shutil.copytree(base_session, s, symlinks=True)
    outside.mkdir()
    edit(s, outside)
    for command in commands:
        argv = ["info", s] if command == "info" else ["run", s, "--steps", "20", "--quiet"]
        line = check_refused(capsys, tmp_path, argv, needles)
        assert line.startswith("clipterm: error: ")
    assert not (outside / "pwned").exists()


def test_session_made_with_another_model_needs_retarget(base_session, tmp_path, capsys):
    s = tmp_path / "s"
    shutil.copytree(base_session, s, symlinks=True)
    check_refused(
        capsys,
        tmp_path,
        ["run", s, "--steps", "12", "--model", "shapes-b", "--device", "cpu"],
        (str(s), "made with shapes-a", "not shapes-b", "--retarget"),
    )


def test_session_directory_that_is_a_symlink(base_session, tmp_path, capsys):
    s = tmp_path / "s"
    shutil.copytree(base_session, s, symlinks=True)
    os.symlink(s, tmp_path / "link")
    for argv in (["info", tmp_path / "link"], ["run", tmp_path / "link", "--steps", "12"]):
        check_refused(capsys, tmp_path, argv, ("link", "session directory is a symlink"))


def test_directory_that_is_not_a_session(tmp_path, capsys):
    d = tmp_path / "photos"
    d.mkdir()
    (d / "cat.jpg").write_bytes(b"meow")
    (d / "lane-a").mkdir()
    check_refused(capsys, tmp_path, ["info", d], ("photos", "not a clipterm session"))
    check_refused(capsys, tmp_path, ["run", d, "--steps", "3", *RUN_FLAGS], ("photos", "not an empty directory"))


def test_nonexistent_session_for_info(tmp_path, capsys):
    check_refused(capsys, tmp_path, ["info", tmp_path / "nope"], ("nope", "directory does not exist"))


def test_resume_flags_that_cannot_apply_are_refused_before_anything_changes(base_session, tmp_path, capsys):
    s = tmp_path / "s"
    shutil.copytree(base_session, s, symlinks=True)
    check_refused(capsys, tmp_path, ["run", s, "--steps", "12", "--seed", "7"], ("--seed 7", "fixed"))
    check_refused(capsys, tmp_path, ["run", s, "--steps", "12", "--lanes", "a"], ("--lanes a", "fixed"))
    check_refused(capsys, tmp_path, ["run", s, "--steps", "12", "--lr", "-1"], ("lr must be within",))
    check_refused(capsys, tmp_path, ["run", s, "--steps", "12", "--mode-b", "fancy"], ("unknown preset",))
    check_refused(capsys, tmp_path, ["run", s, "--steps", "12", "--prompt", "a | "], ("empty prompt term",))
    check_refused(capsys, tmp_path, ["run", s, "--steps", "12", "--device", "cuda:7"], ("device",))


def test_real_process_exit_code_and_single_line(base_session, tmp_path):
    """The same refusals from a real `python -m clipterm` process (exit status, stderr)."""
    s, outside = tmp_path / "s", tmp_path / "outside"
    shutil.copytree(base_session, s, symlinks=True)
    outside.mkdir()
    _object_array(s, outside)
    before = snapshot(tmp_path)
    proc = clipterm("run", s, "--steps", "20", "--prompt", PROMPT)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "lane-a/evals.npy" in lines[0] and "pickle" in lines[0], proc.stderr
    assert snapshot(tmp_path) == before and not (outside / "pwned").exists()


@pytest.fixture(scope="module")
def starts_session(tmp_path_factory) -> Path:
    """A session whose lane c has 3 starts (each start's optimizer step saved in opt_steps.npy)."""
    path = tmp_path_factory.mktemp("starts") / "s"
    lane = "c=vae-base,starts=3,trial=2,views=3"
    assert cli_plain("run", path, "--steps", "3", *RUN_FLAGS, "--lanes", "none", "--lane", lane) == 0
    return path


@pytest.mark.parametrize(
    ("steps", "needle"),
    [
        (np.array([3, 2], np.float32), "the lane's 3 starts need (3,)"),
        (np.array([3, 2.5, 2], np.float32), "whole numbers within [0, 3]"),
        (np.array([3, 2, 9], np.float32), "whole numbers within [0, 3]"),
        (np.array([2, 2, 2], np.float32), "is not the lane's opt_step 3"),
    ],
    ids=["shape", "fraction", "beyond-steps", "first-not-opt-step"],
)
def test_hostile_start_steps_are_refused(starts_session, tmp_path, capsys, steps, needle):
    assert get_npy(starts_session, "lane-c/opt_steps.npy").tolist() == [3, 2, 2]  # the choice stopped the others
    s = tmp_path / "s"
    shutil.copytree(starts_session, s, symlinks=True)
    put_npy(s, "lane-c/opt_steps.npy", steps)
    for argv in (["info", s], ["run", s, "--steps", "5", "--quiet"]):
        check_refused(capsys, tmp_path, argv, ("lane-c/opt_steps.npy", needle))


def test_a_lane_of_several_starts_resumes_with_each_starts_step(starts_session, tmp_path):
    s = tmp_path / "s"
    shutil.copytree(starts_session, s, symlinks=True)
    assert cli_plain("run", s, "--steps", "5", "--quiet") == 0
    assert get_npy(s, "lane-c/opt_steps.npy").tolist() == [5, 2, 2]  # the lane went on alone after the choice
