"""The `silhouette` parameterization: two flat colours and one soft mask, so a lane painted with it
can show a figure on a ground but never a texture of colour fragments."""

from __future__ import annotations

import numpy as np
import torch

from clipterm.parts.base import lookup
from clipterm.shapes import render


def make(size: int = 64, seed: int = 0, **settings):
    cls = lookup("param", "silhouette", "param")
    return cls(cls.Settings(**settings), size, torch.device("cpu"), seed)


def test_every_pixel_lies_between_the_ground_and_the_figure_colour():
    p = make(init_std=2.0, colour_std=2.0)  # large random tensors: the most texture it could show
    img = p.image().detach()[0].reshape(3, -1)
    ground = torch.sigmoid(p.tensors["ground"]).detach().reshape(3, 1)
    figure = torch.sigmoid(p.tensors["figure"]).detach().reshape(3, 1)
    span = figure - ground
    t = ((img - ground) * span).sum(0) / (span * span).sum()
    assert float(t.min()) >= 0 and float(t.max()) <= 1
    # the residual off the ground-figure segment is zero: one colour axis, not three
    assert torch.allclose(img, ground + t * span, atol=1e-5)
    assert float(t.std()) > 0.1  # and the mask does vary (the test is not vacuous)


def test_gradients_reach_both_colours_and_every_mask_level():
    p = make(finest=16)
    assert set(p.tensors) == {"ground", "figure", "mask1", "mask2", "mask4", "mask8", "mask16"}
    (p.image() * torch.linspace(-1, 1, 64)).sum().backward()
    assert all(t.grad is not None and float(t.grad.abs().sum()) > 0 for t in p.parameters())


def test_a_shape_on_a_ground_fits_closely_and_noise_does_not():
    """--init and a preset flip fit the canvas: a two-colour picture of the shapes world is matched
    (edges aside), a picture of many colours is reported as far off."""
    canvas = torch.from_numpy(np.asarray(render("blue", "triangle", "white", 18, 32, 36), dtype=np.float32) / 255)
    canvas = canvas.permute(2, 0, 1)[None]
    p = make()
    err = p.fit(canvas)
    assert err < 0.02
    img = p.image().detach()
    assert float((img - canvas).abs().mean()) < 2e-3
    # the ground is the white, the figure the blue
    assert torch.allclose(torch.sigmoid(p.tensors["ground"]).flatten(), torch.tensor([240, 240, 240]) / 255, atol=0.01)
    assert torch.allclose(torch.sigmoid(p.tensors["figure"]).flatten(), torch.tensor([30, 60, 220]) / 255, atol=0.01)

    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert make().fit(noise) > 0.3
