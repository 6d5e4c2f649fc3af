"""The interface every image parameterization implements (a part of kind "param").

A parameterization owns one or more tensors (the optimizer's parameters) and maps them to an
image (1,3,H,W). `shapes()` declares the tensors so sessions can validate and store them, `init()`
builds them from the run's starting noise, and `fit()` sets them so the image matches a canvas
(used to convert a lane and to start from a picture).
"""

from __future__ import annotations

from typing import Any, ClassVar

from clipterm.lazy import lazy_module, no_grad, torch
from clipterm.parts.base import Part, register, setting

augment = lazy_module("clipterm.augment")  # imports torch


class ImageParam(Part):
    kind: ClassVar[str] = "param"

    def __init__(self, settings: Any, size: int, device: torch.device, seed: int) -> None:
        self.settings = settings
        self.size = size
        self.tensors = {
            k: v.to(device).clone().requires_grad_(True)
            for k, v in self.init(torch.Generator().manual_seed(seed)).items()
        }

    @classmethod
    def shapes(cls, settings: Any, size: int) -> dict[str, tuple[int, ...]]:
        """name -> shape (without the batch dim) of every optimized tensor, for a canvas of `size`."""
        raise NotImplementedError

    def init(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Starting tensors (with a batch dim of 1), drawn from `gen` (seeded by the run's seed, so
        every lane of a run starts from the same draws)."""
        raise NotImplementedError

    def image(self) -> torch.Tensor:
        """What the model sees, (1,3,H,W), differentiable in the tensors."""
        raise NotImplementedError

    @no_grad
    def shown(self) -> torch.Tensor:
        """What a person sees, (1,3,H,W) in [0,1]."""
        return self.image().detach().float().clamp(0, 1)

    def after_step(self) -> None:
        """Projection after each optimizer step (e.g. clamping); nothing by default."""

    def fit(self, canvas: torch.Tensor) -> float:
        """Set the tensors so that the image is `canvas` (1,3,H,W) in [0,1]; returns the max abs error."""
        raise NotImplementedError

    def parameters(self) -> list[torch.Tensor]:
        return list(self.tensors.values())


def register_param(cls: type[ImageParam]) -> type[ImageParam]:
    return register(cls)  # type: ignore[return-value]


def logit(canvas: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Inverse of the sigmoid output, with the canvas kept off 0 and 1."""
    x = canvas.clamp(eps, 1 - eps)
    return torch.log(x) - torch.log1p(-x)


def ground_setting() -> Any:
    """The two-colour parameterizations' `ground` setting: any colour, one grey for all three
    channels, or that grey cut to black or white (the shapes world's grounds are black or white; a
    free one lets a model swap figure and ground, a grey one settles on mid grey for some)."""
    return setting(
        "colour", str, choices=("colour", "grey", "bw"), live=False, doc="ground: any colour, a grey, or black/white"
    )


def ground_channels(ground: str) -> int:
    """Channels of the ground tensor for a `ground` setting: 3, or 1 broadcast over RGB."""
    return 3 if ground == "colour" else 1


def hard_cut(weight: torch.Tensor) -> torch.Tensor:
    """`weight` (in [0,1]) shown cut at 0.5 to exactly 0 or 1, with the gradient of the uncut
    value (straight-through), so an optimizer still feels which way the cut should move."""
    return weight + ((weight > 0.5).to(weight.dtype) - weight).detach()


def shown_ground(ground: torch.Tensor, kind: str) -> torch.Tensor:
    """The ground colour a two-colour picture shows, from its [0,1] value: cut to black or white
    for `ground = "bw"`, else as it is."""
    return hard_cut(ground) if kind == "bw" else ground


def figure_and_ground(target: torch.Tensor, grey_ground: bool = False) -> tuple[torch.Tensor, ...]:
    """A picture (1,3,H,W) read as one figure on a ground, for the two-colour parameterizations'
    `fit`: the ground is the border's mean colour (its grey, with `grey_ground`), the figure the mean
    of the pixels at least half as far from it as the farthest, and each pixel's weight its position
    between the two along the ground-to-figure line (0 ground, 1 figure; not clamped).
    Returns (ground, figure, weight), shapes (1,3,1,1), (1,3,1,1), (1,1,H,W)."""
    ground = augment.border_mean(target)
    if grey_ground:
        ground = ground.mean(dim=1, keepdim=True).expand(1, 3, 1, 1)
    dist = (target - ground).norm(dim=1, keepdim=True)
    far = dist >= 0.5 * dist.max().clamp_min(1e-6)
    figure = (target * far).sum(dim=(2, 3), keepdim=True) / far.sum().clamp_min(1)
    span = figure - ground
    weight = ((target - ground) * span).sum(dim=1, keepdim=True) / (span * span).sum().clamp_min(1e-6)
    return ground, figure, weight
