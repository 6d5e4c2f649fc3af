"""Lanes as data from the command line: the default lanes, --lanes, --mode-X, --lane, --apply-to by name,
presets as files."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest
from sessionkit import cli, open_world_copy, read_doc, run_killed_at_recipe, snapshot

from clipterm import launch
from clipterm import session as sess
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
    assert list(doc["lanes"]) == ["a", "b", "c"]  # b and c replaced
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


def presets_of(out) -> dict[str, str]:
    return {name: table["preset"] for name, table in read_doc(out)["lanes"].items()}


def test_a_new_session_gets_the_default_lanes_a_b_and_c(tmp_path, capsys):
    """No lane flags: a unconstrained, b constrained, c the best recognised preset (one constant)."""
    assert launch.DEFAULT_LANES["c"] == launch.BEST_PRESET
    out = tmp_path / "s"
    code, _, err = cli(capsys, "run", out, "--steps", "1", *BASE)
    assert code == 0, err
    assert list(presets_of(out).items()) == list(launch.DEFAULT_LANES.items())
    assert list(launch.DEFAULT_LANES) == ["a", "b", "c"]
    assert launch.DEFAULT_LANES["a"] == "unconstrained" and launch.DEFAULT_LANES["b"] == "constrained"
    assert all((out / f"lane-{n}" / "final.png").is_file() for n in "abc")


def test_on_a_model_of_another_world_lane_c_defaults_to_the_open_preset(tmp_path, capsys):
    """Lane C's best preset paints through a prior of the shapes world's figures; on a model that is
    not a shapes model (a real CLIP) a new session's lane C is OPEN_PRESET instead, and it runs.
    --mode-c still picks any preset there."""
    model = open_world_copy(tmp_path / "model")
    flags = ["--prompt", PROMPT, "--model", model, "--device", "cpu", "--quiet", "--eval-every", "0"]
    code, _, err = cli(capsys, "run", tmp_path / "s", "--steps", "1", *flags)
    assert code == 0, err
    assert (
        presets_of(tmp_path / "s")
        == launch.default_lanes(False)
        == {
            **launch.DEFAULT_LANES,
            "c": launch.OPEN_PRESET,
        }
    )
    assert launch.OPEN_PRESET != launch.BEST_PRESET and (tmp_path / "s" / "lane-c" / "final.png").is_file()
    code, _, err = cli(capsys, "run", tmp_path / "t", "--steps", "1", *flags, "--mode-c", launch.BEST_PRESET)
    assert code == 0, err
    assert presets_of(tmp_path / "t")["c"] == launch.BEST_PRESET


def recipe_presets(s: Path) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The presets of a recipe's [lanes], and of its [world_lanes] per world."""
    doc = tomllib.loads((s / "recipe.toml").read_text())
    worlds = {w: {n: t["preset"] for n, t in lanes.items()} for w, lanes in doc.get("world_lanes", {}).items()}
    return {n: t["preset"] for n, t in doc["lanes"].items()}, worlds


@pytest.mark.parametrize("model,shapes", [("ViT-B-32", False), ("shapes-b", True), ("", True)])
def test_the_recipe_holds_lane_c_for_either_world(tmp_path, model, shapes):
    """The recipe is on disk before torch loads: its [lanes] name lane C for the world the model's
    name tells (the default model, ViT-B-32 or shapes-a by what is cached, is read as shapes-a), and
    [world_lanes] hold lane C for both worlds, for the model that will load to pick."""
    s = tmp_path / "s"
    named = ["--model", model] + (["--pretrained", "none"] if model == "ViT-B-32" else []) if model else []
    run_killed_at_recipe(s, "--prompt", PROMPT, *named, "--steps", "1")
    lanes, worlds = recipe_presets(s)
    assert lanes == launch.default_lanes(shapes)
    assert worlds == {"shapes": {"c": launch.BEST_PRESET}, "other": {"c": launch.OPEN_PRESET}}


def test_the_model_that_loads_picks_lane_c_from_the_recipe(tmp_path, capsys):
    """A start-up killed at its recipe (default model, so lane C reads BEST_PRESET) and resumed on
    a model that is not a shapes model gets OPEN_PRESET, and says so; resumed offline on the bundled
    fallback it keeps BEST_PRESET. --mode-c leaves nothing to pick."""
    for name in ("s", "t"):
        run_killed_at_recipe(tmp_path / name, "--prompt", PROMPT, "--steps", "1")
    code, out, _ = cli(capsys, "info", tmp_path / "s")
    picks = f"(the model picks: {launch.BEST_PRESET} on a shapes model, {launch.OPEN_PRESET} on any other)"
    assert code == 0 and picks in out, out
    model = open_world_copy(tmp_path / "model")
    flags = ["--steps", "1", "--device", "cpu", "--quiet", "--eval-every", "0"]
    code, _, err = cli(capsys, "run", tmp_path / "s", *flags, "--retarget", "--model", model)
    assert code == 0, err
    assert presets_of(tmp_path / "s")["c"] == launch.OPEN_PRESET
    assert f"lane c: {launch.OPEN_PRESET}, since local-dir:" in err and "is not a shapes model" in err
    code, _, err = cli(capsys, "run", tmp_path / "t", *flags)
    assert code == 0, err
    assert presets_of(tmp_path / "t")["c"] == launch.BEST_PRESET and "lane c:" not in err
    run_killed_at_recipe(tmp_path / "u", "--prompt", PROMPT, "--steps", "1", "--mode-c", "pyramid")
    assert recipe_presets(tmp_path / "u") == ({**launch.DEFAULT_LANES, "c": "pyramid"}, {})


@pytest.mark.parametrize(
    "flags,want",
    [
        (["--lanes", "ac", "--mode-c", "constrained"], {"a": "unconstrained", "c": "constrained"}),
        (["--lanes", "none", "--lane", "x=constrained"], {"x": "constrained"}),
        (["--lanes", "b", "--lane", "d=unconstrained"], {"b": "constrained", "d": "unconstrained"}),
    ],
)
def test_lanes_picks_default_lanes_and_mode_c_sets_c(tmp_path, capsys, flags, want):
    out = tmp_path / "s"
    code, _, err = cli(capsys, "run", out, "--steps", "1", *BASE, *flags)
    assert code == 0, err
    assert presets_of(out) == want


def test_every_in_order_pick_of_abc_is_a_lanes_value(capsys):
    from clipterm.cli import build_parser

    for letters in ("a", "b", "c", "ab", "ac", "bc", "abc", "none"):
        args = build_parser().parse_args(["run", "s", "--steps", "1", "--lanes", letters, "--lane", "z=constrained"])
        want = [] if letters == "none" else list(letters)
        assert list(launch.lane_specs_from_args(args)) == [*want, "z"]
    args = build_parser().parse_args(["run", "s", "--steps", "1", "--mode-c", "self-guided"])
    assert {n: s.preset for n, s in launch.lane_specs_from_args(args).items()} == {
        **launch.DEFAULT_LANES,
        "c": "self-guided",
    }


@pytest.mark.parametrize("value", ["xyz", "ba", "aa", "", "cab", "abcd", "d", "None", "a,b"])
def test_a_bad_lanes_value_is_one_line_exit_2_nothing_written(tmp_path, capsys, value):
    out = tmp_path / "s"
    code, _, err = cli(capsys, "run", out, "--steps", "1", *BASE, "--lanes", value)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--lanes" in err and repr(value) in err and "Traceback" not in err
    assert not out.exists()


def test_default_lanes_and_more_lanes_still_stop_at_eight(tmp_path, capsys):
    five = [f"--lane={n}=constrained" for n in "defgh"]
    code, _, err = cli(capsys, "run", tmp_path / "s", "--steps", "1", *BASE, *five, "--lane", "i=constrained")
    assert code == 2 and "at most 8 lanes, got 9" in err and not (tmp_path / "s").exists()


def test_an_old_two_lane_session_resumes_without_lanes(tmp_path, capsys):
    """A session made before lane c was a default one (the format-1 fixture: lanes a and b) resumes
    with no --lanes as before, and keeps its two lanes; --lanes must still match it."""
    s = tmp_path / "v1"
    shutil.copytree(Path(__file__).parent / "fixtures" / "v1-session", s)
    code, _, err = cli(capsys, "run", s, "--steps", "21", "--device", "cpu", "--quiet")
    assert code == 0, err
    after = sess.load(s)
    assert list(after.lanes) == ["a", "b"] and after.steps == 21
    before = snapshot(tmp_path)
    for lanes in ("abc", "ac", "a"):
        code, _, err = cli(capsys, "run", s, "--steps", "22", "--device", "cpu", "--lanes", lanes)
        assert code == 2 and "differs from the session's lanes a,b" in err and len(err.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before
    code, _, err = cli(capsys, "run", s, "--steps", "22", "--device", "cpu", "--quiet", "--lanes", "ab")
    assert code == 0, err
    assert list(sess.load(s).lanes) == ["a", "b"]


def test_a_lane_c_from_lane_flag_resumes_with_lanes_ab(tmp_path, capsys):
    """Before c was a default lane, `--lanes ab --lane c=...` (or just `--lane c=...`) made a lane c;
    resuming that session with the same command (or with --lanes ab alone) still works."""
    out = tmp_path / "s"
    made = ["--lanes", "ab", "--lane", "c=constrained,views=2"]
    code, _, err = cli(capsys, "run", out, "--steps", "1", *BASE, *made)
    assert code == 0, err
    for flags in (made, ["--lanes", "ab"], []):
        code, _, err = cli(capsys, "run", out, "--steps", "1", "--device", "cpu", "--quiet", *flags)
        assert code == 0, err
    assert presets_of(out) == {"a": "unconstrained", "b": "constrained", "c": "constrained"}
    code, _, err = cli(capsys, "run", out, "--steps", "1", "--device", "cpu", "--lanes", "bc")
    assert code == 2 and "--lanes bc differs" in err


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
    # which default lane a preset is, after its source; lane C's depends on the model's world
    assert first.endswith("seed 004 · lane B") and lines[names.index("unconstrained")].endswith(" · lane A")
    assert lines[names.index(launch.BEST_PRESET)].endswith(" · lane C on shapes models")
    assert lines[names.index(launch.OPEN_PRESET)].endswith(" · lane C on other models")
    defaults = {*launch.default_lanes(True).values(), *launch.default_lanes(False).values()}
    assert not any(" · lane " in ln for ln in lines if ln.split()[0] not in defaults)
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
    code, _, err = cli(capsys, "run", tmp_path / "s", "--steps", "2", *BASE, "--lanes", "ab", "--lane", "m=mine")
    assert code == 0, err
    assert read_doc(tmp_path / "s")["lanes"]["m"]["param"]["kind"] == "pyramid"
