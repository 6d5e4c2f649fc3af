"""`affine`: random rotation, translation, scale and horizontal flip per view (seed 004's views)."""

from __future__ import annotations

from dataclasses import dataclass

from clipterm.lazy import lazy_module, torch
from clipterm.parts.base import ParamError, register, setting
from clipterm.parts.view import Transform

augment = lazy_module("clipterm.augment")  # imports torch


@dataclass(frozen=True)
class AffineSettings:
    degrees: float = setting(10.0, float, 0.0, 180.0, doc="rotation up to ± this many degrees")
    translate: float = setting(0.1, float, 0.0, 0.5, doc="shift up to ± this fraction of the side")
    scale_min: float = setting(0.9, float, 0.1, 4.0, doc="smallest zoom")
    scale_max: float = setting(1.1, float, 0.1, 4.0, doc="largest zoom")
    flip_p: float = setting(0.3, float, 0.0, 1.0, doc="probability of a horizontal flip")
    # what fills the area a view uncovers: black (seed 004), the canvas's own edge pixels (so a white
    # ground is not shown to the model with black corners it must paint against), or one flat colour,
    # the mean of the canvas's rim ("ground": see augment.apply_affine)
    fill: str = setting("zeros", str, choices=("zeros", "border", "reflection", "ground"), doc="uncovered area")

    def check(self, where: str) -> None:
        if self.scale_min > self.scale_max:
            raise ParamError(f"{where}: scale_min ({self.scale_min:g}) must not exceed scale_max ({self.scale_max:g})")


@register
class Affine(Transform):
    name = "affine"
    Settings = AffineSettings
    about = "random rotate/shift/zoom/flip (seed 004)"

    def __call__(self, x: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
        s = self.settings
        theta = augment.sample_affine(gen, n, s.degrees, s.translate, s.scale_min, s.scale_max, s.flip_p)
        return augment.apply_affine(x, theta, s.fill)
