"""Several starts per lane (`views.starts`, `views.trial`) on the trained shapes-a: the starts share a
step's views, the one the lane's objective scores best on the held-out views goes on, the others
stop, and a lane saved in or after its trial continues exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipterm import augment
from clipterm.engine import CHOICE_SEED, Engine
from clipterm.lanespec import apply_pairs
from clipterm.parts.base import ParamError
from clipterm.presets import preset

PROMPT = "a green triangle on a white background"


def spec(starts: int = 3, trial: int = 4, views: int = 6, base: str = "vae-base", choose: str = "held-out"):
    pairs = [("views", str(views)), ("starts", str(starts)), ("trial", str(trial)), ("choose", choose)]
    return apply_pairs(preset(base), pairs)


def tensors(image) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in image.tensors.items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_start_0_is_the_plain_lanes_start_and_the_other_starts_differ(shapes_a):
    plain = Engine(shapes_a, PROMPT, {"c": preset("vae-base")}, seed=3, eval_every=0).lanes["c"]
    ln = Engine(shapes_a, PROMPT, {"c": spec()}, seed=3, eval_every=0).lanes["c"]
    assert len(ln.rivals) == 2 and not plain.rivals
    assert same(tensors(ln.image), tensors(plain.image))
    codes = [c.tensors["code"] for c, _ in ln.candidates()]
    assert not torch.equal(codes[0], codes[1]) and not torch.equal(codes[1], codes[2])


def test_the_starts_share_the_views_until_the_trial_ends(shapes_a):
    rows: list[int] = []
    hook = shapes_a.model.visual.register_forward_pre_hook(lambda _m, args: rows.append(args[0].shape[0]))
    try:
        e = Engine(shapes_a, PROMPT, {"c": spec(starts=3, trial=2, views=7)}, seed=0, eval_every=0)
        e.step(3)
    finally:
        hook.remove()
    # 3 starts x 2 views (7 // 3) + the clean canvas in the trial; 7 views + the clean canvas after it;
    # the choice in between scores each start once on the 16 held-out views, without a gradient
    assert rows == [7, 7, 16, 16, 16, 8]


def test_every_start_moves_in_the_trial_and_the_best_on_held_out_views_goes_on_alone(shapes_a):
    e = Engine(shapes_a, PROMPT, {"c": spec(starts=3, trial=4)}, seed=1, eval_every=0)
    ln = e.lanes["c"]
    before = [tensors(c) for c, _ in ln.candidates()]
    e.step(4)
    at_trial = [tensors(c) for c, _ in ln.candidates()]
    assert not any(same(a, b) for a, b in zip(before, at_trial))
    held = augment.held_out_thetas()
    with torch.no_grad():
        images = [c.image() for c, _ in ln.candidates()]
        scores = [float(e.term_similarity(ln, augment.apply_affine(x, held)).mean()) for x in images]
    e.step(3)
    k = int(np.argmax(scores))
    assert e.changes == [{"step": 4, "lane": "c", "key": "start", "old": "", "new": f"{k} of 3"}]
    idle = [t for i, t in enumerate(at_trial) if i != k]
    assert len(idle) == 2 and all(any(same(tensors(r), t) for t in idle) for r in ln.rivals)  # stopped
    assert not same(tensors(ln.image), at_trial[k])  # the chosen start moved on
    chosen_from = Engine(shapes_a, PROMPT, {"c": spec(starts=3, trial=4)}, seed=1, eval_every=0)
    chosen_from.step(4)
    reference = [tensors(c) for c, _ in chosen_from.lanes["c"].candidates()][k]
    assert same(reference, at_trial[k])  # deterministic: the same start is chosen again


def test_a_lane_saved_in_its_trial_or_after_the_choice_continues_exactly(shapes_a):
    def run(split: int) -> Engine:
        e = Engine(shapes_a, PROMPT, {"c": spec(starts=3, trial=4)}, seed=2, eval_every=0)
        e.step(split)
        state, changes = e.lane_state("c"), list(e.changes)
        again = Engine(shapes_a, PROMPT, {"c": spec(starts=3, trial=4)}, seed=2, eval_every=0)
        again.load_lane_state("c", state)
        again.changes = changes
        again.step(8 - split)
        again.flush()
        return again

    whole = run(0)
    for split in (2, 4, 6):
        part = run(split)
        assert np.array_equal(part.lanes["c"].history, whole.lanes["c"].history), split
        assert part.lane_state("c").keys() == whole.lane_state("c").keys()
        for key, arr in whole.lane_state("c").items():
            assert np.array_equal(part.lane_state("c")[key], arr), (split, key)
    assert "start2_code" in whole.lane_state("c") and len(whole.changes) == 1


def test_a_lane_made_with_several_starts_keeps_their_arrays_when_its_preset_changes(shapes_a):
    e = Engine(shapes_a, PROMPT, {"c": preset("vae-grey")}, seed=0, eval_every=0)
    e.step(1)
    assert "start1_code" not in e.lane_state("c")
    e.set_preset("c", "vae-starts")
    state = e.lane_state("c")
    assert set(e.lanes["c"].spec.arrays(shapes_a.image_size)) <= set(state)
    assert "start1_code" in state
    e.set_preset("c", "pyramid-shift")  # another parameterization: its starts are drawn anew, of its kind
    kinds = {type(c).__name__ for c, _ in e.lanes["c"].candidates()}
    assert len(kinds) == 1 and not e.lanes["c"].rivals


def own_views(ln, x: torch.Tensor) -> torch.Tensor:
    """16 draws of the lane's own views from the fixed choice seed: the same draw for every start."""
    gen = torch.Generator().manual_seed(CHOICE_SEED)
    for t in ln.views:
        x = t(x, 16, gen)
    return x


@pytest.mark.parametrize(("choose", "rows"), [("canvas", 1), ("views", 16)])
def test_views_choose_picks_the_start_by_its_canvas_or_a_fixed_draw_of_its_own_views(shapes_a, choose, rows):
    e = Engine(shapes_a, PROMPT, {"c": spec(starts=4, trial=4, choose=choose)}, seed=4, eval_every=0)
    ln = e.lanes["c"]
    e.step(4)
    with torch.no_grad():
        images = [c.image() for c, _ in ln.candidates()]
        pick = (lambda x: x) if choose == "canvas" else (lambda x: own_views(ln, x))
        scores = [float(e.term_similarity(ln, pick(x)).mean()) for x in images]
    seen: list[tuple[int, bool]] = []
    hook = shapes_a.model.visual.register_forward_pre_hook(
        lambda _m, args: seen.append((args[0].shape[0], torch.is_grad_enabled()))
    )
    try:
        e.step(1)
    finally:
        hook.remove()
    assert seen[:4] == [(rows, False)] * 4  # each start scored once, without a gradient, before the step
    assert seen[4][1]  # then the step itself, with one
    k = int(np.argmax(scores))
    assert e.changes == [{"step": 4, "lane": "c", "key": "start", "old": "", "new": f"{k} of 4"}]
    assert f"best of 4 starts at step 4 by its {choose}" in ln.spec.describe()
    held = Engine(shapes_a, PROMPT, {"c": spec(starts=4, trial=4)}, seed=4, eval_every=0)
    held.step(5)
    assert held.changes[0]["new"] != f"{k} of 4"  # here the held-out views would pick another start


@pytest.mark.parametrize(
    ("key", "value"), [("choose", "judge"), ("starts", "0"), ("starts", "17"), ("trial", "-1"), ("starts", "2.5")]
)
def test_out_of_range_starts_are_refused_in_one_line(key, value):
    with pytest.raises(ParamError) as err:
        apply_pairs(preset("vae-base"), [(key, value)])
    assert key in str(err.value) and "\n" not in str(err.value)


def test_starts_are_fixed_while_a_lane_runs(shapes_a):
    e = Engine(shapes_a, PROMPT, {"c": spec()}, seed=0, eval_every=0)
    with pytest.raises(ParamError, match="fixed while the lane runs"):
        e.set_param("c", "starts", 5)


def test_starts_added_by_a_preset_switch_keep_their_own_optimizer_steps(shapes_a):
    """A preset switch mid-run adds starts whose optimizers begin then, behind the lane's: each
    start's step is saved (opt_steps), so a lane saved in its trial continues exactly. Saved right
    after the switch, the new starts have no moments yet; restored, they must not share buffers
    (their two moments were one array once, and Adam's in-place updates turned them into NaN)."""

    def run(split: int) -> Engine:
        e = Engine(shapes_a, PROMPT, {"c": preset("vae-base")}, seed=2, eval_every=0)
        e.step(2)
        e.set_preset("c", "vae-starts")
        e.step(split)
        state, changes = e.lane_state("c"), list(e.changes)
        kept = {k: v.copy() for k, v in state.items()}
        again = Engine(shapes_a, PROMPT, {"c": e.lanes["c"].spec}, seed=2, eval_every=0)
        again.load_lane_state("c", state)
        again.changes = changes
        again.step(6 - split)
        again.flush()
        assert all(np.array_equal(state[k], kept[k]) for k in kept)  # the caller's arrays are left alone
        return again

    whole = run(0)
    steps = whole.lane_state("c")["opt_steps"]
    assert steps.tolist() == [8.0] + [6.0] * 7  # the lane stepped twice before its starts existed
    assert all(np.isfinite(arr).all() for arr in whole.lane_state("c").values())
    for split in (3, 6):
        part = run(split)
        assert np.array_equal(part.lanes["c"].history, whole.lanes["c"].history), split
        for key, arr in whole.lane_state("c").items():
            assert np.array_equal(part.lane_state("c")[key], arr), (split, key)
