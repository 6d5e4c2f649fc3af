"""A run killed during start-up resumes without its prompt (issue 15, item 1).

`open_run` writes recipe.toml (prompt, model as asked, seed, lanes, eval/frame settings, step 0)
atomically, under the session lock, before torch and the model load; `clipterm run S --steps N`
on a directory holding only a recipe makes the session it describes, identical to a run made in
one go, and the first save removes the recipe.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from sessionkit import (
    PROMPT,
    RUN_FLAGS,
    cli,
    clipterm,
    lane_arrays,
    read_doc,
    run_killed_at_recipe,
    snapshot,
)

from clipterm import recipe as rc
from clipterm import session as sess
from clipterm.presets import preset

STEPS = 3
NO_PROMPT = [f for i, f in enumerate(RUN_FLAGS) if f != "--prompt" and RUN_FLAGS[i - 1] != "--prompt"]


def a_recipe(**kw: object) -> rc.Recipe:
    fields = {
        "prompt": PROMPT,
        "seed": 0,
        "lanes": {"a": preset("unconstrained"), "b": preset("constrained")},
        "model": "shapes-a",
        "eval_every": 5,
    }
    return rc.Recipe(**{**fields, **kw})  # type: ignore[arg-type]


def recipe_dir(tmp_path: Path, **kw: object) -> Path:
    s = tmp_path / "s"
    s.mkdir()
    rc.write(s, a_recipe(**kw))
    return s


def test_run_killed_during_startup_resumes_without_prompt_and_equals_one_go(tmp_path):
    one_go = tmp_path / "one"
    proc = clipterm("run", one_go, "--steps", STEPS, *RUN_FLAGS)
    assert proc.returncode == 0, proc.stderr
    s = tmp_path / "s"
    run_killed_at_recipe(s, "--steps", STEPS, *RUN_FLAGS)  # right after the recipe: torch is still loading
    assert not (s / sess.TOML_NAME).exists() and (s / rc.RECIPE).exists()
    created = rc.read(s).created

    proc = clipterm("run", s, "--steps", STEPS, *NO_PROMPT)
    assert proc.returncode == 0, proc.stderr
    assert "from its recipe" in proc.stderr
    want, got = lane_arrays(one_go), lane_arrays(s)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k], equal_nan=True), k
    doc, ref = read_doc(s), read_doc(one_go)
    for key in ("prompt", "seed", "steps", "eval_every", "frame_every", "model", "changes"):
        assert doc[key] == ref[key], key
    assert doc["lanes"] == ref["lanes"]
    assert doc["created"] == created  # the session was created when its recipe was written
    assert not (s / rc.RECIPE).exists() and not (s / rc.RECIPE_TMP).exists()


def test_recipe_round_trip_is_atomic_and_exact(tmp_path):
    s = recipe_dir(tmp_path, seed=7, pretrained="", frame_every=3)
    assert sorted(p.name for p in s.iterdir()) == [rc.RECIPE]  # no temporary file left
    assert rc.read(s) == a_recipe(seed=7, frame_every=3, created=rc.read(s).created)
    assert rc.has_recipe(s) and not sess.is_session(s)


def test_info_on_a_recipe_only_directory(tmp_path, capsys):
    s = recipe_dir(tmp_path)
    code, out, err = cli(capsys, "info", s)
    assert code == 0, err
    assert "only its recipe" in out and PROMPT in out and "shapes-a" in out and "lane a" in out
    code, out, _ = cli(capsys, "info", s, "--json")
    assert code == 0 and '"recipe_only": true' in out and '"steps": 0' in out


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--seed", "5"], "seed"),
        (["--lanes", "a"], "lanes"),
        (["--model", "shapes-b"], "--retarget"),
        (["--lane", "z=constrained"], "no lane 'z'"),
    ],
)
def test_resume_from_recipe_checks_flags_first(tmp_path, capsys, flags, needle):
    s = recipe_dir(tmp_path)
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "run", s, "--steps", "2", "--device", "cpu", "--quiet", *flags)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert snapshot(tmp_path) == before


def test_recipe_in_a_symlinked_directory_is_refused(tmp_path, capsys):
    s = recipe_dir(tmp_path)
    os.symlink(s, tmp_path / "link")
    for argv in (["info", tmp_path / "link"], ["run", tmp_path / "link", "--steps", "2", "--quiet"]):
        code, _, err = cli(capsys, *argv)
        assert code == 2 and "symlink" in err and len(err.strip().splitlines()) == 1, err


def test_recipe_being_started_by_another_process_is_refused(tmp_path, capsys):
    s = recipe_dir(tmp_path)
    with sess.SessionLock(s):
        code, _, err = cli(capsys, "run", s, "--steps", "2", "--quiet")
    assert code == 2 and "already open in another clipterm process" in err


def _symlink(s: Path) -> None:
    (s.parent / "elsewhere.toml").write_bytes((s / rc.RECIPE).read_bytes())
    (s / rc.RECIPE).unlink()
    os.symlink(s.parent / "elsewhere.toml", s / rc.RECIPE)


def _edit(old: str, new: str):
    def edit(s: Path) -> None:
        text = (s / rc.RECIPE).read_text()
        assert old in text
        (s / rc.RECIPE).write_text(text.replace(old, new, 1))

    return edit


WORLDS = {"shapes": {"b": preset("vae-base")}, "other": {"b": preset("pyramid")}}


def _world(old: str, new: str):
    """An edit of a recipe that holds [world_lanes] (the fixture's recipe has none: this adds them)."""

    def edit(s: Path) -> None:
        rc.write(s, a_recipe(world_lanes=WORLDS))
        _edit(old, new)(s)

    return edit


@pytest.mark.parametrize(
    "edit,needle",
    [
        (_symlink, "is a symlink"),
        (_edit("steps = 0", "steps = 3"), "step 0"),
        (_edit("seed = 0", 'seed = "0"'), "'seed' must be int"),
        (_edit(f'prompt = "{PROMPT}"', 'prompt = "a red\\u001b[31m circle"'), "control character"),
        (_edit('kind = "pixel"', 'kind = "swirl"'), "unknown param 'swirl'"),
        (_edit("recipe_version = 1", "recipe_version = 9"), "recipe_version 9"),
        (_edit("[model]", "[model\n"), "TOML syntax error"),
        (_world("[world_lanes.other.b]", "[world_lanes.elsewhere.b]"), "exactly shapes and other"),
        (_world("[world_lanes.other.b]", "[world_lanes.other.z]"), "some of the lanes in [lanes]"),
        (_world('[world_lanes.other.b]\npreset = "pyramid"', "[world_lanes.other.b]\npreset = 3"), "world_lanes.other"),
        (_world('kind = "pyramid"', 'kind = "swirl"'), "unknown param 'swirl'"),
    ],
    ids=[
        *("symlink", "steps", "seed-type", "control-char", "unknown-part", "version", "syntax"),
        *("world-unknown", "world-unknown-lane", "world-bad-preset", "world-unknown-part"),
    ],
)
def test_hostile_recipe_is_refused_and_left_untouched(tmp_path, capsys, edit, needle):
    s = recipe_dir(tmp_path)
    edit(s)
    before = snapshot(tmp_path)
    for argv in (["run", s, "--steps", "2", "--quiet"], ["info", s]):
        code, _, err = cli(capsys, *argv)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and needle in lines[0] and "recipe.toml" in lines[0], err
        assert "\x1b" not in err
    assert snapshot(tmp_path) == before


def test_failed_startup_leaves_nothing(tmp_path, capsys):
    """Every flag is checked before the recipe is written; a model that does not load removes it."""
    missing, empty = tmp_path / "new", tmp_path / "empty"
    empty.mkdir()
    for s in (missing, empty):
        code, _, err = cli(capsys, "run", s, "--prompt", PROMPT, "--steps", "2", "--model", "NoSuchNet-7")
        assert code == 2 and "unknown model" in err
    assert not missing.exists() and list(empty.iterdir()) == []


def test_new_session_dir_accepts_only_startup_leftovers(tmp_path):
    s = tmp_path / "s"
    s.mkdir()
    for name in (sess.LOCK, rc.RECIPE, rc.RECIPE_TMP):
        (s / name).write_text("x")
    rc.check_new_session_dir(s)
    (s / "notes.txt").write_text("mine")
    with pytest.raises(sess.SessionError, match="not an empty directory"):
        rc.check_new_session_dir(s)


def test_a_recipes_world_lanes_round_trip_and_the_model_picks_them(tmp_path):
    s = recipe_dir(tmp_path, world_lanes=WORLDS)
    r = rc.read(s)
    assert r == a_recipe(world_lanes=WORLDS, created=r.created)
    assert [spec.preset for spec in r.lanes_for(True).values()] == ["unconstrained", "vae-base"]
    assert [spec.preset for spec in r.lanes_for(False).values()] == ["unconstrained", "pyramid"]
    (tmp_path / "plain").mkdir()
    assert rc.read(recipe_dir(tmp_path / "plain")).lanes_for(False) == a_recipe().lanes  # none: [lanes] as they are
