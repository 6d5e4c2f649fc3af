"""`pad`: a border around the canvas before the other views (lucid pads with grey), so rotations and
shifts that follow never show the canvas edge as a hard line."""

from __future__ import annotations

from dataclasses import dataclass

from clipterm.lazy import F, torch
from clipterm.parts.base import register, setting
from clipterm.parts.view import Transform, expand


@dataclass(frozen=True)
class PadSettings:
    pad: int = setting(8, int, 0, 512, doc="border width in pixels")
    pad_mode: str = setting("constant", str, choices=("constant", "reflect"), doc="grey border or mirrored edge")
    pad_value: float = setting(0.5, float, 0.0, 1.0, doc="grey level of a constant border")


@register
class Pad(Transform):
    name = "pad"
    Settings = PadSettings
    about = "grey or mirrored border (lucid)"

    def __call__(self, x: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
        s = self.settings
        batch = expand(x, n)
        if s.pad == 0:
            return batch
        if s.pad_mode == "reflect":
            p = min(s.pad, batch.shape[-1] - 1)
            return F.pad(batch, (p, p, p, p), mode="reflect")
        return F.pad(batch, (s.pad,) * 4, mode="constant", value=s.pad_value)
