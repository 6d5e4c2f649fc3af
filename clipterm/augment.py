"""Batched, differentiable random affine views (rotation, translation, scale, horizontal flip).

Random draws come from a CPU torch.Generator so that a lane's augmentation sequence is the same on
every device and can be saved and restored exactly (its state is a uint8 tensor).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sample_affine(
    gen: torch.Generator, n: int, degrees: float, translate: float, scale_min: float, scale_max: float, flip_p: float
) -> torch.Tensor:
    """(n, 2, 3) affine_grid matrices; translate is a fraction of the image size."""
    u = torch.rand(n, 5, generator=gen, dtype=torch.float64)
    angle = (u[:, 0] * 2 - 1) * math.radians(degrees)
    tx = (u[:, 1] * 2 - 1) * translate * 2  # affine_grid spans [-1, 1]: a fraction f is 2f units
    ty = (u[:, 2] * 2 - 1) * translate * 2
    scale = scale_min + u[:, 3] * (scale_max - scale_min)
    flip = torch.where(u[:, 4] < flip_p, -1.0, 1.0).to(torch.float64)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, tx], dim=1),
            torch.stack([sin * flip, cos, ty], dim=1),
        ],
        dim=1,
    )
    return theta.float()


def border_mean(images: torch.Tensor) -> torch.Tensor:
    """(n, C, 1, 1): the mean colour of each image's outermost ring of pixels (differentiable)."""
    ring = torch.cat([images[..., 0, :], images[..., -1, :], images[..., 1:-1, 0], images[..., 1:-1, -1]], dim=-1)
    return ring.mean(dim=-1)[..., None, None]


def apply_affine(images: torch.Tensor, theta: torch.Tensor, fill: str = "zeros") -> torch.Tensor:
    """Warp (1 or n, C, H, W) images by n matrices; areas outside the canvas become 0 (black), or
    repeat the edge ("border"), mirror the canvas ("reflection"), or take one flat colour, the mean
    of the canvas's outer ring ("ground").

    "ground" is meant to make zoomed-out views ask for one object on a ground: the canvas sits in a
    flat field of its own edge colour, so an edge that is not the ground shows as the canvas's own
    frame (a square), and only a canvas whose rim is one colour blends into its surroundings, as a
    base-world picture would; "border" instead smears each edge pixel outward into stripes. The rim
    colour is free, though: shapes-a also accepts a figure and ground swapped (bench/RESULTS.md,
    report 3).
    """
    n = theta.shape[0]
    x = images.expand(n, -1, -1, -1) if images.shape[0] == 1 else images
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    if fill == "ground":
        ground = border_mean(images)  # once per image, not per view: (1 or n, C, 1, 1) broadcasts
        return F.grid_sample(x - ground, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + ground
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=fill, align_corners=False)


def held_out_thetas(n: int = 16, seed: int = 20240611) -> torch.Tensor:
    """The fixed set of views the robust similarity is measured on (never used for training)."""
    gen = torch.Generator().manual_seed(seed)
    return sample_affine(gen, n, degrees=10.0, translate=0.1, scale_min=0.9, scale_max=1.1, flip_p=0.3)
