"""Lanes as data from the command line: --lane, --lanes none, --apply-to by name, presets as files."""

from __future__ import annotations

import pytest
from sessionkit import cli, read_doc

from clipterm.presets import user_dir

PROMPT = "a green triangle on a white background"
BASE = ["--prompt", PROMPT, "--model", "shapes-a", "--device", "cpu", "--quiet", "--eval-every", "0"]


def test_lane_flags_make_named_lanes_of_any_parts(tmp_path, capsys):
    out = tmp_path / "s"
    code, _, err = cli(
        capsys,
        "run", out, "--steps", "3", *BASE,
        "--lane", "c=constrained,param=fourier,views=2,decay=1.5",
        "--lane", "b=constrained,transforms=cutouts+noise,cut_pow=2",
        "--lr", "0.02", "--apply-to", "a,c",
    )  # fmt: skip
    assert code == 0, err
    doc = read_doc(out)
    assert list(doc["lanes"]) == ["a", "b", "c"]  # b replaced, c added
    c = doc["lanes"]["c"]
    assert c["param"] == {**c["param"], "kind": "fourier", "decay": 1.5} and c["views"]["views"] == 2
    assert [t["kind"] for t in doc["lanes"]["b"]["transforms"]] == ["cutouts", "noise"]
    assert doc["lanes"]["b"]["transforms"][0]["cut_pow"] == 2.0
    assert doc["lanes"]["a"]["optim"]["lr"] == doc["lanes"]["c"]["optim"]["lr"] == 0.02
    assert doc["lanes"]["b"]["optim"]["lr"] == 0.05
    assert (out / "lane-c" / "spectrum.npy").is_file() and not (out / "lane-c" / "param.npy").exists()
    code, text, _ = cli(capsys, "info", out)
    assert code == 0 and "fourier · affine x2" in text and "pixel · cutouts+noise x1" in text


def test_lanes_none_keeps_only_the_given_lanes(tmp_path, capsys):
    out = tmp_path / "s"
    code, _, err = cli(capsys, "run", out, "--steps", "2", *BASE, "--lanes", "none", "--lane", "z9=unconstrained")
    assert code == 0, err
    assert list(read_doc(out)["lanes"]) == ["z9"]


@pytest.mark.parametrize(
    "lane_args,why",
    [
        (["--lane", "c"], "expected NAME=PRESET"),
        (["--lane", "c=constrained,views"], "is not key=value"),
        (["--lane", "c=nosuch"], "unknown preset 'nosuch'"),
        (["--lane", "c=constrained,decay=2"], "'decay' is not a setting of this lane"),
        (["--lane", "c=constrained,param=fourier,decay=9"], "decay must be within [0, 4]"),
        (["--lane", "c=constrained,param=voxels"], "unknown param 'voxels'"),
        (["--lane", "c=constrained", "--lane", "c=unconstrained"], "given twice"),
        (["--lane", "Bad=constrained"], "lane name 'Bad'"),
        ([f"--lane={n}=constrained" for n in "cdefghi"], "at most 8 lanes"),
        (["--apply-to", "a,q", "--lr", "0.1"], "--apply-to names lane 'q'"),
        (["--lanes", "none", "--lane", "c=constrained,transforms=cutouts", "--degrees", "3"], "none of the lanes"),
    ],
)
def test_bad_lane_flags_one_line_exit_2_nothing_written(tmp_path, capsys, lane_args, why):
    out = tmp_path / "s"
    code, _, err = cli(capsys, "run", out, "--steps", "2", *BASE, *lane_args)
    assert code == 2 and why in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_presets_are_listed_and_read_from_the_users_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    code, out, _ = cli(capsys, "presets")
    assert code == 0
    lines = out.splitlines()
    names = [ln.split()[0] for ln in lines]
    assert names == sorted(names) and {"constrained", "self-guided", "unconstrained", "lucid", "pyramid"} <= set(names)
    first = lines[names.index("constrained")]
    assert "seed 004" in first and "pixel · affine x1 · prompt+tv+memory · adam" in first
    folder = user_dir()
    assert folder == tmp_path / "cfg" / "clipterm" / "presets"
    folder.mkdir(parents=True)
    mine = """about = "mine"\nsource = "me"\n[param]\nkind = "pyramid"\n[views]\naugment = true\nviews = 3
[[transforms]]\nkind = "jitter"\n[[terms]]\nkind = "prompt"\n[optim]\nkind = "adamw"\nlr = 0.1\n"""
    (folder / "mine.toml").write_text(mine)
    (folder / "broken.toml").write_text("[param]\nkind = 'pixel'\n")
    code, out, err = cli(capsys, "presets")
    assert code == 0
    assert any(ln.startswith("mine") and "pyramid · jitter x3 · prompt · adamw" in ln for ln in out.splitlines())
    assert "broken" not in out and "warning: preset broken" in err and "missing 'views'" in err
    code, _, err = cli(capsys, "run", tmp_path / "s", "--steps", "2", *BASE, "--lane", "m=mine")
    assert code == 0, err
    assert read_doc(tmp_path / "s")["lanes"]["m"]["param"]["kind"] == "pyramid"
