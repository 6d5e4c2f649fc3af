"""`outline`: one filled shape, a closed outline in polar form, in one colour on a flat ground.

The outline is r(theta) = r_max * sigmoid(c0 + sum_k a_k cos(k theta) + b_k sin(k theta)) around a
movable centre, with a few harmonics (k = 1..K), drawn with a soft edge about one pixel wide.
Whatever the model does, the canvas shows exactly one star-shaped object: it can choose the
object's outline, size, place and colour and the ground's colour, but it cannot tile the canvas
with fragments or paint a texture. So the picture answers "which single outline does this model
accept as a triangle?". The idea is the vector drawers of CLIPDraw and pixray (the image is a
differentiable rendering of a few shape parameters, not pixels), reduced to one filled path whose
radius is a short Fourier series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clipterm.lazy import F, no_grad, torch
from clipterm.parts.base import setting
from clipterm.parts.image import (
    ImageParam,
    figure_and_ground,
    ground_channels,
    ground_setting,
    logit,
    register_param,
    shown_ground,
)

RAYS = 128  # angles sampled when fitting a picture's outline
CENTRE_SPAN = 0.8  # the centre stays within +-0.8 of the canvas's half-width


@dataclass(frozen=True)
class OutlineSettings:
    harmonics: int = setting(8, int, 0, 32, live=False, doc="Fourier terms of the radius (0: a circle)")
    decay: float = setting(1.0, float, 0.0, 4.0, live=False, doc="harmonic k moves at k^-decay of the first's pace")
    ground: str = ground_setting()
    softness: float = setting(1.0, float, 0.05, 16.0, doc="width of the soft edge, in pixels")
    r_max: float = setting(1.0, float, 0.05, 2.0, live=False, doc="largest radius, in half-widths of the canvas")
    radius: float = setting(0.4, float, 0.01, 0.99, live=False, doc="starting radius, as a fraction of r_max")
    init_std: float = setting(0.01, float, 0.0, 10.0, live=False, doc="spread of the harmonics' and centre's start")
    colour_std: float = setting(0.5, float, 0.0, 10.0, live=False, doc="spread of the two colours' starting logits")


def _grid(size: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres in [-1, 1] (x to the right, y down), each (1,1,H,W)."""
    t = (torch.arange(size, device=device, dtype=dtype) + 0.5) / size * 2 - 1
    return t.reshape(1, 1, 1, size).expand(1, 1, size, size), t.reshape(1, 1, size, 1).expand(1, 1, size, size)


def _basis(theta: torch.Tensor, harmonics: int) -> torch.Tensor:
    """[1, cos theta, sin theta, cos 2theta, sin 2theta, ...] stacked on a new first axis."""
    rows = [torch.ones_like(theta)]
    for k in range(1, harmonics + 1):
        rows += [torch.cos(k * theta), torch.sin(k * theta)]
    return torch.stack(rows)


@register_param
class Outline(ImageParam):
    name = "outline"
    Settings = OutlineSettings
    about = "one filled shape: a polar Fourier outline with a soft edge, a figure colour and a ground colour"

    @classmethod
    def shapes(cls, settings: OutlineSettings, size: int) -> dict[str, tuple[int, ...]]:
        return {
            "ground": (ground_channels(settings.ground), 1, 1),
            "figure": (3, 1, 1),
            "centre": (2, 1, 1),
            "outline": (1 + 2 * settings.harmonics, 1, 1),
        }

    def init(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        s = self.settings
        out = {name: torch.randn((1, *shape), generator=gen) for name, shape in self.shapes(s, self.size).items()}
        out["ground"] *= s.colour_std
        out["figure"] *= s.colour_std
        out["centre"] *= s.init_std
        out["outline"] *= s.init_std
        out["outline"][0, 0] += math.log(s.radius / (1 - s.radius))
        return out

    def _scale(self, like: torch.Tensor) -> torch.Tensor:
        """Per coefficient [c0, a1, b1, a2, b2, ...], the factor k^-decay (1 for c0): Adam moves every
        tensor entry at about the same pace, so this is what keeps high harmonics (spikes) slow."""
        k = torch.arange(1, self.settings.harmonics + 1, device=like.device, dtype=like.dtype)
        per_k = k.pow(-self.settings.decay).repeat_interleave(2)
        return torch.cat([torch.ones(1, device=like.device, dtype=like.dtype), per_k]).reshape(1, -1, 1, 1)

    def mask(self) -> torch.Tensor:
        """The figure's weight per pixel, (1,1,H,W) in (0,1)."""
        coeffs = self.tensors["outline"] * self._scale(self.tensors["outline"])
        x, y = _grid(self.size, coeffs.device, coeffs.dtype)
        centre = CENTRE_SPAN * torch.tanh(self.tensors["centre"])
        dx, dy = x - centre[:, 0:1], y - centre[:, 1:2]
        dist = torch.sqrt(dx * dx + dy * dy + 1e-12)
        theta = torch.atan2(dy, dx + 1e-12)
        basis = _basis(theta[0, 0], self.settings.harmonics)  # (terms, H, W)
        radius = self.settings.r_max * torch.sigmoid((coeffs[0, :, :, :] * basis).sum(0))
        edge = self.settings.softness * 2 / self.size
        return torch.sigmoid((radius - dist) / edge)

    def image(self) -> torch.Tensor:
        ground = shown_ground(torch.sigmoid(self.tensors["ground"]), self.settings.ground)
        figure = torch.sigmoid(self.tensors["figure"])
        return ground + self.mask() * (figure - ground)

    @no_grad
    def fit(self, canvas: torch.Tensor) -> float:
        """The nearest single outline of a picture: the ground is the border's mean colour, the
        figure the mean of the pixels far from it; each pixel's position between the two weighs it,
        the centre is the weights' centroid, the radius along each of RAYS rays the integral of the
        weight along it (exact for a star-shaped two-colour figure), and the harmonics are the least
        squares fit of those radii (in logit space). A picture that is not one star-shaped figure on
        a ground is matched only roughly: the returned max abs error says how far."""
        first = self.tensors["ground"]
        target = canvas.to(first).float()
        ground, figure, weight = figure_and_ground(target, grey_ground=self.settings.ground != "colour")
        weight = weight.clamp(0, 1)
        x, y = _grid(self.size, target.device, target.dtype)
        mass = weight.sum().clamp_min(1e-6)
        centre = torch.stack([(weight * x).sum() / mass, (weight * y).sum() / mass]).clamp(
            -0.99 * CENTRE_SPAN, 0.99 * CENTRE_SPAN
        )
        radii, theta = self._ray_lengths(weight, centre)
        r_max = self.settings.r_max
        target_logit = logit(radii / r_max, eps=1e-3)
        basis = _basis(theta, self.settings.harmonics).T  # (RAYS, terms)
        coeffs = torch.linalg.lstsq(basis.double(), target_logit.double()[:, None]).solution[:, 0].to(first)
        self.tensors["ground"].copy_(logit(ground[:, : ground_channels(self.settings.ground)]))
        self.tensors["figure"].copy_(logit(figure))
        self.tensors["centre"].copy_(torch.atanh(centre / CENTRE_SPAN).reshape(1, 2, 1, 1))
        outline = self.tensors["outline"]
        outline.copy_(coeffs.reshape(1, -1, 1, 1) / self._scale(outline))
        return float((self.image() - target).abs().max())

    def _ray_lengths(self, weight: torch.Tensor, centre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For RAYS angles, the integral of `weight` along the ray from `centre` to the canvas's edge
        (bilinear samples every quarter pixel; outside the canvas the weight is 0)."""
        theta = torch.arange(RAYS, device=weight.device, dtype=weight.dtype) * (2 * math.pi / RAYS)
        step = 0.5 / self.size  # a quarter pixel in [-1, 1] units
        t = torch.arange(1, int(2.9 / step), device=weight.device, dtype=weight.dtype) * step
        px = centre[0] + torch.cos(theta)[:, None] * t[None, :]
        py = centre[1] + torch.sin(theta)[:, None] * t[None, :]
        grid = torch.stack([px, py], dim=-1)[None]  # (1, RAYS, T, 2)
        samples = F.grid_sample(weight, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return samples[0, 0].sum(dim=1) * step, theta
