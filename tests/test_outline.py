"""The `outline` parameterization: one filled star-shaped figure in one colour on a flat ground, so
a lane painted with it shows a single object whatever the model asks for."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipterm.engine import Engine
from clipterm.lanespec import apply_pairs
from clipterm.parts.base import ParamError, lookup
from clipterm.presets import preset
from clipterm.shapes import render


def make(size: int = 64, seed: int = 0, **settings):
    cls = lookup("param", "outline", "param")
    return cls(cls.Settings(**settings), size, torch.device("cpu"), seed)


def as_canvas(picture) -> torch.Tensor:
    return torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255).permute(2, 0, 1)[None]


def components(mask: np.ndarray) -> int:
    """4-connected components of a boolean mask (a plain flood fill)."""
    seen = np.zeros_like(mask)
    count = 0
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        count += 1
        stack = [(y0, x0)]
        seen[y0, x0] = True
        while stack:
            y, x = stack.pop()
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                v, u = y + dy, x + dx
                if 0 <= v < mask.shape[0] and 0 <= u < mask.shape[1] and mask[v, u] and not seen[v, u]:
                    seen[v, u] = True
                    stack.append((v, u))
    return count


@pytest.mark.parametrize("seed", range(6))
def test_the_figure_is_one_object_of_one_colour_whatever_the_tensors(seed):
    """Large random tensors: every pixel lies on the segment between the ground and the figure
    colour, and the figure is one connected region. (The region is star-shaped around the centre by
    construction; on a 64 px grid a spike thinner than a pixel can leave stray pixels, so the
    connectivity is checked at harmonics 8 with decay 1, the outlines the presets can reach.)"""
    p = make(seed=seed, harmonics=8, decay=1.0, init_std=1.0, colour_std=2.0)
    img = p.image().detach()[0].reshape(3, -1)
    ground = torch.sigmoid(p.tensors["ground"]).detach().reshape(3, 1)
    figure = torch.sigmoid(p.tensors["figure"]).detach().reshape(3, 1)
    span = figure - ground
    t = ((img - ground) * span).sum(0) / (span * span).sum()
    assert float(t.min()) >= -1e-5 and float(t.max()) <= 1 + 1e-5
    assert torch.allclose(img, ground + t * span, atol=1e-5)
    inside = (p.mask().detach()[0, 0] > 0.5).numpy()
    assert 0 < inside.sum() < inside.size  # the test is not vacuous: there is a figure and a ground
    assert components(inside) == 1


def test_a_pixel_canvas_of_the_same_noise_is_many_fragments():
    """The one-object property is the parameterization's, not the check's: pixel noise thresholded
    the same way falls apart into many regions."""
    noise = torch.rand(64, 64, generator=torch.Generator().manual_seed(0)).numpy() > 0.5
    assert components(noise) > 50


def test_gradients_reach_every_tensor():
    p = make()
    assert set(p.tensors) == {"ground", "figure", "centre", "outline"}
    assert p.tensors["outline"].shape == (1, 17, 1, 1)  # c0 and 8 harmonics' cos and sin
    (p.image() * torch.linspace(-1, 1, 64)).sum().backward()
    assert all(t.grad is not None and float(t.grad.abs().sum()) > 0 for t in p.parameters())


def test_a_grey_ground_has_one_value_for_all_three_channels():
    p = make(ground="grey", colour_std=2.0)
    assert p.tensors["ground"].shape == (1, 1, 1, 1)
    corner = p.image().detach()[0, :, 0, 0]
    assert float(corner.max() - corner.min()) < 1e-6
    with pytest.raises(ParamError, match="ground must be one of colour, grey"):
        apply_pairs(preset("pyramid-shift"), [("param", "outline"), ("ground", "blue")])


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
@pytest.mark.parametrize("ground", ["colour", "grey"])
def test_fit_recovers_a_shape_of_the_world(shape, ground):
    """--init and a preset flip fit the canvas: a figure of the shapes world comes back with its
    colours, its place and its outline (edges aside); a picture of many colours is reported far off."""
    cx, cy, r = 28, 36, 18
    canvas = as_canvas(render("blue", shape, "white", r, cx, cy))
    p = make(ground=ground)
    err = p.fit(canvas)
    img = p.image().detach()
    assert float((img - canvas).abs().mean()) < 0.03
    assert float((img - canvas).abs().max()) == pytest.approx(err, abs=1e-6)
    assert torch.allclose(torch.sigmoid(p.tensors["ground"]).flatten(), torch.tensor([240.0]) / 255, atol=0.01)
    assert torch.allclose(torch.sigmoid(p.tensors["figure"]).flatten(), torch.tensor([30, 60, 220]) / 255, atol=0.02)
    inside = (p.mask()[0, 0] > 0.5).numpy()
    truth = (canvas[0, 2] > 0.5).numpy() & (canvas[0, 0] < 0.5).numpy()
    assert (inside != truth).mean() < 0.03
    assert make().fit(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))) > 0.3


def test_the_fit_does_not_depend_on_the_harmonics_pace():
    """`decay` only changes how fast each harmonic moves, not which outline a fitted lane shows."""
    canvas = as_canvas(render("red", "triangle", "black", 16, 30, 30))
    a, b = make(decay=0.0), make(decay=2.0)
    a.fit(canvas)
    b.fit(canvas)
    assert torch.allclose(a.image(), b.image(), atol=1e-5)
    assert not torch.allclose(a.tensors["outline"], b.tensors["outline"])


def test_an_outline_lane_optimizes_toward_the_prompt_and_restores_exactly(shapes_a):
    spec = apply_pairs(preset("pyramid-shift"), [("param", "outline"), ("views", "4")])
    prompt = "a red circle on a black background"
    e = Engine(shapes_a, prompt, {"o": spec}, seed=2, eval_every=0)
    e.step(4)
    state = {k: v.copy() for k, v in e.lane_state("o").items()}
    e.step(26)
    e.flush()
    history = e.lanes["o"].history
    assert history[-1, 0] > history[0, 0] + 0.05  # the similarity rises
    again = Engine(shapes_a, prompt, {"o": spec}, seed=2, eval_every=0)
    again.load_lane_state("o", state)
    again.step(26)
    for key, value in e.lane_state("o").items():
        assert np.array_equal(value, again.lane_state("o")[key]), key
