"""Optimizers `adam` and `adamw` with a learning-rate schedule (constant or cosine, linear warm-up).

The schedule is a pure function of the optimizer's step count, so a resumed lane continues on it
exactly; a constant schedule never touches the learning rate (the seeds' behaviour).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from clipterm.lazy import torch
from clipterm.parts.base import Part, register, setting


@dataclass(frozen=True)
class OptimSettings:
    lr: float = setting(0.05, float, 1e-6, 100.0, doc="learning rate (peak, with a schedule)")
    weight_decay: float = setting(0.0, float, 0.0, 10.0, doc="L2 (adam) or decoupled (adamw) decay")
    schedule: str = setting("constant", str, choices=("constant", "cosine"), doc="learning-rate shape")
    warmup: int = setting(0, int, 0, 1_000_000, doc="steps of linear warm-up")
    horizon: int = setting(200, int, 1, 10_000_000, doc="steps over which cosine decays to 0")


class Optimizer(Part):
    kind: ClassVar[str] = "optim"
    Settings = OptimSettings
    torch_name: ClassVar[str] = "Adam"  # a torch.optim class, by name: looked up when built, not at import

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def build(self, tensors: list[torch.Tensor]) -> torch.optim.Optimizer:
        s = self.settings
        return getattr(torch.optim, self.torch_name)(tensors, lr=s.lr, weight_decay=s.weight_decay)

    def scheduled(self) -> bool:
        return self.settings.schedule != "constant" or self.settings.warmup > 0

    def lr_at(self, step: int) -> float:
        """Learning rate for the optimizer's step number `step` (0 = its first step)."""
        s = self.settings
        lr = s.lr
        if s.warmup > 0 and step < s.warmup:
            lr *= (step + 1) / s.warmup
        if s.schedule == "cosine":
            t = min(max(step - s.warmup, 0), s.horizon) / s.horizon
            lr *= 0.5 * (1 + math.cos(math.pi * t))
        return lr


@register
class Adam(Optimizer):
    name = "adam"
    about = "Adam"


@register
class AdamW(Optimizer):
    name = "adamw"
    torch_name = "AdamW"
    about = "AdamW (decoupled weight decay)"
