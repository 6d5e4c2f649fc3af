"""`memory`: mean squared distance to the best image so far (seed 000): keeps a lane near what
already worked while it explores."""

from __future__ import annotations

from dataclasses import dataclass

from clipterm.lazy import torch
from clipterm.parts.base import register, setting
from clipterm.parts.term import Term


@dataclass(frozen=True)
class MemorySettings:
    weight: float = setting(0.0, float, 0.0, 100.0, key="memory_weight", doc="pull toward the best image")


@register
class Memory(Term):
    name = "memory"
    Settings = MemorySettings
    column = "memory"
    about = "MSE to the best image so far (seed 000)"

    def __call__(self, image: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
        return torch.mean((image - best) ** 2)
