"""`fourier`: the image is an inverse real FFT of a spectrum scaled by 1/f^decay (lucid's idea).

Optimizing frequencies with a 1/f prior spreads each gradient step over the whole image, which
favours large coherent shapes over per-pixel noise. Optional colour decorrelation maps the three
optimized channels through lucid's published 3x3 colour-correlation square root (normalised by its
largest column norm), so the optimizer moves along directions natural images vary in.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from clipterm.lazy import no_grad, torch
from clipterm.parts.base import setting
from clipterm.parts.image import ImageParam, logit, register_param

# Square root of the colour correlation of ImageNet pixels, as published with lucid.
COLOR_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))
CONTRAST = 4.0  # lucid divides the spatial image by 4 before the output squashing


@dataclass(frozen=True)
class FourierSettings:
    decay: float = setting(1.0, float, 0.0, 4.0, live=False, doc="spectrum scaled by 1/f^decay")
    decorrelate: bool = setting(True, bool, live=False, doc="map channels through lucid's colour matrix")
    output: str = setting("sigmoid", str, choices=("sigmoid", "clamp"), live=False, doc="squash to [0,1]")
    init_std: float = setting(0.01, float, 0.0, 10.0, live=False, doc="spread of the starting spectrum")


@functools.cache
def color() -> torch.Tensor:
    """COLOR_SQRT normalised by its largest column norm (a tensor built on first use, not at import)."""
    sqrt = torch.tensor(COLOR_SQRT)
    return sqrt / sqrt.norm(dim=0).max()


def frequencies(size: int) -> torch.Tensor:
    """|f| of every rfft2 bin of a size x size image, (size, size//2+1)."""
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


@register_param
class Fourier(ImageParam):
    name = "fourier"
    Settings = FourierSettings
    about = "rfft2 spectrum with 1/f^decay scaling, decorrelated colour (lucid)"

    @classmethod
    def shapes(cls, settings: FourierSettings, size: int) -> dict[str, tuple[int, ...]]:
        return {"spectrum": (3, size, size // 2 + 1, 2)}

    def _scale(self, device: torch.device) -> torch.Tensor:
        f = frequencies(self.size).clamp_min(1.0 / self.size)
        return (f**-self.settings.decay).to(device)[None, None, :, :, None]

    def init(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        shape = (1, *self.shapes(self.settings, self.size)["spectrum"])
        return {"spectrum": torch.randn(shape, generator=gen) * self.settings.init_std}

    def _spatial(self, spectrum: torch.Tensor) -> torch.Tensor:
        scaled = torch.view_as_complex((spectrum * self._scale(spectrum.device)).contiguous())
        x = torch.fft.irfft2(scaled, s=(self.size, self.size), norm="ortho") / CONTRAST
        if self.settings.decorrelate:
            x = torch.einsum("ij,bjhw->bihw", color().to(x), x)
        return x

    def image(self) -> torch.Tensor:
        x = self._spatial(self.tensors["spectrum"])
        if self.settings.output == "sigmoid":
            return torch.sigmoid(x)
        return (x + 0.5).clamp(0, 1)

    @no_grad
    def fit(self, canvas: torch.Tensor) -> float:
        target = canvas.to(self.tensors["spectrum"].device).float()
        x = logit(target) if self.settings.output == "sigmoid" else target - 0.5
        if self.settings.decorrelate:
            x = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(color()).to(x), x)
        spec = torch.view_as_real(torch.fft.rfft2(x * CONTRAST, norm="ortho")) / self._scale(x.device)
        self.tensors["spectrum"].copy_(spec)
        return float((self.image() - target).abs().max())
