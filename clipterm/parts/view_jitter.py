"""`jitter`: shift each view by a random whole number of pixels (lucid's jitter), edges reflected."""

from __future__ import annotations

from dataclasses import dataclass

from clipterm.lazy import F, torch
from clipterm.parts.base import register, setting
from clipterm.parts.view import Transform, expand


@dataclass(frozen=True)
class JitterSettings:
    jitter: int = setting(4, int, 0, 256, doc="largest shift in pixels, each way")


@register
class Jitter(Transform):
    name = "jitter"
    Settings = JitterSettings
    about = "random whole-pixel shifts (lucid)"

    def __call__(self, x: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
        d = self.settings.jitter
        shifts = torch.randint(0, 2 * d + 1, (n, 2), generator=gen).tolist()
        batch = expand(x, n)
        if d == 0:
            return batch
        h, w = batch.shape[-2:]
        pad = d if d < min(h, w) else min(h, w) - 1
        padded = F.pad(batch, (pad, pad, pad, pad), mode="reflect")
        return torch.stack(
            [
                padded[i, :, min(dy, 2 * pad) : min(dy, 2 * pad) + h, min(dx, 2 * pad) : min(dx, 2 * pad) + w]
                for i, (dy, dx) in enumerate(shifts)
            ]
        )
