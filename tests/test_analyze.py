"""`clipterm analyze`: real PNG plots of fixed sizes from a session's probes and similarity history."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sessionkit import cli as run_main

from clipterm.cli import main

PROMPT = "a red triangle on a white background"



def make_session(path, model: str, *extra: str) -> None:
    assert main(["run", str(path), "--prompt", PROMPT, "--steps", "6", "--model", model, "--device", "cpu",
                 "--eval-every", "3", "--probe-every", "2", "--quiet", *extra]) == 0


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
