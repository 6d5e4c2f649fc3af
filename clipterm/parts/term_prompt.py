"""`prompt`: similarity of the lane's views to the prompt, on one model or an ensemble.

On an ensemble (models = several names) the similarity of a view is the sum of its similarities on
each model, each view resized and normalised for that model (pixray's and Disco's idea).
"""

from __future__ import annotations

from dataclasses import dataclass

from clipterm.lazy import lazy_module, torch
from clipterm.parts.base import register, setting
from clipterm.parts.term import Term

losses = lazy_module("clipterm.losses")  # imports torch


@dataclass(frozen=True)
class PromptSettings:
    weight: float = setting(1.0, float, -100.0, 100.0, key="prompt_weight", doc="weight of the similarity loss")
    loss: str = setting("cosine", str, choices=("cosine", "exp-temp"), live=False, doc="1-cos, or -log(exp(cos/T))")
    temperature: float = setting(5.0, float, 1e-3, 1000.0, doc="T of the exp-temp loss")
    normalize: bool = setting(True, bool, live=False, doc="apply the model's mean/std to the views")
    models: tuple[str, ...] = setting((), "names", live=False, doc="models summed ('' = the run's model)")


@register
class Prompt(Term):
    name = "prompt"
    Settings = PromptSettings
    similarity = True
    about = "prompt similarity (cosine or exp-temp), one model or an ensemble"

    def loss(self, sims: torch.Tensor) -> torch.Tensor:
        """Mean over views of the similarity loss."""
        return losses.similarity_loss(sims, self.settings.loss, self.settings.temperature)
