"""Loss terms of the presets, each a plain function of tensors."""

from __future__ import annotations

import torch


def tv_l2(x: torch.Tensor) -> torch.Tensor:
    """Sum of squared neighbour differences (seed 004's TV)."""
    dh = x[..., 1:, :] - x[..., :-1, :]
    dw = x[..., :, 1:] - x[..., :, :-1]
    return (dh * dh).sum() + (dw * dw).sum()


def tv_l1(x: torch.Tensor) -> torch.Tensor:
    """Sum of absolute neighbour differences (seed 000's TV)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().sum() + (x[..., :, 1:] - x[..., :, :-1]).abs().sum()


def similarity_loss(sim: torch.Tensor, kind: str, temperature: float) -> torch.Tensor:
    """Mean over views of the similarity loss. exp-temp is seed 000's -log(exp(s/T)), kept literal."""
    if kind == "cosine":
        return (1.0 - sim).mean()
    if kind == "exp-temp":
        return (-torch.log(torch.exp(sim / temperature))).mean()
    raise ValueError(f"unknown loss {kind!r}")
