"""Engine paths that exist for speed and memory: OOM halving, sparse raw measurement, bf16 autocast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipterm.engine import Engine, EngineError
from clipterm.presets import preset

PROMPT = "a yellow square on a black background"


def _limit_batch(engine: Engine, limit: int, seen: list[int]) -> None:
    real = engine._encode

    def encode(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        if x.shape[0] > limit:
            raise torch.OutOfMemoryError("simulated: batch too large")
        return real(x)

    engine._encode = encode


def test_out_of_memory_halves_views_and_retries_the_same_step(shapes_a):
    lanes = {"a": preset("unconstrained"), "b": preset("constrained").with_value("views", 8)}
    e = Engine(shapes_a, PROMPT, lanes, seed=9, eval_every=0)
    seen: list[int] = []
    _limit_batch(e, 5, seen)
    e.step(6)
    e.flush()
    assert seen[:3] == [10, 6, 4] and set(seen[3:]) == {4}
    assert e.lanes["b"].spec.views.views == 2 and e.step_count == 6
    assert sum("halved" in w for w in e.warnings) == 2
    assert [c["new"] for c in e.changes if c["key"] == "views"] == [4, 2]
    # The failed attempts did not consume randomness: identical to starting at 2 views.
    ref = Engine(shapes_a, PROMPT, {"a": lanes["a"], "b": lanes["b"].with_value("views", 2)}, seed=9, eval_every=0)
    ref.step(6)
    np.testing.assert_allclose(e.shown("b"), ref.shown("b"), atol=1e-6)


def test_out_of_memory_at_one_view_is_a_clear_error(shapes_a):
    e = Engine(shapes_a, PROMPT, {"a": preset("unconstrained")}, seed=0, eval_every=0)
    _limit_batch(e, 0, [])
    with pytest.raises(EngineError, match="out of memory even at 1 view"):
        e.step()


def test_raw_every_measures_the_clean_canvas_sparsely(shapes_a):
    e = Engine(shapes_a, PROMPT, {"b": preset("constrained")}, seed=0, eval_every=0, raw_every=5)
    seen: list[int] = []
    _limit_batch(e, 100, seen)
    e.step(10)
    e.flush()
    assert seen == [2, 1, 1, 1, 2, 1, 1, 1, 1, 2]
    raw = e.lanes["b"].history[:, 0]
    assert raw[1] == raw[0] and raw[3] == raw[0] and raw[4] != raw[0]


def test_bf16_autocast_path_runs_and_tracks_fp32(shapes_a):
    results = {}
    for precision in ("fp32", "bf16"):
        e = Engine(shapes_a, PROMPT, {"a": preset("unconstrained")}, seed=1, eval_every=0, precision=precision)
        e.step(30)
        e.flush()
        results[precision] = e.lanes["a"].history[:, 0]
    assert results["bf16"][-1] > results["bf16"][0] + 0.2
    assert abs(results["bf16"][-1] - results["fp32"][-1]) < 0.1


def test_bad_precision_is_refused(shapes_a):
    with pytest.raises(EngineError, match="precision"):
        Engine(shapes_a, PROMPT, {"a": preset("unconstrained")}, precision="fp8")


def test_raw_every_survives_an_exact_state_round_trip(shapes_a):
    lanes = {"b": preset("constrained")}
    whole = Engine(shapes_a, PROMPT, lanes, seed=4, eval_every=0, raw_every=3)
    whole.step(10)
    whole.flush()
    first = Engine(shapes_a, PROMPT, lanes, seed=4, eval_every=0, raw_every=3)
    first.step(5)
    second = Engine(shapes_a, PROMPT, lanes, seed=4, eval_every=0, raw_every=3)
    second.load_lane_state("b", first.lane_state("b"))
    second.step(5)
    second.flush()
    assert np.array_equal(whole.lanes["b"].history, second.lanes["b"].history)
    assert np.array_equal(whole.shown("b"), second.shown("b"))


def test_cpu_paths_change_layout_not_results(shapes_a):
    """The CPU load runs the ViT sequence-first with a matmul patch embedding: same features, same gradients."""
    visual = shapes_a.model.visual
    assert not visual.transformer.batch_first
    assert type(visual.conv1).__name__ == "PatchMatmul"
    from clipterm.models import stock_layout

    plain = stock_layout(shapes_a.model)
    assert type(plain.visual.conv1).__name__ == "Conv2d" and plain.visual.transformer.batch_first
    x = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    outs = []
    for model in (shapes_a.model, plain):
        xi = x.clone().requires_grad_(True)
        feats = model.encode_image(xi)
        (feats @ torch.linspace(-1, 1, feats.shape[1])).sum().backward()
        outs.append((feats.detach(), xi.grad))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(outs[0][1], outs[1][1], atol=1e-6, rtol=1e-4)


def test_cpu_paths_leave_other_towers_alone(shapes_b):
    from clipterm.models import adapt_for_cpu

    before = {n: type(m).__name__ for n, m in shapes_b.model.visual.named_modules()}
    adapt_for_cpu(shapes_b.model.visual)  # a ResNet: no transformer, no patch convolution
    assert {n: type(m).__name__ for n, m in shapes_b.model.visual.named_modules()} == before


def test_compiled_engine_tracks_eager(shapes_a):
    """--compile (torch.compile of the image tower, CPU fast paths included) follows the eager trajectory."""
    lanes = {"a": preset("unconstrained"), "b": preset("constrained").with_value("views", 2)}
    runs = {}
    for compiled in (False, True):
        e = Engine(shapes_a, PROMPT, lanes, seed=5, eval_every=0, compile=compiled)
        e.step(6)
        e.flush()
        runs[compiled] = e
    assert runs[True]._encode is not shapes_a.model.encode_image  # really the compiled callable
    for lane in lanes:
        np.testing.assert_allclose(
            runs[True].lanes[lane].history[:, 0], runs[False].lanes[lane].history[:, 0], atol=2e-4
        )
        np.testing.assert_allclose(runs[True].shown(lane), runs[False].shown(lane), atol=2e-3)
