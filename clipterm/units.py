"""Block activations of the vision tower: their shapes, capturing them, checking unit terms against them.

Blocks are those of probes.find_blocks (ViT resblocks, or ModifiedResNet layer1-4), numbered from 0.
Every captured activation is laid out channels first: (rows, width, tokens) for a ViT block, whatever
its sequence layout (the CPU runs ViTs sequence-first, see models.sequence_first), and
(rows, channels, height, width) for a ResNet stage. `Tap` registers forward hooks on the blocks it
is asked for and keeps, per request, only the rows asked for: the engine's unit terms read their
lane's rows of its one batched forward this way, and nothing is hooked when no lane has a unit.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from clipterm.errors import ClipTermError
from clipterm.probes import find_blocks


class UnitRangeError(ClipTermError):
    """A unit names a block, channel or position the model does not have."""


@dataclass(frozen=True)
class BlockInfo:
    """One block's output: channels and positions (grid: (tokens,) for a ViT, (height, width) for a ResNet)."""

    index: int
    name: str
    channels: int
    grid: tuple[int, ...]

    @property
    def positions(self) -> str:
        if len(self.grid) == 1:
            return f"tokens 0-{self.grid[0] - 1} (0 = class token)"
        return f"positions y 0-{self.grid[0] - 1}, x 0-{self.grid[1] - 1}"


_TOWERS: weakref.WeakKeyDictionary[torch.nn.Module, list[BlockInfo]] = weakref.WeakKeyDictionary()


def channels_first(out: torch.Tensor, batch_dim: int) -> torch.Tensor:
    """A block's output as (rows, channels, *grid): ViT (N,L,D) or (L,N,D) -> (N,D,L); ResNet as is."""
    if out.dim() == 3:
        return out.movedim(batch_dim, 0).transpose(1, 2)
    return out


def tower(model: torch.nn.Module, image_size: int) -> list[BlockInfo]:
    """The blocks of `model`'s vision tower with their output shapes (one tiny no-grad forward, cached)."""
    if model in _TOWERS:
        return _TOWERS[model]
    names, blocks, batch_dim = find_blocks(model)
    shapes: dict[int, tuple[int, ...]] = {}
    handles = [
        b.register_forward_hook(lambda _m, _i, o, k=k: shapes.__setitem__(k, tuple(channels_first(o, batch_dim).shape)))
        for k, b in enumerate(blocks)
    ]
    try:
        p = next(model.parameters())
        with torch.no_grad():
            model.encode_image(torch.zeros(1, 3, image_size, image_size, device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
    out = [BlockInfo(k, names[k], shapes[k][1], shapes[k][2:]) for k in range(len(blocks)) if k in shapes]
    _TOWERS[model] = out
    return out


def describe(blocks: Sequence[BlockInfo], model: str) -> str:
    """The valid ranges in one line, e.g. 'shapes-a has blocks 0-2 (block0-block2), channels 0-127, tokens 0-64'."""
    if not blocks:
        return f"{model} has no blocks clipterm can read (a ViT or a ModifiedResNet tower)"
    head = f"{model} has blocks 0-{len(blocks) - 1} ({blocks[0].name}-{blocks[-1].name})"
    if len({(b.channels, b.grid) for b in blocks}) == 1:
        return f"{head}, channels 0-{blocks[0].channels - 1}, {blocks[0].positions}"
    per = "; ".join(f"{b.index}: channels 0-{b.channels - 1}, {b.positions}" for b in blocks)
    return f"{head}; {per}"


def check_block(blocks: Sequence[BlockInfo], block: int, model: str) -> BlockInfo:
    if not 0 <= block < len(blocks):
        raise UnitRangeError(f"block {block} is out of range: {describe(blocks, model)}")
    return blocks[block]


def check_channel(blocks: Sequence[BlockInfo], block: int, channel: int, model: str) -> BlockInfo:
    info = check_block(blocks, block, model)
    if not 0 <= channel < info.channels:
        raise UnitRangeError(
            f"channel {channel} is out of range: block {block} ({info.name}) of {model} has channels "
            f"0-{info.channels - 1}"
        )
    return info


def check_unit(kind: str, settings: Any, blocks: Sequence[BlockInfo], model: str) -> None:
    """Refuse a unit term whose block, channel, position or vector does not fit the model (one line)."""
    if kind == "direction" and settings.block < 0:
        return
    if kind == "direction":
        info = check_block(blocks, settings.block, model)
        if len(settings.vector) != info.channels:
            raise UnitRangeError(
                f"a direction in block {settings.block} needs {info.channels} values, got {len(settings.vector)}"
            )
        return
    info = check_channel(blocks, settings.block, settings.channel, model)
    if kind != "neuron":
        return
    if len(info.grid) == 1:
        if settings.token < 0 or settings.token >= info.grid[0]:
            raise UnitRangeError(
                f"neuron {settings.block}:{settings.channel}: block {settings.block} has {info.positions}"
            )
    elif settings.y < 0 or settings.y >= info.grid[0] or settings.x < 0 or settings.x >= info.grid[1]:
        raise UnitRangeError(f"neuron {settings.block}:{settings.channel}: block {settings.block} has {info.positions}")


class Tap:
    """Forward hooks that keep rows of chosen blocks' outputs during one forward (a context manager).

    `wants` maps block index -> [(key, start, stop)]: while armed, the output of that block keeps
    rows start:stop as `acts[(key, block)]`, channels first, still attached to the graph (so a unit's
    loss backpropagates through the same forward). A forward of another batch size is ignored.
    """

    def __init__(self, model: torch.nn.Module, wants: dict[int, list[tuple[Hashable, int, int]]], rows: int) -> None:
        _, self.blocks, self.batch_dim = find_blocks(model)
        self.wants = wants
        self.rows = rows
        self.acts: dict[tuple[Hashable, int], torch.Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> Tap:
        for block, asks in self.wants.items():
            self._handles.append(self.blocks[block].register_forward_hook(self._hook(block, asks)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _hook(self, block: int, asks: list[tuple[Hashable, int, int]]) -> Callable[..., None]:
        def hook(_module: torch.nn.Module, _inputs: object, out: object) -> None:
            if not isinstance(out, torch.Tensor) or out.shape[self.batch_dim] != self.rows:
                return
            for key, start, stop in asks:
                self.acts[(key, block)] = channels_first(
                    out.narrow(self.batch_dim, start, stop - start), self.batch_dim
                )

        return hook


@torch.no_grad()
def block_activations(bundle: Any, pixels: torch.Tensor, block: int) -> torch.Tensor:
    """(rows, channels, *grid) float32 output of `block` for pixels in [0,1] at the model's input size."""
    x = ((pixels.to(bundle.device) - bundle.mean_t) / bundle.std_t).float()
    with Tap(bundle.model, {block: [("all", 0, len(x))]}, len(x)) as tap:
        bundle.model.encode_image(x)
    return tap.acts[("all", block)].float()


def channel_means(act: torch.Tensor) -> torch.Tensor:
    """(rows, channels) mean activation of each channel over its positions."""
    return act.flatten(2).mean(2)
