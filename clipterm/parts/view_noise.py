"""`noise`: add Gaussian noise to each view with its own strength sigma ~ U(0, noise_fac) (VQGAN+CLIP).

The model then cannot rely on exact pixel values, which keeps the picture from turning into
adversarial high-frequency texture.
"""

from __future__ import annotations

from dataclasses import dataclass

from clipterm.lazy import torch
from clipterm.parts.base import register, setting
from clipterm.parts.view import Transform, expand


@dataclass(frozen=True)
class NoiseSettings:
    noise_fac: float = setting(0.1, float, 0.0, 2.0, doc="largest per-view noise sigma")


@register
class Noise(Transform):
    name = "noise"
    Settings = NoiseSettings
    about = "per-view Gaussian noise, sigma ~ U(0, noise_fac) (VQGAN+CLIP)"

    def __call__(self, x: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
        batch = expand(x, n)
        sigma = torch.rand(n, 1, 1, 1, generator=gen) * self.settings.noise_fac
        eps = torch.randn(tuple(batch.shape), generator=gen)
        return batch + (sigma * eps).to(batch.device, batch.dtype)
