"""What each lane part promises: images in [0,1] with gradients, exact inverses, reproducible views,
the cut_pow law, ensembles as sums, lanes independent of their neighbours, exact save/restore."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipterm.engine import Engine
from clipterm.lanespec import LaneSpec, from_table
from clipterm.parts.base import REGISTRY, ParamError, lookup
from clipterm.parts.image import logit
from clipterm.parts.view_cutouts import CutoutSettings, sample_cutouts
from clipterm.presets import preset

PROMPT = "a green triangle on a white background"
PARAMS = ("pixel", "fourier", "pyramid")


def make(kind: str, size: int = 64, seed: int = 0, **settings):
    cls = lookup("param", kind, "param")
    return cls(cls.Settings(**settings), size, torch.device("cpu"), seed)


@pytest.mark.parametrize("kind", PARAMS)
def test_every_parameterization_gives_an_image_in_0_1_with_gradients(kind):
    p = make(kind, init_std=1.0)
    p.after_step()  # pixel's projection (clamp) keeps its image in [0,1]; the others squash
    img = p.image()
    assert img.shape == (1, 3, 64, 64)
    assert float(img.detach().min()) >= 0.0 and float(img.detach().max()) <= 1.0
    (img * torch.linspace(-1, 1, 64)).sum().backward()
    grads = [t.grad for t in p.parameters()]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)
    assert float(p.shown().min()) >= 0 and float(p.shown().max()) <= 1


@pytest.mark.parametrize("kind", PARAMS)
def test_every_parameterization_fits_a_canvas(kind):
    canvas = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 0.98 + 0.01
    p = make(kind)
    err = p.fit(canvas)
    assert err < 1e-4
    assert torch.allclose(p.image().detach(), canvas, atol=1e-4)


def test_pyramid_fit_puts_coarse_content_in_coarse_levels():
    """Fitting a picture (--init, a preset flip, a retarget) fills the pyramid coarse to fine by least
    squares: a flat picture is all level 1, a left/right split mostly level 2, and the sum is exact."""
    flat = make("pyramid")
    assert flat.fit(torch.full((1, 3, 64, 64), 0.8)) < 1e-5
    level1 = flat.tensors["level1"]
    assert torch.allclose(level1, torch.full_like(level1, float(np.log(0.8 / 0.2))), atol=1e-5)
    assert all(float(t.detach().abs().max()) < 1e-5 for k, t in flat.tensors.items() if k != "level1")

    split = torch.full((1, 3, 64, 64), 0.1)
    split[..., 32:] = 0.9
    yy, xx = np.mgrid[:64, :64]
    split[0, 0][torch.from_numpy((yy - 30) ** 2 + (xx - 20) ** 2 < 100)] = 0.8  # a red disc for the fine levels
    p = make("pyramid")
    assert p.fit(split) < 1e-4
    energy = {k: float(t.detach().norm()) for k, t in p.tensors.items()}
    # all of it in the finest level would be the whole logit picture's norm; here a small part is
    assert energy["level64"] < 0.25 * float(logit(split).norm())
    assert energy["level2"] > energy["level1"]  # the left/right split lives at 2 px, not in the mean
    # a finest level below the canvas cannot be exact; least squares beats the old area average there
    capped = make("pyramid", finest=16)
    err = capped.fit(split)
    assert 0 < err < 1
    area = torch.sigmoid(F.interpolate(F.adaptive_avg_pool2d(logit(split), 16), size=(64, 64), mode="bilinear"))
    assert float((capped.image().detach() - split).norm()) < float((area - split).norm())


def test_fourier_without_decay_or_decorrelation_is_an_invertible_change_of_variables():
    p = make("fourier", decay=0.0, decorrelate=False)
    canvas = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5)) * 0.9 + 0.05
    p.fit(canvas)
    assert torch.allclose(p.image().detach(), canvas, atol=1e-5)
    spec = p.tensors["spectrum"].detach().clone()
    p.fit(p.image().detach())  # image -> spectrum -> image -> spectrum is the identity
    assert torch.allclose(p.tensors["spectrum"], spec, atol=1e-4)


def test_fourier_decay_moves_power_to_low_frequencies():
    flat = make("fourier", decay=0.0, init_std=0.5)
    steep = make("fourier", decay=1.5, init_std=0.5)

    def low_share(p) -> float:
        x = p._spatial(p.tensors["spectrum"]).detach()
        power = torch.fft.rfft2(x).abs() ** 2
        return float(power[..., :4, :4].sum() / power.sum())

    assert low_share(steep) > 5 * low_share(flat)


def _transform(name: str, **settings):
    cls = lookup("transform", name, "transforms")
    return cls(cls.Settings(**settings))


@pytest.mark.parametrize("name", sorted(["affine", "cutouts", "jitter", "pad", "noise"]))
def test_every_transform_is_reproducible_from_the_saved_generator_state(name):
    t = _transform(name)
    x = torch.rand(1, 3, 32, 32)
    gen = torch.Generator().manual_seed(11)
    t(x, 4, gen)  # advance the stream
    state = gen.get_state()
    first = t(x, 4, gen)
    again = torch.Generator()
    again.set_state(state)
    second = t(x, 4, again)
    assert first.shape[0] == 4
    assert torch.equal(first, second)
    if name != "pad":  # pad is deterministic; the others must draw new views
        assert not torch.equal(first, t(x, 4, gen))


def test_cutout_sizes_follow_the_cut_pow_law():
    s = CutoutSettings(cut_min=0.2, cut_max=0.9, cut_pow=2.0)
    c = sample_cutouts(torch.Generator().manual_seed(0), 20000, s).numpy()
    side = c[:, 0]
    u = (side - 0.2) / 0.7  # = v^2 with v ~ U(0,1): P(u <= q) = sqrt(q)
    for q in (0.04, 0.25, 0.5, 0.81):
        assert abs((u <= q).mean() - np.sqrt(q)) < 0.015
    assert (c[:, 1] >= 0).all() and (c[:, 1] + side <= 1 + 1e-9).all()
    flat = sample_cutouts(torch.Generator().manual_seed(0), 20000, CutoutSettings(0.2, 0.9, 1.0)).numpy()[:, 0]
    assert side.mean() < flat.mean() - 0.1  # cut_pow > 1 favours small crops


def test_cutouts_take_the_crop_they_claim():
    x = torch.arange(64.0).view(1, 1, 1, 64).expand(1, 3, 64, 64).contiguous()
    t = _transform("cutouts", cut_min=0.5, cut_max=0.5, cut_pow=1.0)
    gen = torch.Generator().manual_seed(2)
    state = gen.get_state()
    out = t(x, 1, gen)
    gen.set_state(state)
    side, ox, _ = sample_cutouts(gen, 1, t.settings)[0].tolist()
    # a crop of half the canvas, resampled to full size: columns span [ox*64, (ox+side)*64)
    assert abs(float(out[0, 0, 0, 0]) - (ox * 64 + 0.25)) < 1.0
    assert abs(float(out[0, 0, 0, -1]) - ((ox + side) * 64 - 0.75)) < 1.0


@pytest.mark.parametrize("fill", ["zeros", "border", "reflection", "ground"])
def test_affine_fill_decides_what_the_uncovered_area_shows(fill):
    """A white canvas zoomed out and shifted: black corners with "zeros" (seed 004's views), still
    white with "border", "reflection" or "ground" (a white ground is not shown to the model against black)."""
    white = torch.full((1, 3, 64, 64), 0.94)
    t = _transform("affine", degrees=20.0, translate=0.2, scale_min=0.6, scale_max=0.7, flip_p=0.0, fill=fill)
    views = t(white, 8, torch.Generator().manual_seed(1))
    darkest = float(views.min())
    if fill == "zeros":
        assert darkest == 0.0
    else:
        assert darkest > 0.93


def test_ground_fill_is_one_flat_colour_the_mean_of_the_canvas_rim():
    """The "ground" fill surrounds a zoomed-out canvas with the mean colour of its outer ring, one colour for
    the whole uncovered area: a canvas whose left edge is red and right edge blue gets a purple field
    where "border" would repeat red on one side and blue on the other. The fill is differentiable
    in the rim, so the rim is pulled toward what the model wants around the picture."""
    canvas = torch.zeros(1, 3, 64, 64)
    canvas[:, 0, :, :32] = 1.0  # left half red
    canvas[:, 2, :, 32:] = 1.0  # right half blue
    canvas.requires_grad_(True)
    zoom = dict(degrees=0.0, translate=0.0, scale_min=0.5, scale_max=0.5, flip_p=0.0)
    ground = _transform("affine", fill="ground", **zoom)(canvas, 1, torch.Generator().manual_seed(0))
    border = _transform("affine", fill="border", **zoom)(canvas.detach(), 1, torch.Generator().manual_seed(0))
    corners = ground[0, :, [0, 0, -1, -1], [0, -1, 0, -1]]  # (3, 4): the four corners' colours
    assert torch.allclose(corners, torch.tensor([0.5, 0.0, 0.5]).view(3, 1).expand(3, 4), atol=1e-6)
    assert torch.allclose(ground[0, :, 32, 32], canvas[0, :, 32, 32].detach(), atol=0.51)  # the canvas is still there
    assert float(border[0, 0, 0, 0]) == 1.0 and float(border[0, 2, 0, -1]) == 1.0  # border: red left, blue right
    ground[0, :, 0, 0].sum().backward()
    rim, inside = canvas.grad[0, :, 0, :].abs().sum(), canvas.grad[0, :, 20:44, 20:44].abs().sum()
    assert float(rim) > 0 and float(inside) == 0.0


def spec_with(base: str, **changes) -> LaneSpec:
    spec = preset(base)
    for k, v in changes.items():
        spec = spec.with_value(k, v)
    return spec


def test_an_ensembles_similarity_is_the_sum_of_the_single_model_ones(shapes_a, shapes_b):
    pixels = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    models = {"shapes-b": shapes_b}
    both = Engine(shapes_a, PROMPT, {"a": spec_with("unconstrained", models="shapes-a+shapes-b")}, models=models)
    only_a = Engine(shapes_a, PROMPT, {"a": spec_with("unconstrained")})
    only_b = Engine(shapes_a, PROMPT, {"a": spec_with("unconstrained", models="shapes-b")}, models=models)
    with torch.no_grad():
        s = [float(e.term_similarity(e.lanes["a"], pixels)) for e in (both, only_a, only_b)]
    assert s[0] == pytest.approx(s[1] + s[2], abs=1e-5)
    assert abs(s[2]) > 1e-3 and abs(s[1]) > 1e-3
    both.step(2)
    row = both.lanes["a"].pending[-1]
    assert float(row[0]) != 0.0


def test_an_ensemble_naming_a_model_that_is_not_loaded_is_refused(shapes_a):
    with pytest.raises(Exception, match="not loaded"):
        Engine(shapes_a, PROMPT, {"a": spec_with("unconstrained", models="shapes-z")})


FOUR = {
    "a": ("unconstrained", {}),
    "b": ("constrained", {"views": 3}),
    "c": ("constrained", {"param": "fourier", "views": 2, "transforms": "pad+jitter+affine+noise"}),
    "d": ("constrained", {"param": "pyramid", "views": 2, "transforms": "cutouts", "schedule": "cosine", "warmup": 2}),
}


def test_a_four_lane_run_equals_each_lane_run_alone(shapes_a):
    specs = {name: spec_with(base, **ch) for name, (base, ch) in FOUR.items()}
    together = Engine(shapes_a, PROMPT, specs, seed=4, eval_every=3)
    together.step(6)
    for name, spec in specs.items():
        alone = Engine(shapes_a, PROMPT, {name: spec}, seed=4, eval_every=3)
        alone.step(6)
        a, b = together.lane_state(name), alone.lane_state(name)
        assert set(a) == set(b)
        for key in a:
            # 1e-4: batched and single matmuls round differently (2.6e-5 after 6 steps on an AVX-512 CPU);
            # a lane that leaked into another would differ by 1e-2 or more
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-4, err_msg=f"{name}/{key}")


def test_four_lanes_take_one_batched_pass(shapes_a, monkeypatch):
    specs = {name: spec_with(base, **ch) for name, (base, ch) in FOUR.items()}
    e = Engine(shapes_a, PROMPT, specs, seed=4, eval_every=0)
    calls = []
    real = shapes_a.model.encode_image
    monkeypatch.setattr(shapes_a.model, "encode_image", lambda x: calls.append(x.shape[0]) or real(x))
    e.configure()  # the engine binds the tower's encode_image when configured
    e.step(2)
    assert e.forwards == 2 and calls == [1 + (3 + 1) + (2 + 1) + (2 + 1)] * 2


@pytest.mark.parametrize("lane", sorted(FOUR))
def test_each_kind_of_lane_restores_bit_exactly(shapes_a, lane):
    base, ch = FOUR[lane]
    spec = spec_with(base, **ch)
    straight = Engine(shapes_a, PROMPT, {lane: spec}, seed=2, eval_every=0)
    straight.step(8)
    first = Engine(shapes_a, PROMPT, {lane: spec}, seed=2, eval_every=0)
    first.step(4)
    state = {k: v.copy() for k, v in first.lane_state(lane).items()}
    second = Engine(shapes_a, PROMPT, {lane: spec}, seed=2, eval_every=0)
    second.load_lane_state(lane, state)
    second.step(4)
    a, b = straight.lane_state(lane), second.lane_state(lane)
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_every_registered_part_round_trips_through_its_table():
    for kind, table in REGISTRY.items():
        assert table, kind
    spec = spec_with("constrained", param="fourier", transforms="pad+jitter+affine+cutouts+noise", decay=1.3)
    assert from_table(spec.to_table()) == spec


@pytest.mark.parametrize(
    "change,why",
    [
        ({"param": {"kind": "voxels"}}, "unknown param 'voxels'"),
        ({"optim": {"kind": "adam", "momentum": 0.9}}, "unknown field 'momentum'"),
        ({"terms": [{"kind": "tv", "weight": 0.1}]}, "needs a similarity term"),
        ({"views": {"augment": True, "views": 999}}, "within"),
        ({"transforms": [{"kind": "cutouts", "cut_min": 0.9, "cut_max": 0.2}]}, "must not exceed"),
        ({"extra": 1}, "unknown key 'extra'"),
    ],
)
def test_bad_lane_tables_are_refused_in_one_line(change, why):
    table = {**preset("constrained").to_table(), **change}
    with pytest.raises(ParamError, match=why) as info:
        from_table(table)
    assert "\n" not in str(info.value)


def test_short_and_dotted_keys_and_part_swaps():
    spec = spec_with("constrained", param="fourier", views=4, **{"affine.degrees": 30, "tv_weight": 0.01})
    assert spec.param.name == "fourier" and spec.views.views == 4
    assert spec.value("degrees") == 30 and spec.value("tv.weight") == 0.01
    with pytest.raises(ParamError, match="not a setting"):
        spec.with_value("decay_rate", 1)
    with pytest.raises(ParamError, match="within"):
        spec.with_value("lr", -1)
    live = [k for k, _, _ in spec.live_keys()]
    assert "lr" in live and "views" in live and "init_std" not in live


def test_lr_schedules():
    opt = lookup("optim", "adam", "optim")
    s = opt.Settings(lr=1.0, schedule="cosine", warmup=4, horizon=10)
    o = opt(s)
    lrs = [o.lr_at(i) for i in range(20)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0) and lrs[9] == pytest.approx(0.5) and lrs[14] == pytest.approx(0.0, abs=1e-12)
    assert not opt(opt.Settings()).scheduled()
