"""`tv`: total variation of the image, L2 (seed 004) or L1 (seed 000): a smoothness prior."""

from __future__ import annotations

from dataclasses import dataclass

from clipterm.lazy import lazy_module, torch
from clipterm.parts.base import register, setting
from clipterm.parts.term import Term

losses = lazy_module("clipterm.losses")  # imports torch


@dataclass(frozen=True)
class TVSettings:
    weight: float = setting(0.0, float, 0.0, 10.0, key="tv_weight", doc="weight of the total variation")
    norm: str = setting("l2", str, choices=("l1", "l2"), key="tv_kind", live=False, doc="squared or absolute")


@register
class TV(Term):
    name = "tv"
    Settings = TVSettings
    column = "tv"
    about = "total variation, L1 or L2"

    def __call__(self, image: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
        return (losses.tv_l2 if self.settings.norm == "l2" else losses.tv_l1)(image)
