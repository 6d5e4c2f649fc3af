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

LSQ_STEPS = 8  # conjugate-gradient steps per level when fitting a picture (see Pyramid.fit)


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


def upsample(t: torch.Tensor, size: int) -> torch.Tensor:
    """A level upsampled to the canvas (bilinear); the canvas's own level as it is."""
    return t if t.shape[-1] == size else F.interpolate(t, size=(size, size), mode="bilinear")


def level_sum(levels: list[torch.Tensor], size: int) -> torch.Tensor:
    """The levels, each upsampled to the canvas, summed (what `pyramid` and `silhouette`'s mask show)."""
    total = upsample(levels[0], size)
    for t in levels[1:]:
        total = total + upsample(t, size)
    return total


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

    def _up(self, t: torch.Tensor) -> torch.Tensor:
        return upsample(t, self.size)

    def image(self) -> torch.Tensor:
        return torch.sigmoid(level_sum(list(self.tensors.values()), self.size))

    @no_grad
    def fit(self, canvas: torch.Tensor) -> float:
        """Coarse to fine: each level takes the least-squares fit of what the coarser levels left of
        the canvas (in logit space), the finest level the rest.

        So a picture's coarse content sits in the coarse levels, where optimizing it moves whole
        regions (as it does from noise), rather than all of it in the finest level. The fit is exact
        (to float rounding) when the finest level is the canvas; a coarser finest level leaves a
        residual, which the returned max abs error reports.
        """
        first = next(iter(self.tensors.values()))
        target = canvas.to(first).float()
        residual = logit(target)
        for t in self.tensors.values():
            level = self._least_squares(residual, t.shape[-1])
            t.copy_(level)
            residual = residual - self._up(level)
        return float((self.image() - target).abs().max())

    def _least_squares(self, r: torch.Tensor, side: int) -> torch.Tensor:
        """argmin_x ||up(x) - r||^2 for a level of `side` px: conjugate gradient on the normal equations
        up^T up x = up^T r, LSQ_STEPS steps from the area average (already close: up is a smooth
        interpolation). At the canvas's own side up is the identity and x = r."""
        if side == self.size:
            return r.clone()

        def normal(v: torch.Tensor) -> torch.Tensor:
            return self._up_adjoint(self._up(v), side)

        x = F.adaptive_avg_pool2d(r, side)
        res = self._up_adjoint(r, side) - normal(x)
        p, rs = res.clone(), (res * res).sum()
        for _ in range(LSQ_STEPS):
            if float(rs) < 1e-20:
                break
            ap = normal(p)
            alpha = rs / (p * ap).sum().clamp_min(1e-30)
            x, res = x + alpha * p, res - alpha * ap
            rs, rs_old = (res * res).sum(), rs
            p = res + (rs / rs_old) * p
        return x

    def _up_adjoint(self, y: torch.Tensor, side: int) -> torch.Tensor:
        """up^T y: the adjoint of upsampling a `side` level, from autograd (up is linear)."""
        with torch.enable_grad():
            z = torch.zeros((*y.shape[:2], side, side), device=y.device, dtype=y.dtype, requires_grad=True)
            (grad,) = torch.autograd.grad((self._up(z) * y).sum(), z)
        return grad
