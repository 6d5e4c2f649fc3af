"""`pixel`: the canvas itself is optimized (the seeds' parameterization)."""

from __future__ import annotations

from dataclasses import dataclass

from clipterm.lazy import no_grad, torch
from clipterm.parts.base import setting
from clipterm.parts.image import ImageParam, register_param


@dataclass(frozen=True)
class PixelSettings:
    init_mean: float = setting(0.5, float, -10.0, 10.0, live=False, doc="grey level of the starting noise")
    init_std: float = setting(0.1, float, 0.0, 10.0, live=False, doc="spread of the starting noise")
    clamp: bool = setting(True, bool, doc="clamp the canvas to [0,1] after each step")
    display: str = setting("clip", str, choices=("clip", "minmax"), live=False, doc="how the canvas is shown")


@register_param
class Pixel(ImageParam):
    name = "pixel"
    Settings = PixelSettings
    about = "raw pixels (seeds 000 and 004)"

    @classmethod
    def shapes(cls, settings: PixelSettings, size: int) -> dict[str, tuple[int, ...]]:
        return {"param": (3, size, size)}

    def init(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        s = self.settings
        noise = torch.randn((1, 3, self.size, self.size), generator=gen)
        return {"param": s.init_mean + s.init_std * noise}

    def image(self) -> torch.Tensor:
        return self.tensors["param"]

    @no_grad
    def shown(self) -> torch.Tensor:
        x = self.tensors["param"].detach().float()
        if self.settings.display == "minmax":
            lo, hi = x.amin(), x.amax()
            return (x - lo) / (hi - lo).clamp_min(1e-12)
        return x.clamp(0, 1)

    @no_grad
    def after_step(self) -> None:
        if self.settings.clamp:
            self.tensors["param"].clamp_(0.0, 1.0)

    @no_grad
    def fit(self, canvas: torch.Tensor) -> float:
        self.tensors["param"].copy_(canvas.to(self.tensors["param"]))
        return 0.0
