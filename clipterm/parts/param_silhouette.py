"""`silhouette`: two flat colours, a ground and a figure, blended by one soft mask.

The mask is a multi-resolution sum (levels 1, 2, 4, ... px, as in `pyramid`) through a sigmoid,
and each colour is one RGB triple for the whole canvas. So the model can move only the figure's
outline and the two colours: it cannot paint a texture of colour fragments, and what it accepts
as "a triangle" shows as a cut-out. The idea is the cut-out / layered canvases of CLIPDraw-style
tools, reduced to one layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from clipterm.lazy import F, no_grad, torch
from clipterm.parts.base import setting
from clipterm.parts.image import ImageParam, figure_and_ground, logit, register_param
from clipterm.parts.param_pyramid import level_sides, level_sum


@dataclass(frozen=True)
class SilhouetteSettings:
    init_std: float = setting(0.01, float, 0.0, 10.0, live=False, doc="spread of each mask level's starting noise")
    colour_std: float = setting(0.5, float, 0.0, 10.0, live=False, doc="spread of the two colours' starting logits")
    coarsest: int = setting(1, int, 1, 4096, live=False, doc="side of the mask's coarsest level")
    finest: int = setting(0, int, 0, 4096, live=False, doc="side of the mask's finest level (0: the canvas)")


@register_param
class Silhouette(ImageParam):
    name = "silhouette"
    Settings = SilhouetteSettings
    about = "a figure colour and a ground colour blended by a multi-resolution soft mask"

    @classmethod
    def shapes(cls, settings: SilhouetteSettings, size: int) -> dict[str, tuple[int, ...]]:
        levels = {f"mask{s}": (1, s, s) for s in level_sides(size, settings.coarsest, settings.finest)}
        return {"ground": (3, 1, 1), "figure": (3, 1, 1), **levels}

    def init(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        out = {}
        for name, shape in self.shapes(self.settings, self.size).items():
            std = self.settings.init_std if name.startswith("mask") else self.settings.colour_std
            out[name] = torch.randn((1, *shape), generator=gen) * std
        return out

    def _levels(self) -> list[torch.Tensor]:
        return [t for name, t in self.tensors.items() if name.startswith("mask")]

    def mask(self) -> torch.Tensor:
        """The figure's weight per pixel, (1,1,H,W) in (0,1)."""
        return torch.sigmoid(level_sum(self._levels(), self.size))

    def image(self) -> torch.Tensor:
        ground = torch.sigmoid(self.tensors["ground"])
        figure = torch.sigmoid(self.tensors["figure"])
        return ground + self.mask() * (figure - ground)

    @no_grad
    def fit(self, canvas: torch.Tensor) -> float:
        """The nearest silhouette of a picture: the ground is the mean colour of the border, the
        figure the mean of the pixels far from it, and the mask each pixel's position between the
        two (area-averaged into the finest level; coarser levels start at zero). A picture of more
        than two colours cannot be matched: the returned max abs error says how far it is."""
        first = self.tensors["ground"]
        target = canvas.to(first).float()
        ground, figure, weight = figure_and_ground(target)
        self.tensors["ground"].copy_(logit(ground))
        self.tensors["figure"].copy_(logit(figure))
        levels = self._levels()
        for t in levels[:-1]:
            t.zero_()
        levels[-1].copy_(F.adaptive_avg_pool2d(logit(weight.clamp(0, 1)), levels[-1].shape[-1]))
        return float((self.image() - target).abs().max())
