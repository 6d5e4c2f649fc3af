"""The interface of a view transform (a part of kind "transform").

A lane's views are its image passed through an ordered list of transforms. Each transform maps a
batch of 1 or n images to n images, drawing every random number from the lane's own CPU
generator, so a lane's views are the same on every device and resume exactly from its saved state.
"""

from __future__ import annotations

from typing import Any, ClassVar

from clipterm.lazy import torch
from clipterm.parts.base import Part


class Transform(Part):
    kind: ClassVar[str] = "transform"

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def __call__(self, x: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
        """(1 or n, C, H, W) -> (n, C, H', W'), differentiable in x."""
        raise NotImplementedError


def expand(x: torch.Tensor, n: int) -> torch.Tensor:
    """A batch of n views of x (a view of the same memory when x holds one image)."""
    return x.expand(n, -1, -1, -1) if x.shape[0] == 1 else x
