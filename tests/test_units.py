"""Unit objectives (issue 14): channel, neuron and direction terms, their capture in the one batched
forward, `--unit`, `clipterm units`, and the refusals of bad units.

Every result about what an objective does is measured on the bundled, trained shapes-a (a ViT). The
ModifiedResNet checks use the bundled, trained shapes-b (layer1-4); they test plumbing (hooks,
layouts, ranges), not what its units mean.
"""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import torch
from sessionkit import cli, edit_toml, read_doc

from clipterm import augment, units
from clipterm.engine import Engine
from clipterm.lanespec import PartSpec, from_table
from clipterm.models import png_roundtrip, stock_layout
from clipterm.parts.base import ParamError
from clipterm.parts.term_unit import DirectionSettings
from clipterm.presets import preset
from clipterm.probes import find_blocks
from clipterm.unitspec import UnitError, label, parse_unit, with_units

PROMPT = "a red circle on a black background"
CPU = ["--model", "shapes-a", "--device", "cpu", "--eval-every", "0", "--quiet"]


def unit_lane(base: str, *texts: str, prompt: bool = False, **changes):
    spec = with_units(preset(base), tuple(parse_unit(t) for t in texts), prompt=prompt)
    for k, v in changes.items():
        spec = spec.with_value(k, v)
    return spec


# ----------------------------------------------------------------------------- syntax
@pytest.mark.parametrize(
    "text,kind",
    [
        ("2:5", "channel"),
        ("2:5:0.5", "channel"),
        ("0:127:-1", "channel"),
        ("2:5@3", "neuron"),
        ("1:7@2,3:2", "neuron"),
        ("text:a smiling face - a face", "direction"),
        ("text:a red circle + a red square - a circle:0.5", "direction"),
    ],
)
def test_the_unit_syntax_reads_back_what_it_writes(text, kind):
    part = parse_unit(text)
    assert part.name == kind
    assert label(part) == text
    assert parse_unit(label(part)) == part


@pytest.mark.parametrize(
    "text,why",
    [
        ("2", "expected BLOCK:CHANNEL"),
        ("2:5:0", "weight 0"),
        ("2:5:300", r"within \[-100, 100\]"),
        ("2:5@", "expected BLOCK:CHANNEL"),
        ("text:", "must not be empty"),
        ("text: - a face", "must not be empty"),
        ("text:a face - ", "must not be empty"),
        ("text:a \x1b[31mface", "control character"),
    ],
)
def test_bad_units_are_refused_in_one_line(text, why):
    with pytest.raises(UnitError, match=why) as info:
        parse_unit(text)
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)


def test_a_block_direction_comes_from_a_npy_file(tmp_path):
    np.save(tmp_path / "v.npy", np.arange(4, dtype=np.float32))
    part = parse_unit(f"2:{tmp_path / 'v.npy'}:0.5")
    assert part.name == "direction" and part.settings.vector == (0.0, 1.0, 2.0, 3.0) and part.settings.weight == 0.5
    np.save(tmp_path / "m.npy", np.zeros((2, 2)))
    with pytest.raises(UnitError, match="1-D"):
        parse_unit(f"2:{tmp_path / 'm.npy'}")
    with pytest.raises(UnitError, match="no such"):
        parse_unit(f"2:{tmp_path / 'none.npy'}")


def test_unit_terms_live_in_lane_tables_and_unknown_fields_are_refused():
    spec = unit_lane("constrained", "2:5:0.5", "1:3@4", "text:a red circle - a circle")
    assert from_table(spec.to_table()) == spec
    assert "channel 2:5:0.5" in spec.describe() and "prompt" not in spec.describe()
    table = spec.to_table()
    table["terms"][-1]["colour"] = "red"
    with pytest.raises(ParamError, match="unknown field 'colour'"):
        from_table(table)
    table = spec.to_table()
    table["terms"][-2].update(token=4, y=1, x=1)
    with pytest.raises(ParamError, match="token .ViT. or both y and x"):
        from_table(table)


# ----------------------------------------------------------------------------- the engine
def _reference_acts(bundle, pixels: torch.Tensor, block: int) -> torch.Tensor:
    """Block output of open_clip's own (batch-first) layout, by a plain forward hook: (rows, C, *grid)."""
    model = stock_layout(bundle.model) if hasattr(bundle.model.visual, "transformer") else bundle.model
    _, blocks, _ = find_blocks(model)
    got = {}
    h = blocks[block].register_forward_hook(lambda _m, _i, o: got.__setitem__("x", o))
    with torch.no_grad():
        model.encode_image((pixels - bundle.mean_t) / bundle.std_t)
    h.remove()
    x = got["x"].float()
    return x.transpose(1, 2) if x.dim() == 3 else x


def test_unit_scores_are_the_named_activations_on_a_vit(shapes_a):
    pixels = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ref = _reference_acts(shapes_a, pixels, 2)  # (3, 128, 65), from open_clip's batch-first layout
    vec = torch.randn(128, generator=torch.Generator().manual_seed(2))
    block_direction = PartSpec("direction", DirectionSettings(block=2, vector=tuple(vec.tolist())))
    cases = {
        parse_unit("2:5"): ref[:, 5].mean(1),
        parse_unit("2:5@0"): ref[:, 5, 0],
        parse_unit("2:9@64"): ref[:, 9, 64],
        block_direction: ref.mean(2) @ (vec / vec.norm()),
    }
    for part, want in cases.items():
        e = Engine(shapes_a, "", {"a": with_units(preset("unconstrained"), (part,), prompt=False)})
        with torch.no_grad():
            got = e.unit_scores(e.lanes["a"], pixels)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_a_text_direction_is_the_embedding_projected_on_the_text_difference(shapes_a):
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    e = Engine(shapes_a, "", {"a": unit_lane("unconstrained", "text:a red circle - a blue circle")})
    text = shapes_a.encode_text(["a red circle", "a blue circle"])
    d = torch.nn.functional.normalize(text[0] - text[1], dim=0)
    with torch.no_grad():
        want = shapes_a.encode_pixels(pixels) @ d
        got = e.unit_scores(e.lanes["a"], pixels)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    red = torch.zeros(1, 3, 64, 64)
    red[:, 0] = 0.85
    with torch.no_grad():
        assert float(e.unit_scores(e.lanes["a"], red)) > float(e.unit_scores(e.lanes["a"], red.roll(2, dims=1)))


def test_resnet_units_read_layer_outputs_at_y_x(shapes_b):
    """Plumbing on the bundled ModifiedResNet (shapes-b): layouts, positions and the range refusals."""
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    ref = _reference_acts(shapes_b, pixels, 1)  # layer2: (2, 128, 8, 8)
    assert ref.shape == (2, 128, 8, 8)
    for text, want in {"1:7": ref[:, 7].mean((1, 2)), "1:7@2,3": ref[:, 7, 2, 3]}.items():
        e = Engine(shapes_b, "", {"a": unit_lane("unconstrained", text)})
        with torch.no_grad():
            torch.testing.assert_close(e.unit_scores(e.lanes["a"], pixels), want, atol=1e-4, rtol=1e-4)
    for text, why in [
        ("1:7@8,0", "y 0-7, x 0-7"),
        ("4:0", "blocks 0-3"),
        ("3:512", "channels 0-511"),
        ("1:7@3", "y 0-7"),
    ]:
        with pytest.raises(units.UnitRangeError, match=why):
            Engine(shapes_b, "", {"a": unit_lane("unconstrained", text)})


def test_the_loss_is_minus_the_activation_times_the_weight_beside_the_prompt(shapes_a):
    spec = unit_lane("unconstrained", "2:5:0.5", prompt=True)
    e = Engine(shapes_a, PROMPT, {"a": spec}, eval_every=0)
    x = e.lanes["a"].shown().detach().clone()
    with torch.no_grad():
        act = float(_reference_acts(shapes_a, x, 2)[0, 5].mean())
        cos = float(shapes_a.encode_pixels(x) @ shapes_a.encode_text([PROMPT])[0])
    e.step(1)
    e.flush()
    raw, loss, sim_loss = e.lanes["a"].history[0, :3]
    assert raw == pytest.approx(cos, abs=1e-5)  # the raw column stays the prompt's similarity
    assert sim_loss == pytest.approx((1 - cos) - 0.5 * act, abs=1e-4)
    assert loss == pytest.approx(sim_loss, abs=1e-6)  # tv and memory weigh 0 in this preset


@pytest.mark.parametrize("weight,sign", [("1", 1), ("-1", -1)])
def test_a_channel_objective_moves_its_channel_and_a_negative_weight_lowers_it(shapes_a, weight, sign):
    e = Engine(shapes_a, "", {"a": unit_lane("unconstrained", f"2:5:{weight}")}, eval_every=0)
    e.step(15)
    e.flush()
    h = e.lanes["a"].history
    assert sign * (h[-1, 0] - h[0, 0]) > 1.0  # raw column: the activation of channel 5 (units alone)
    np.testing.assert_allclose(h[:, 2], -float(weight) * h[:, 0], rtol=0, atol=1e-3)  # loss before each step


def test_units_are_captured_in_the_one_batched_forward_for_their_lane_only(shapes_a, monkeypatch):
    specs = {
        "a": preset("unconstrained"),  # 1 row
        "u": unit_lane("constrained", "2:5", "0:3@7", views=3),  # 3 views + the clean row
        "v": unit_lane("unconstrained", "text:a red circle - a circle:0.5"),  # embedding only: no hook
    }
    e = Engine(shapes_a, PROMPT, specs, seed=4, eval_every=0)
    armed = []
    real_enter = units.Tap.__enter__
    monkeypatch.setattr(units.Tap, "__enter__", lambda self: armed.append(dict(self.wants)) or real_enter(self))
    calls = []
    real = shapes_a.model.encode_image
    monkeypatch.setattr(shapes_a.model, "encode_image", lambda x: calls.append(x.shape[0]) or real(x))
    e.step(3)
    assert e.forwards == 3 and calls == [1 + 4 + 1] * 3  # one forward per step, no extra rows
    assert armed == [{2: [(1, 1, 5)], 0: [(1, 1, 5)]}] * 3  # lane u's rows, blocks 2 and 0 only
    _, blocks, _ = find_blocks(shapes_a.model)
    assert all(not b._forward_hooks for b in blocks)  # disarmed after the step


def test_a_unit_lane_runs_the_same_beside_other_lanes_and_hooks_nothing_without_units(shapes_a, monkeypatch):
    spec = unit_lane("constrained", "2:5", "1:9:-0.5", views=2)
    together = Engine(shapes_a, PROMPT, {"a": preset("unconstrained"), "u": spec}, seed=2, eval_every=0)
    together.step(4)
    alone = Engine(shapes_a, "", {"u": spec}, seed=2, eval_every=0)
    alone.step(4)
    a, b = together.lane_state("u"), alone.lane_state("u")
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=2e-5, err_msg=key)
    made = []
    monkeypatch.setattr(units.Tap, "__init__", lambda *a, **k: made.append(1))
    Engine(shapes_a, PROMPT, {"a": preset("constrained")}, eval_every=0).step(2)
    assert made == []


def test_a_lane_of_units_alone_is_evaluated_on_its_unit(shapes_a):
    e = Engine(shapes_a, "", {"a": unit_lane("unconstrained", "2:5")}, eval_every=2)
    e.step(2)
    step, robust, verified = e.lanes["a"].evals[-1]
    x = e.lanes["a"].shown().detach()
    held_out = _reference_acts(shapes_a, augment.apply_affine(x, augment.held_out_thetas()), 2)[:, 5].mean()
    png = shapes_a.preprocess_uint8(png_roundtrip(e.shown("a")))
    assert step == 2
    assert robust == pytest.approx(float(held_out), abs=1e-4)
    assert verified == pytest.approx(float(_reference_acts(shapes_a, png, 2)[0, 5].mean()), abs=1e-4)


def test_a_prompt_term_without_a_prompt_is_refused(shapes_a):
    with pytest.raises(Exception, match="no prompt"):
        Engine(shapes_a, "", {"a": preset("unconstrained")})


# ----------------------------------------------------------------------------- the command line
def test_after_80_steps_on_channel_2_5_it_is_among_the_top_five_of_block_2(tmp_path, capsys):
    out = tmp_path / "s"
    code, _, err = cli(capsys, "run", out, "--unit", "2:5", "--steps", "0", "--lanes", "a", *CPU)
    assert code == 0, err
    code, before, _ = cli(capsys, "units", out, "--block", "2", "--device", "cpu")
    assert code == 0
    assert 5 not in [int(line.split()[0]) for line in before.splitlines()[:5]]  # not there by chance
    code, _, err = cli(capsys, "run", out, "--unit", "2:5", "--steps", "80", *CPU)
    assert code == 0, err
    code, text, err = cli(capsys, "units", out, "--block", "2", "--lane", "a", "--device", "cpu")
    assert code == 0, err
    rows = [line.split() for line in text.splitlines()]
    assert len(rows) == 128 and "128 channels" in err
    top = [int(r[0]) for r in rows[:5]]
    assert 5 in top, top
    means = [float(r[1]) for r in rows]
    assert means == sorted(means, reverse=True)
    assert sum(abs(float(r[2].rstrip("%"))) for r in rows) == pytest.approx(100, abs=0.2)
    doc = read_doc(out)
    assert doc["prompt"] == "" and doc["changes"] == []  # the repeated command changed nothing
    assert [t["kind"] for t in doc["lanes"]["a"]["terms"]] == ["tv", "memory", "channel"]


def test_units_mix_with_the_prompt_and_resume_bit_exactly(tmp_path, capsys):
    flags = ["--prompt", PROMPT, "--unit", "2:5:0.5", "--unit", "1:3@4:-0.25", "--views", "2", "--seed", "3", *CPU]
    one = tmp_path / "one"
    assert cli(capsys, "run", one, "--steps", "8", *flags)[0] == 0
    two = tmp_path / "two"
    assert cli(capsys, "run", two, "--steps", "4", *flags)[0] == 0
    assert cli(capsys, "run", two, "--steps", "8", *flags)[0] == 0
    for lane in ("a", "b"):
        for name in ("image.npy", "history.npy", "best.npy"):
            assert (one / f"lane-{lane}" / name).read_bytes() == (two / f"lane-{lane}" / name).read_bytes()
    terms = [t["kind"] for t in read_doc(one)["lanes"]["b"]["terms"]]
    assert terms == ["prompt", "tv", "memory", "channel", "neuron"]


def test_unit_changes_at_resume_are_recorded_and_a_prompt_needs_a_prompt_term(tmp_path, capsys):
    out = tmp_path / "s"
    assert cli(capsys, "run", out, "--unit", "2:5", "--steps", "2", "--lanes", "a", *CPU)[0] == 0
    assert cli(capsys, "run", out, "--unit", "2:7:0.5", "--steps", "3", *CPU)[0] == 0
    assert read_doc(out)["changes"] == [{"step": 2, "lane": "a", "key": "units", "old": "2:5", "new": "2:7:0.5"}]
    before = (out / "session.toml").read_bytes()
    code, _, err = cli(capsys, "run", out, "--prompt", PROMPT, "--steps", "4", *CPU)
    assert code == 2 and "no lane has a prompt term" in err and len(err.strip().splitlines()) == 1
    assert (out / "session.toml").read_bytes() == before
    code, info, _ = cli(capsys, "info", out)
    assert code == 0 and "units alone" in info and "channel 2:7:0.5" in info


def test_an_empty_prompt_with_a_prompt_term_in_session_toml_is_refused(tmp_path, capsys):
    out = tmp_path / "s"
    assert cli(capsys, "run", out, "--prompt", PROMPT, "--unit", "2:5", "--steps", "1", "--lanes", "a", *CPU)[0] == 0
    edit_toml(out, lambda d: d.__setitem__("prompt", ""))
    code, _, err = cli(capsys, "info", out)
    assert code == 2 and "objective has a prompt term" in err
    assert tomllib.loads((out / "session.toml").read_text())["prompt"] == ""


@pytest.mark.parametrize(
    "unit,model,needle",
    [
        ("3:5", "shapes-a", "blocks 0-2"),
        ("2:128", "shapes-a", "channels 0-127"),
        ("2:5@65", "shapes-a", "tokens 0-64"),
        ("2:5@1,1", "shapes-a", "tokens 0-64"),
        ("3:600", "shapes-b", "channels 0-511"),
        ("text: - a face", "shapes-a", "must not be empty"),
        ("text:a face - a face", "shapes-a", "is zero"),
    ],
)
def test_a_bad_unit_is_one_line_and_exit_2_with_nothing_written(tmp_path, capsys, unit, model, needle):
    out = tmp_path / "s"
    code, _, err = cli(capsys, "run", out, "--unit", unit, "--steps", "2", "--model", model, "--device", "cpu")
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert "Traceback" not in err and not out.exists()


def test_units_refuses_a_block_out_of_range_and_an_unknown_lane(tmp_path, capsys):
    out = tmp_path / "s"
    assert cli(capsys, "run", out, "--prompt", PROMPT, "--steps", "0", "--lanes", "a", *CPU)[0] == 0
    code, text, err = cli(capsys, "units", out, "--block", "3", "--device", "cpu")
    assert code == 2 and text == "" and "block 3 is out of range" in err and "blocks 0-2" in err
    code, _, err = cli(capsys, "units", out, "--block", "0", "--lane", "z", "--device", "cpu")
    assert code == 2 and "no lane z" in err


def test_units_in_a_prompt_batch_sit_beside_each_prompt():
    from clipterm.cli import build_parser
    from clipterm.launch import lane_specs_from_args

    args = build_parser().parse_args(["run", "OUT", "--steps", "1", "--prompts-file", "p.txt", "--unit", "2:5"])
    for spec in lane_specs_from_args(args, prompt=True).values():
        assert [p.name for p in spec.terms][0] == "prompt" and [p.name for p in spec.terms][-1] == "channel"
    for spec in lane_specs_from_args(args).values():  # no --prompt: the units alone
        assert "prompt" not in [p.name for p in spec.terms]


def test_a_session_of_units_alone_exports_a_sheet(tmp_path, capsys):
    out = tmp_path / "s"
    assert cli(capsys, "run", out, "--unit", "2:5", "--steps", "1", *CPU)[0] == 0
    code, _, err = cli(capsys, "export", out, "--format", "sheet", "--out", tmp_path / "sheet.png")
    assert code == 0, err
    from PIL import Image

    assert Image.open(tmp_path / "sheet.png").size[0] > 0
