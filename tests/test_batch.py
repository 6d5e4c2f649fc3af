"""Prompt batches: one resumable session per prompt, and a summary table that matches the sessions."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from sessionkit import cli as run_main
from sessionkit import open_world_copy

from clipterm import batch
from clipterm import session as sess
from clipterm.cli import main
from clipterm.errors import ClipTermError
from clipterm.launch import DEFAULT_LANES, OPEN_PRESET, default_lanes
from clipterm.runner import Run

PROMPTS = [
    "a red circle on a white background",
    "a blue square on a black background",
    "a green triangle on a white background",
]


def write_prompts(path, lines: list[str]):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_prompts_file_parsing(tmp_path):
    lines = ["# a comment", "", "  a red circle  ", "   ", "#another", "a dog | a cat:-1"]
    f = write_prompts(tmp_path / "p.txt", lines)
    assert batch.read_prompts(f) == ["a red circle", "a dog | a cat:-1"]
    with pytest.raises(ClipTermError, match="has no prompts"):
        batch.read_prompts(write_prompts(tmp_path / "e.txt", ["# only comments", ""]))
    with pytest.raises(ClipTermError, match=r"bad.txt:2: "):
        batch.read_prompts(write_prompts(tmp_path / "bad.txt", ["ok", "a | :3"]))
    with pytest.raises(ClipTermError, match="no such prompts file"):
        batch.read_prompts(tmp_path / "missing.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ClipTermError, match="not UTF-8"):
        batch.read_prompts(tmp_path / "bin.txt")


def test_slugs_are_unique_and_stable():
    names = batch.session_names(["A red circle!", "a red circle", "❤️", "🙂", "x" * 80, "a-red-circle-2"])
    assert names == ["a-red-circle", "a-red-circle-2", "prompt", "prompt-2", "x" * 48, "a-red-circle-2-2"]
    assert len(set(names)) == len(names)


def test_batch_of_three_prompts(tmp_path, capsys, shapes_a, shapes_b):
    f = write_prompts(tmp_path / "prompts.txt", ["# shapes", PROMPTS[0], "", PROMPTS[1], PROMPTS[2]])
    out = tmp_path / "batch"
    code, stdout, err = run_main(
        capsys,
        "run",
        out,
        "--prompts-file",
        f,
        "--steps",
        "4",
        "--model",
        "shapes-a",
        "--device",
        "cpu",
        "--quiet",
        "--probe-every",
        "2",
        "--lanes",
        "ab",  # about the table and resuming: two lanes are enough (the default lanes: below)
    )
    assert code == 0, err
    dirs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert dirs == sorted(batch.session_names(PROMPTS))
    with open(out / "summary.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(batch.SUMMARY_COLUMNS)
    assert [(r["prompt"], r["lane"]) for r in rows] == [(p, lane) for p in PROMPTS for lane in "ab"]
    for r in rows:
        s = sess.load(out / r["session"])
        assert s.prompt == r["prompt"] and s.steps == 4 == int(r["steps"])
        arr = s.arrays[r["lane"]]
        assert float(r["own"]) == pytest.approx(float(arr["history"][-1, 0]), abs=1e-4)
        assert int(arr["evals"][-1, 0]) == 4  # robust/verified measured on the final canvas
        assert float(r["robust"]) == pytest.approx(float(arr["evals"][-1, 1]), abs=1e-4)
        assert float(r["verified"]) == pytest.approx(float(arr["evals"][-1, 2]), abs=1e-4)
        assert arr["probe_steps"].tolist() == [1, 2, 4]
        # the judge column is shapes-b's own view of the saved PNG
        png = Image.open(out / r["session"] / f"lane-{r['lane']}" / "final.png").convert("RGB")
        with torch.no_grad():
            sim = float(
                shapes_b.encode_pixels(shapes_b.preprocess_uint8(png))[0] @ shapes_b.encode_text([r["prompt"]])[0]
            )
        assert float(r["judge_sim"]) == pytest.approx(sim, abs=1e-4)
        assert 1 <= int(r["judge_rank"]) <= int(r["judge_candidates"]) == 24
    md = (out / "summary.md").read_text(encoding="utf-8")
    table = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert len(table) == 1 + 6 and all(p in md for p in PROMPTS)
    assert stdout == md

    # every session is an ordinary resumable session ...
    run = Run.resume(out / rows[0]["session"], shapes_a)
    assert run.steps == 4
    run.close()
    # ... and the same command with more steps (no --lanes: the default is for new sessions only)
    # resumes all three with their two lanes and rebuilds the table
    code, _, err = run_main(
        capsys, "run", out, "--prompts-file", f, "--steps", "6", "--model", "shapes-a", "--device", "cpu", "--quiet"
    )
    assert code == 0, err
    assert all(sess.load(out / name).steps == 6 for name in dirs)
    with open(out / "summary.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["steps"] for r in rows} == {"6"} and [r["lane"] for r in rows] == list("ab") * 3
    h = sess.load(out / dirs[0]).arrays["a"]["history"]
    assert h.shape == (6, 6) and np.isfinite(h).all()


def test_a_batch_runs_the_default_lanes(tmp_path, capsys):
    """No lane flags: a batch's new sessions get launch.DEFAULT_LANES, as `clipterm run` gives them."""
    f = write_prompts(tmp_path / "prompts.txt", [PROMPTS[0]])
    out = tmp_path / "batch"
    argv = ["run", out, "--prompts-file", f, "--steps", "1", "--model", "shapes-a", "--device", "cpu", "--quiet"]
    code, _, err = run_main(capsys, *argv)
    assert code == 0, err
    s = sess.load(out / batch.slugify(PROMPTS[0]))
    assert list(s.lanes) == ["a", "b", "c"] and {n: spec.preset for n, spec in s.lanes.items()} == DEFAULT_LANES
    with open(out / "summary.csv", newline="", encoding="utf-8") as fh:
        assert [(r["lane"], r["preset"]) for r in csv.DictReader(fh)] == list(DEFAULT_LANES.items())


def test_a_batch_on_a_model_of_another_world_gets_that_worlds_lane_c(tmp_path, capsys):
    """As `clipterm run` does: on a model that is not a shapes model, lane C is launch.OPEN_PRESET."""
    f = write_prompts(tmp_path / "prompts.txt", [PROMPTS[0]])
    out = tmp_path / "batch"
    model = open_world_copy(tmp_path / "model")
    argv = ["run", out, "--prompts-file", f, "--steps", "1", "--model", model, "--device", "cpu", "--quiet"]
    code, _, err = run_main(capsys, *argv)
    assert code == 0, err
    s = sess.load(out / batch.slugify(PROMPTS[0]))
    assert {n: spec.preset for n, spec in s.lanes.items()} == default_lanes(False)
    assert default_lanes(False)["c"] == OPEN_PRESET != DEFAULT_LANES["c"]


def test_a_batch_rerun_refuses_flags_its_sessions_cannot_take(tmp_path, capsys):
    """Running a batch again resumes its sessions, and, as `run` does for one session, refuses a seed
    or lanes other than the sessions were made with (one line, exit 2, the session unchanged)
    instead of quietly ignoring them."""
    f = write_prompts(tmp_path / "prompts.txt", [PROMPTS[0]])
    out = tmp_path / "batch"
    base = ["run", out, "--prompts-file", f, "--model", "shapes-a", "--device", "cpu", "--quiet", "--judge", "none"]
    code, _, err = run_main(capsys, *base, "--steps", "1", "--lanes", "a", "--seed", "3")
    assert code == 0, err
    path = out / batch.slugify(PROMPTS[0])
    before = (path / "session.toml").read_bytes()
    for extra, needle in [(["--seed", "4"], "--seed 4 differs"), (["--lanes", "ab"], "--lanes ab differs")]:
        code, _, err = run_main(capsys, *base, "--steps", "2", "--lanes", "a", "--seed", "3", *extra)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (extra, err)
        assert (path / "session.toml").read_bytes() == before
    code, _, err = run_main(capsys, *base, "--steps", "2", "--lanes", "a", "--seed", "3")
    assert code == 0, err
    assert sess.load(path).steps == 2


def test_bad_batches_one_line_exit_2(tmp_path, capsys):
    empty = write_prompts(tmp_path / "empty.txt", ["# nothing here"])
    good = write_prompts(tmp_path / "good.txt", [PROMPTS[0]])
    (tmp_path / "afile").write_text("x")
    cases = [
        ([tmp_path / "b", "--prompts-file", empty], "has no prompts"),
        ([tmp_path / "b", "--prompts-file", tmp_path / "nope.txt"], "no such prompts file"),
        ([tmp_path / "b", "--prompts-file", good, "--prompt", "a dog"], "exclusive"),
        ([tmp_path / "afile", "--prompts-file", good], "directory of sessions"),
    ]
    for argv, needle in cases:
        code, _, err = run_main(capsys, "run", *argv, "--steps", "2", "--model", "shapes-a", "--device", "cpu")
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not (tmp_path / "b").exists()


def test_a_session_with_another_prompt_is_not_overwritten(tmp_path, capsys):
    good = write_prompts(tmp_path / "good.txt", [PROMPTS[0]])
    out = tmp_path / "b"
    assert (
        main(
            [
                "run",
                str(out / batch.slugify(PROMPTS[0])),
                "--prompt",
                PROMPTS[1],
                "--steps",
                "1",
                "--model",
                "shapes-a",
                "--device",
                "cpu",
                "--quiet",
                "--lanes",
                "a",
            ]
        )
        == 0
    )
    capsys.readouterr()
    code, _, err = run_main(
        capsys, "run", out, "--prompts-file", good, "--steps", "2", "--model", "shapes-a", "--device", "cpu", "--quiet"
    )
    assert code == 2 and "holds the prompt" in err
    assert sess.load(out / batch.slugify(PROMPTS[0])).steps == 1
