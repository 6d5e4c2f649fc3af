"""Unit objectives: `channel`, `neuron` and `direction` terms (feature visualization of one unit).

A unit term scores a lane's views by what one unit of the run's own model does with them, instead
of (or beside) their similarity to the prompt. The engine captures the block outputs these terms
name during its ONE batched forward (forward hooks on those blocks only, only for the rows of the
lanes that ask: clipterm/units.py) and hands each term its lane's slice, laid out channels first:
(rows, channels, tokens) for a ViT block, (rows, channels, height, width) for a ModifiedResNet
stage. Blocks are numbered as the Layers pane and probes.find_blocks number them (block 0 = the first
resblock, or layer1).

    channel    the block's channel C, mean over every position (token or pixel)
    neuron     channel C at one position: a token (ViT, 0 = the class token) or (y, x) (ResNet)
    direction  the mean activation vector projected on a unit vector of the block's width, or
               (block -1) the image embedding projected on normalize(sum text(plus) - sum text(minus))

The loss is minus the score times the weight (the score is maximized; a negative weight minimizes
it), averaged over the lane's views like the prompt's. Ranges that depend on the model (how many
blocks, channels, positions) are checked when the engine builds the lane (units.check_unit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clipterm.lazy import F, torch
from clipterm.parts.base import ParamError, register, setting
from clipterm.parts.term import Term

MAX_BLOCK = 9999
MAX_CHANNEL = 999_999
EMBEDDING = -1  # a direction's block: the image embedding (the output of the whole tower)


def weight_text(weight: float) -> str:
    """The ':WEIGHT' suffix of a unit's label ('' for 1), as --unit reads it."""
    return "" if weight == 1.0 else f":{weight:g}"


@dataclass(frozen=True)
class ChannelSettings:
    weight: float = setting(1.0, float, -100.0, 100.0, key="channel_weight", doc="weight (negative: minimize)")
    block: int = setting(0, int, 0, MAX_BLOCK, live=False, doc="block (0 = first resblock / layer1)")
    channel: int = setting(0, int, 0, MAX_CHANNEL, live=False, doc="channel of the block's output")


@dataclass(frozen=True)
class NeuronSettings:
    weight: float = setting(1.0, float, -100.0, 100.0, key="neuron_weight", doc="weight (negative: minimize)")
    block: int = setting(0, int, 0, MAX_BLOCK, live=False, doc="block (0 = first resblock / layer1)")
    channel: int = setting(0, int, 0, MAX_CHANNEL, live=False, doc="channel of the block's output")
    token: int = setting(-1, int, -1, MAX_CHANNEL, live=False, doc="ViT token (0 = class token); -1 for ResNet")
    y: int = setting(-1, int, -1, 4095, live=False, doc="ResNet row; -1 for ViT")
    x: int = setting(-1, int, -1, 4095, live=False, doc="ResNet column; -1 for ViT")

    def check(self, where: str) -> None:
        """A neuron sits at a token (ViT) or at (y, x) (ResNet), never both or neither."""
        vit = self.token >= 0 and self.y < 0 and self.x < 0
        resnet = self.token < 0 and self.y >= 0 and self.x >= 0
        if not (vit or resnet):
            raise ParamError(f"{where}: a neuron needs a token (ViT) or both y and x (ResNet), not both or neither")


@dataclass(frozen=True)
class DirectionSettings:
    weight: float = setting(1.0, float, -100.0, 100.0, key="direction_weight", doc="weight (negative: minimize)")
    block: int = setting(EMBEDDING, int, EMBEDDING, MAX_BLOCK, live=False, doc="block, or -1: the embedding space")
    plus: tuple[str, ...] = setting((), "names", live=False, doc="texts added (embedding space)")
    minus: tuple[str, ...] = setting((), "names", live=False, doc="texts subtracted (embedding space)")
    vector: tuple[float, ...] = setting((), "floats", live=False, doc="the direction in the block's space")

    def check(self, where: str) -> None:
        """Texts make an embedding-space direction; a vector makes a block's one; never a mix."""
        if self.block == EMBEDDING:
            if not self.plus or self.vector:
                raise ParamError(f"{where}: an embedding-space direction (block -1) needs a text and no vector")
        elif self.plus or self.minus or not self.vector:
            raise ParamError(f"{where}: a block's direction needs a vector (and no texts)")
        if self.vector and not any(self.vector):
            raise ParamError(f"{where}: the direction's vector is all zeros")


class Unit(Term):
    """A unit term: its score per row of captured activations; the loss maximizes it."""

    unit = True

    @property
    def block(self) -> int:
        """The block whose output the engine must capture for this term (-1: none, the embedding)."""
        return int(self.settings.block)

    def score(self, act: Any, feats: Any, direction: Any) -> torch.Tensor:
        """Per-row score from `act` (rows, C, *grid) of `block`, or `feats` (rows, D) unit-norm image
        embeddings and `direction` (D,) for an embedding-space direction."""
        raise NotImplementedError

    def loss(self, scores: torch.Tensor) -> torch.Tensor:
        """Unweighted loss over the views: minus the mean score (gradient ascent on the unit)."""
        return -scores.mean()

    @classmethod
    def label(cls, settings: Any) -> str:
        """The unit as --unit writes it (info, the app's objective, the change history)."""
        raise NotImplementedError


@register
class Channel(Unit):
    name = "channel"
    Settings = ChannelSettings
    about = "a block's channel, mean over positions (maximized)"

    def score(self, act: Any, feats: Any, direction: Any) -> torch.Tensor:
        return act[:, self.settings.channel].flatten(1).float().mean(1)

    @classmethod
    def label(cls, settings: Any) -> str:
        return f"{settings.block}:{settings.channel}{weight_text(settings.weight)}"


@register
class Neuron(Unit):
    name = "neuron"
    Settings = NeuronSettings
    about = "a block's channel at one token (ViT) or pixel (ResNet), maximized"

    def score(self, act: Any, feats: Any, direction: Any) -> torch.Tensor:
        s = self.settings
        one = act[:, s.channel, s.token] if act.dim() == 3 else act[:, s.channel, s.y, s.x]
        return one.float()

    @classmethod
    def label(cls, settings: Any) -> str:
        at = str(settings.token) if settings.token >= 0 else f"{settings.y},{settings.x}"
        return f"{settings.block}:{settings.channel}@{at}{weight_text(settings.weight)}"


@register
class Direction(Unit):
    name = "direction"
    Settings = DirectionSettings
    about = "a direction in a block's activation space, or in the embedding space from texts (maximized)"

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._vector: torch.Tensor | None = None

    def score(self, act: Any, feats: Any, direction: Any) -> torch.Tensor:
        if self.block == EMBEDDING:
            return feats @ direction
        if self._vector is None or self._vector.device != act.device:
            v = torch.tensor(self.settings.vector, dtype=torch.float32, device=act.device)
            self._vector = F.normalize(v, dim=0)
        return act.flatten(2).float().mean(2) @ self._vector

    @classmethod
    def label(cls, settings: Any) -> str:
        if settings.block == EMBEDDING:
            text = " - ".join([" + ".join(settings.plus), *settings.minus])
            return f"text:{text}{weight_text(settings.weight)}"
        return f"{settings.block}:vector[{len(settings.vector)}]{weight_text(settings.weight)}"
