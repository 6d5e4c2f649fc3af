"""`pyramid`: the image is the sum of tensors at resolutions 1, 2, 4, ... up to the canvas, each
upsampled to the canvas, through a sigmoid.

Coarse levels move whole regions at once, so large shapes form before fine detail (the
multi-resolution idea of pixray and VQGAN+CLIP's successors).
"""

from __future__ import annotations

from dataclasses import dataclass

from clipterm.lazy import F, no_grad, torch
from clipterm.parts.base import setting
from clipterm.parts.image import ImageParam, logit, register_param


@dataclass(frozen=True)
class PyramidSettings:
    init_std: float = setting(0.01, float, 0.0, 10.0, live=False, doc="spread of each level's starting noise")
    coarsest: int = setting(1, int, 1, 4096, live=False, doc="side of the coarsest level")
    finest: int = setting(0, int, 0, 4096, live=False, doc="side of the finest level (0: the canvas)")


def level_sides(size: int, coarsest: int = 1, finest: int = 0) -> list[int]:
    """coarsest, 2*coarsest, 4*coarsest, ... below the finest level, then the finest level itself (the
    canvas side unless `finest` caps it: a coarser finest level paints only large smooth regions)."""
    top = min(size, finest) if finest > 0 else size
    sides, s = [], max(1, min(coarsest, top))
    while s < top:
        sides.append(s)
        s *= 2
    return sides + [top]


@register_param
class Pyramid(ImageParam):
    name = "pyramid"
    Settings = PyramidSettings
    about = "sum of upsampled levels 1, 2, 4, ... px, sigmoid output"

    @classmethod
    def shapes(cls, settings: PyramidSettings, size: int) -> dict[str, tuple[int, ...]]:
        return {f"level{s}": (3, s, s) for s in level_sides(size, settings.coarsest, settings.finest)}

    def init(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        shapes = self.shapes(self.settings, self.size).items()
        return {name: torch.randn((1, *shape), generator=gen) * self.settings.init_std for name, shape in shapes}

    def _sum(self) -> torch.Tensor:
        total = None
        for t in self.tensors.values():
            up = t if t.shape[-1] == self.size else F.interpolate(t, size=(self.size, self.size), mode="bilinear")
            total = up if total is None else total + up
        assert total is not None
        return total

    def image(self) -> torch.Tensor:
        return torch.sigmoid(self._sum())

    @no_grad
    def fit(self, canvas: torch.Tensor) -> float:
        """The canvas goes into the finest level (area-averaged when that level is coarser than the
        canvas, so the fit is then approximate: the error says how far)."""
        finest = list(self.tensors.values())[-1]
        target = canvas.to(finest).float()
        for t in self.tensors.values():
            t.zero_()
        x = logit(target)
        if finest.shape[-1] != self.size:
            x = F.adaptive_avg_pool2d(x, finest.shape[-1])
        finest.copy_(x)
        return float((self.image() - target).abs().max())
