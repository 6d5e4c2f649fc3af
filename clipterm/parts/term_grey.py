"""`grey`: mean squared distance of the image to mid-grey, a prior against saturated colour."""

from __future__ import annotations

from dataclasses import dataclass

from clipterm.lazy import torch
from clipterm.parts.base import register, setting
from clipterm.parts.term import Term


@dataclass(frozen=True)
class GreySettings:
    weight: float = setting(0.0, float, 0.0, 100.0, key="grey_weight", doc="pull toward mid-grey")


@register
class Grey(Term):
    name = "grey"
    Settings = GreySettings
    about = "L2 to mid-grey"

    def __call__(self, image: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
        return torch.mean((image - 0.5) ** 2)
