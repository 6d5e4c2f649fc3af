"""`ground = "bw"` of the two-colour parameterizations (`vae`, `outline`): the ground a lane shows is
black or white, the shapes world's two grounds, never the mid grey a model may settle on, and the
optimizer still gets a gradient for it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipterm.parts.base import lookup
from clipterm.shapes import render


def make(kind: str, **settings):
    cls = lookup("param", kind, "param")
    return cls(cls.Settings(**settings), 64, torch.device("cpu"), 0)


@pytest.mark.parametrize("kind", ["vae", "outline"])
def test_a_bw_ground_shows_black_or_white_and_passes_a_gradient(kind):
    shown = set()
    for start in (-0.3, -0.05, 0.05, 0.3):  # ground levels around mid grey
        p = make(kind, ground="bw")
        with torch.no_grad():
            p.tensors["ground"].fill_(start)
        img = p.image()
        corner = img.detach()[0, :, 0, 0]
        assert float(corner.max() - corner.min()) < 1e-6
        shown.add(round(float(corner[0]), 6))
        img.sum().backward()
        assert float(p.tensors["ground"].grad.abs().sum()) > 0
        grey = make(kind, ground="grey")
        with torch.no_grad():
            grey.tensors["ground"].fill_(start)
        assert 0.02 < float(grey.image().detach()[0, 0, 0, 0]) < 0.98  # what "grey" would have shown
    assert shown == {0.0, 1.0}


@pytest.mark.parametrize("kind", ["vae", "outline"])
@pytest.mark.parametrize(("ground", "level"), [("white", 1.0), ("black", 0.0)])
def test_a_fit_with_a_bw_ground_reads_the_pictures_ground(kind, ground, level):
    canvas = torch.from_numpy(render("red", "square", ground, 16, 30, 32).astype(np.float32) / 255)
    p = make(kind, ground="bw")
    p.fit(canvas.permute(2, 0, 1)[None])
    assert float(p.image().detach()[0, 1, 0, 0]) == pytest.approx(level, abs=1e-6)
