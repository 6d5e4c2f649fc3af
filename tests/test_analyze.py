"""`clipterm analyze`: real PNG plots of fixed sizes from a session's probes and similarity history."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image
from sessionkit import cli as run_main
from sessionkit import make_run, snapshot

from clipterm.cli import main

PROMPT = "a red triangle on a white background"


def make_session(path, model: str, *extra: str) -> None:
    make_run(path, "--eval-every", "3", "--probe-every", "2", "--quiet", *extra, prompt=PROMPT, model=model)


def check_png(path, size: tuple[int, int]) -> np.ndarray:
    img = Image.open(path)
    assert img.format == "PNG" and img.size == size
    arr = np.asarray(img.convert("RGB"))
    assert arr.std() > 5  # something was drawn, not a blank canvas
    return arr


@pytest.mark.parametrize("model", ["shapes-a", "shapes-b"])
def test_writes_three_plots_of_fixed_size(tmp_path, capsys, model):
    s = tmp_path / "s"
    make_session(s, model)
    out = tmp_path / "plots" / "deep"
    code, stdout, err = run_main(capsys, "analyze", s, "--out", out)
    assert code == 0, err
    names = ["activations.png", "gradients.png", "similarity.png"]
    assert stdout.split() == [str(out / n) for n in names]
    check_png(out / "activations.png", (1200, 700))
    check_png(out / "gradients.png", (1200, 700))
    sim = check_png(out / "similarity.png", (1000, 500))
    # both lanes' curves: the plot holds lane A's orange and lane B's blue
    orange = (sim[..., 0] > 200) & (sim[..., 1] > 100) & (sim[..., 1] < 160) & (sim[..., 2] < 60)
    blue = (sim[..., 0] < 60) & (sim[..., 1] > 90) & (sim[..., 1] < 150) & (sim[..., 2] > 160)
    assert orange.sum() > 50 and blue.sum() > 50


def test_without_probe_records_only_similarity(tmp_path, capsys):
    s = tmp_path / "s"
    make_session(s, "shapes-a", "--probe-every", "0", "--lanes", "a")
    out = tmp_path / "plots"
    code, stdout, err = run_main(capsys, "analyze", s, "--out", out)
    assert code == 0 and "no layer probe records" in err
    assert stdout.split() == [str(out / "similarity.png")]
    check_png(out / "similarity.png", (1000, 500))
    assert not (out / "activations.png").exists()


def test_bad_inputs_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    cases = [
        ([tmp_path / "missing", "--out", tmp_path / "o"], "missing"),
        ([tmp_path / "empty", "--out", tmp_path / "o"], "not a clipterm session"),
        ([tmp_path / "empty"], "--out"),
    ]
    for argv, needle in cases:
        code, _, err = run_main(capsys, "analyze", *argv)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (argv, err)


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    s = tmp_path / "s"
    make_session(s, "shapes-a", "--lanes", "a")
    capsys.readouterr()
    (tmp_path / "file").write_text("x")
    code, _, err = run_main(capsys, "analyze", s, "--out", tmp_path / "file")
    assert code == 2 and "not a directory" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_main(capsys, "analyze", s, "--out", tmp_path / "file" / "sub")
    assert code == 2 and "cannot create" in err


def test_change_marks_follow_the_recorded_changes():
    from clipterm.analysis import change_marks

    changes = [
        {"step": 900, "lane": "b", "key": "preset", "old": "constrained", "new": "unconstrained"},
        {"step": 1401, "lane": "*", "key": "prompt", "old": "a dog", "new": "a red tomato | blurry:-0.5"},
        {"step": 1401, "lane": "a", "key": "lr", "old": 0.05, "new": 0.02},
        {"step": 2000, "lane": "a", "key": "views", "old": 1, "new": 8},
    ]
    assert change_marks(changes, "b") == [
        (900, "preset: unconstrained", True),
        (1401, "prompt: a red tomato | blurry:-0", True),
    ]
    assert change_marks(changes, "a") == [
        (1401, "prompt: a red tomato | blurry:-0, lr 0.02", True),
        (2000, "views 8", False),
    ]
    both = change_marks(changes)  # the similarity plot, both lanes: lane-specific marks name their lane
    assert [m[0] for m in both] == [900, 1401, 2000]
    assert both[0][1] == "B preset: unconstrained" and both[2] == (2000, "A views 8", False)
    assert change_marks([]) == []


def test_a_resumed_session_with_changes_gets_its_marks(tmp_path, capsys):
    """A change recorded at resume is drawn as a vertical line: the plot differs only by it.

    --temperature is recorded but does not enter lane A's cosine loss, so both runs are identical."""
    plain, changed = tmp_path / "plain", tmp_path / "changed"
    for s in (plain, changed):
        make_session(s, "shapes-a", "--lanes", "a")
    assert main(["run", str(plain), "--steps", "10", "--device", "cpu", "--quiet"]) == 0
    assert main(["run", str(changed), "--steps", "10", "--device", "cpu", "--quiet", "--temperature", "3"]) == 0
    imgs = {}
    for s in (plain, changed):
        code, _, err = run_main(capsys, "analyze", s, "--out", tmp_path / f"{s.name}-plots")
        assert code == 0, err
        imgs[s.name] = check_png(tmp_path / f"{s.name}-plots" / "activations.png", (1200, 700))
    assert [c["key"] for c in json_changes(changed)] == ["temperature"]
    # the same trajectory: only the mark (a grey line plus its label) tells them apart
    diff = np.abs(imgs["plain"].astype(int) - imgs["changed"].astype(int)).sum(axis=2) > 0
    cols = np.flatnonzero(diff.any(axis=0))
    assert diff.sum() > 100 and len(cols) < 60  # a narrow vertical band, not a different plot


def json_changes(session) -> list[dict]:
    import tomllib

    return tomllib.loads((session / "session.toml").read_text()).get("changes", [])


def test_session_text_is_drawn_literally_not_as_mathtext(tmp_path, capsys):
    """A prompt with '$...$' (valid, no controls) once failed the whole plot as bad mathtext."""
    s = tmp_path / "s"
    make_run(s, "--eval-every", "3", "--probe-every", "2", "--lanes", "a", "--quiet", prompt=r"a $\frac$ bill", steps=4)
    code, _, err = run_main(capsys, "analyze", s, "--out", tmp_path / "plots")
    assert code == 0, err
    check_png(tmp_path / "plots" / "similarity.png", (1000, 500))
    check_png(tmp_path / "plots" / "gradients.png", (1200, 700))


def test_out_that_is_or_lies_in_a_session_is_refused(tmp_path, capsys):
    s = tmp_path / "s"
    make_session(s, "shapes-a", "--lanes", "a", "--probe-every", "0")
    capsys.readouterr()
    os.symlink(s / "lane-a", tmp_path / "link")
    before = snapshot(tmp_path)
    for out, needle in [
        (s, "is the session"),
        (s / "lane-a", "lies inside the session"),
        (s / "plots", "lies inside the session"),
        (tmp_path / "link", "lies inside the session"),
    ]:
        code, stdout, err = run_main(capsys, "analyze", s, "--out", out)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and needle in lines[0], (out, err)
        assert not stdout
    assert snapshot(tmp_path) == before
