"""The interface of an objective term (a part of kind "term").

A lane's loss is the weighted sum of its terms, in their order. Similarity terms (`prompt`) and unit
terms (`channel`, `neuron`, `direction`: see term_unit) are computed by the engine from its one
batched forward pass; every other term is a function of the lane's image (and its best image so
far), declared here.
"""

from __future__ import annotations

from typing import Any, ClassVar

from clipterm.lazy import torch
from clipterm.parts.base import Part


class Term(Part):
    kind: ClassVar[str] = "term"
    similarity: ClassVar[bool] = False  # True: the engine feeds it the model's similarities
    unit: ClassVar[bool] = False  # True: the engine feeds it block activations captured in its forward
    column: ClassVar[str] = ""  # history column its unweighted value is recorded in ("tv", "memory")

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    @property
    def weight(self) -> float:
        return float(self.settings.weight)

    def __call__(self, image: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
        """The term's unweighted value (a scalar), differentiable in image."""
        raise NotImplementedError
