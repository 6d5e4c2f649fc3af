"""The shape prior (`clipterm.prior`) and the `vae` parameterization that paints through it: a
lane drawn with it shows one figure on a ground, and the shipped prior really draws the base
world's figures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from clipterm import prior
from clipterm.cli import main
from clipterm.errors import ClipTermError
from clipterm.parts.base import lookup
from clipterm.shapes import render


def make(size: int = 64, seed: int = 0, **settings):
    cls = lookup("param", "vae", "param")
    return cls(cls.Settings(**settings), size, torch.device("cpu"), seed)


def picture(colour: str, shape: str, ground: str, r: int = 18, cx: int = 32, cy: int = 34) -> torch.Tensor:
    return torch.from_numpy(render(colour, shape, ground, r, cx, cy).astype(np.float32) / 255).permute(2, 0, 1)[None]


def test_masks_are_single_binary_figures_inside_the_canvas():
    rng = np.random.default_rng(3)
    ms = [prior.render_mask(rng) for _ in range(300)]
    assert all(set(np.unique(m)) <= {0, 255} for m in ms)
    areas = np.array([(m > 0).sum() for m in ms])
    assert 0 < (areas == 0).sum() < 30  # a few plain grounds, not many
    full = [m for m in ms if m.any()]
    rims = [np.concatenate([m[0], m[-1], m[:, 0], m[:, -1]]) for m in full]
    assert all((rim > 0).mean() < 0.5 for rim in rims)  # a figure on a ground, never a ground-filling one
    assert areas.max() < 64 * 64 * 0.9 and np.median(areas[areas > 0]) > 100
    # deterministic per seed
    assert np.array_equal(prior.render_mask(np.random.default_rng(9)), prior.render_mask(np.random.default_rng(9)))


@pytest.mark.parametrize("name", ["rich", "base"])
def test_the_shipped_priors_redraw_the_base_world_figures(name):
    """Encoded and decoded, each base shape comes back as itself (a real check of the bundled weights,
    not plumbing): intersection over union of the thresholded masks. Each record names its world."""
    vae = prior.load("cpu", prior.PRIORS[name])
    for shape in ("circle", "square", "triangle"):
        for r, cx, cy in ((11, 20, 22), (18, 32, 34), (22, 40, 41)):
            red = render("red", shape, "black", r, cx, cy)[..., 0] > 100
            m = torch.from_numpy(red.astype(np.float32))[None, None]
            with torch.no_grad():
                back = torch.sigmoid(vae.logits(vae.encode(m)[0])) > 0.5
            inter = float((back & (m > 0.5)).sum())
            union = float((back | (m > 0.5)).sum())
            assert inter / union > 0.9, (shape, r)
    record = json.loads((prior.PRIORS[name] / prior.CONFIG).read_text())
    assert record["heldout_mean_abs_error"] < 0.02 and record["steps"] >= 1000
    assert record.get("figures", "rich") == name


def test_the_prior_setting_picks_the_bundled_prior_that_draws_the_lane():
    rich, base = make(init_std=1.0), make(init_std=1.0, prior="base")
    assert torch.equal(rich.tensors["code"], base.tensors["code"])  # the same start, another decoder
    assert float((rich.mask() - base.mask()).detach().abs().mean()) > 0.01
    with torch.no_grad():
        drawn = torch.sigmoid(prior.load("cpu", prior.PRIORS["base"]).logits(base.tensors["code"]))
    assert torch.allclose(base.mask().detach(), drawn, atol=1e-6)


def test_every_pixel_lies_between_the_ground_and_the_figure_colour():
    p = make(init_std=2.0, colour_std=2.0)
    img = p.image().detach()[0].reshape(3, -1)
    ground = torch.sigmoid(4 * p.tensors["ground"]).detach().reshape(3, 1)
    figure = torch.sigmoid(4 * p.tensors["figure"]).detach().reshape(3, 1)
    span = figure - ground
    t = ((img - ground) * span).sum(0) / (span * span).sum()
    assert float(t.min()) >= 0 and float(t.max()) <= 1
    assert torch.allclose(img, ground + t * span, atol=1e-5)
    assert float(t.std()) > 0.1  # the mask does draw something


def test_gradients_reach_the_code_and_both_colours_and_the_canvas_size_follows_the_model():
    p = make(colour_std=1.0)
    assert set(p.tensors) == {"code", "ground", "figure"} and p.tensors["code"].shape == (1, prior.latent_size())
    (p.image() * torch.linspace(-1, 1, 64)).sum().backward()
    assert all(t.grad is not None and float(t.grad.abs().sum()) > 0 for t in p.parameters())
    assert make(size=224).image().shape == (1, 3, 224, 224)


def test_the_code_is_kept_inside_max_norm():
    p = make(init_std=5.0, max_norm=3.0)
    assert float(p.tensors["code"].detach().norm()) > 3.0
    p.after_step()
    assert float(p.tensors["code"].detach().norm()) == pytest.approx(3.0, rel=1e-5)
    free = make(init_std=5.0, max_norm=0.0)
    before = free.tensors["code"].clone()
    free.after_step()
    assert torch.equal(before, free.tensors["code"])


def test_a_base_world_picture_fits_closely_and_noise_does_not():
    canvas = picture("blue", "triangle", "white")
    p = make()
    p.fit(canvas)
    img = p.image().detach()
    assert float((img - canvas).abs().mean()) < 0.02
    ground, figure = (torch.sigmoid(4 * p.tensors[k]).flatten() for k in ("ground", "figure"))
    assert torch.allclose(ground, torch.tensor([240.0] * 3) / 255, atol=0.02)
    assert torch.allclose(figure, torch.tensor([30.0, 60, 220]) / 255, atol=0.05)
    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert make().fit(noise) > 0.3


def test_train_prior_writes_a_prior_that_loads(tmp_path, capsys):
    """Plumbing only (4 steps; the model is not trained): the command writes weights and a record
    that `prior.load` reads back, and refuses a broken folder in one line."""
    out = tmp_path / "p"
    assert main(["train-prior", "--out", str(out), "--steps", "4", "--batch", "4"]) == 0
    record = json.loads((out / prior.CONFIG).read_text())
    assert record["steps"] == 4 and record["config"]["latent"] == prior.latent_size()
    vae = prior.load("cpu", out)
    assert vae.logits(torch.zeros(1, prior.latent_size())).shape == (1, 1, 64, 64)
    (out / prior.CONFIG).write_text("{not json")
    with pytest.raises(ClipTermError, match="no usable shape prior"):
        prior.latent_size(out)
    assert main(["train-prior", "--out", str(out), "--steps", "0"]) == 2


def test_a_grey_ground_is_one_value_and_a_fit_reads_the_ground_as_grey():
    p = make(ground="grey", colour_std=2.0, init_std=2.0)
    assert p.tensors["ground"].shape == (1, 1, 1, 1) and p.tensors["figure"].shape == (1, 3, 1, 1)
    corner = p.image().detach()[0, :, 0, 0]
    assert float(corner.max() - corner.min()) < 1e-6
    (p.image() * torch.linspace(-1, 1, 64)).sum().backward()
    assert float(p.tensors["ground"].grad.abs().sum()) > 0
    canvas = picture("yellow", "circle", "white")
    q = make(ground="grey")
    q.fit(canvas)
    assert float((q.image().detach() - canvas).abs().mean()) < 0.02
    assert float(torch.sigmoid(4 * q.tensors["ground"].detach())) == pytest.approx(240 / 255, abs=0.02)


def test_scale_keeps_the_figure_inside_a_centred_frame():
    """The same code drawn at scale 0.5: nothing outside the middle half of the canvas, and inside it
    the full-scale figure shrunk (compared at the full-scale mask's own resolution)."""
    full = make(init_std=1.0)
    half = make(init_std=1.0, scale=0.5)
    assert torch.equal(full.tensors["code"], half.tensors["code"])
    big, small = full.mask().detach(), half.mask().detach()
    assert float(big.max()) > 0.5 > float(big.min())  # the code does draw a figure on a ground
    ring = torch.ones(64, 64, dtype=torch.bool)
    ring[15:49, 15:49] = False  # the 32-pixel frame (16..47) and a pixel of slack for the bilinear edge
    assert float(small[0, 0][ring].max()) < 1e-6
    shrunk = torch.nn.functional.interpolate(big, size=(32, 32), mode="area")
    assert float((small[..., 16:48, 16:48] - shrunk).abs().mean()) < 0.05


def test_a_fit_at_a_smaller_scale_matches_a_figure_inside_the_frame_and_not_one_outside():
    inside = picture("green", "square", "black", r=12, cx=32, cy=32)
    p = make(scale=0.7)
    p.fit(inside)
    assert float((p.image().detach() - inside).abs().mean()) < 0.02
    corner = picture("green", "square", "black", r=10, cx=10, cy=10)  # outside the middle 70 %
    q = make(scale=0.7)
    assert q.fit(corner) > 0.5
    assert float((q.image().detach() - corner).abs().mean()) > 0.01


def test_a_hard_edge_draws_the_worlds_0_1_mask_and_still_passes_the_soft_gradient():
    soft, hard = make(init_std=1.0), make(init_std=1.0, edge="hard")
    m_soft, m_hard = soft.mask(), hard.mask()
    assert set(torch.unique(m_hard.detach()).tolist()) == {0.0, 1.0}
    assert torch.equal(m_hard.detach(), (m_soft.detach() > 0.5).float())
    assert 0 < float(((m_soft > 0.05) & (m_soft < 0.95)).float().sum())  # the soft rim the cut removes
    (m_hard * torch.linspace(-1, 1, 64)).sum().backward()
    (m_soft * torch.linspace(-1, 1, 64)).sum().backward()
    assert float(hard.tensors["code"].grad.abs().sum()) > 0
    assert torch.allclose(hard.tensors["code"].grad, soft.tensors["code"].grad)


def _box_and_fill(m: np.ndarray) -> tuple[int, int, float]:
    ys, xs = np.nonzero(m)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    return int(h), int(w), float((m > 0).sum() / (h * w))


def test_a_base_world_prior_learns_only_circles_squares_and_triangles():
    """`figures="base"`: every figure has a square box filled like a square (1), a circle (pi/4) or
    a triangle (1/2); the rich world also has ellipses, rectangles, stars and crosses, which do not."""

    def kinds(figures: str) -> list[tuple[int, int, float]]:
        rng = np.random.default_rng(5)
        return [_box_and_fill(m) for m in (prior.render_mask(rng, figures) for _ in range(200)) if m.any()]

    def base_like(h: int, w: int, fill: float) -> bool:
        return abs(h - w) <= 1 and min(abs(fill - f) for f in (1.0, math.pi / 4, 0.5)) < 0.06

    assert all(base_like(*k) for k in kinds("base"))
    assert sum(not base_like(*k) for k in kinds("rich")) > 30


def test_ground_start_begins_near_black_or_white_by_the_seed_and_keeps_the_rest_of_the_draw():
    greys = []
    for seed in range(12):
        p = make(seed=seed, ground="grey", scale=0.85, ground_start=0.4)
        plain = make(seed=seed, ground="grey", scale=0.85)
        assert torch.equal(p.tensors["code"], plain.tensors["code"])  # the same shape start as without it
        assert torch.equal(p.tensors["figure"], plain.tensors["figure"])
        greys.append(float(p.image().detach()[0, 0, 0, 0]))  # a corner: outside the figure's frame
        assert float(plain.image().detach()[0, 0, 0, 0]) == pytest.approx(0.5)
    assert all(g == pytest.approx(0.1, abs=1e-4) or g == pytest.approx(0.9, abs=1e-4) for g in greys)
    assert 0 < sum(g < 0.5 for g in greys) < len(greys)  # both grounds occur among the seeds


def test_train_prior_offers_every_bundled_prior_world(capsys):
    """`clipterm train-prior --figures` lists its worlds without importing the prior module (numpy
    at --help time); this keeps the two lists the same."""
    from clipterm.cli import main
    from clipterm.prior import PRIORS

    with pytest.raises(SystemExit):
        main(["train-prior", "--help"])
    out = capsys.readouterr().out
    assert "{" + ",".join(PRIORS) + "}" in out.replace(" ", "").replace("\n", "")
