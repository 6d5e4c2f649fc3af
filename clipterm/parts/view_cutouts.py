"""`cutouts`: n square crops whose side follows min + (max - min) * u^cut_pow (VQGAN+CLIP style).

cut_pow > 1 favours small crops (detail), < 1 large ones (composition). Each crop is resampled to
the canvas size in one batched grid_sample, so all crops stay one tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

from clipterm.lazy import F, torch
from clipterm.parts.base import ParamError, register, setting
from clipterm.parts.view import Transform, expand


@dataclass(frozen=True)
class CutoutSettings:
    cut_min: float = setting(0.25, float, 0.01, 1.0, doc="smallest crop side, as a fraction of the canvas")
    cut_max: float = setting(1.0, float, 0.01, 1.0, doc="largest crop side, as a fraction of the canvas")
    cut_pow: float = setting(1.0, float, 0.05, 20.0, doc="crop side = min + (max-min)*u^cut_pow")

    def check(self, where: str) -> None:
        if self.cut_min > self.cut_max:
            raise ParamError(f"{where}: cut_min ({self.cut_min:g}) must not exceed cut_max ({self.cut_max:g})")


def sample_cutouts(gen: torch.Generator, n: int, s: CutoutSettings) -> torch.Tensor:
    """(n, 3) float64: crop side and top-left corner (x, y), all as fractions of the canvas."""
    u = torch.rand(n, 3, generator=gen, dtype=torch.float64)
    side = s.cut_min + (s.cut_max - s.cut_min) * u[:, 0] ** s.cut_pow
    return torch.stack([side, u[:, 1] * (1 - side), u[:, 2] * (1 - side)], dim=1)


@register
class Cutouts(Transform):
    name = "cutouts"
    Settings = CutoutSettings
    about = "square crops, side min+(max-min)*u^cut_pow (VQGAN+CLIP)"

    def __call__(self, x: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
        c = sample_cutouts(gen, n, self.settings)
        side, ox, oy = c[:, 0], c[:, 1], c[:, 2]
        zero = torch.zeros_like(side)
        # output grid [-1,1] -> the crop's span [-1 + 2o, -1 + 2(o + side)] of the input
        theta = torch.stack(
            [torch.stack([side, zero, -1 + 2 * ox + side], 1), torch.stack([zero, side, -1 + 2 * oy + side], 1)], 1
        ).to(x.device, x.dtype)
        batch = expand(x, n)
        grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
        return F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)
