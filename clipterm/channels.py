"""`clipterm units SESSION --block K`: a block's channels ranked by activation on a lane's picture.

What a unit objective did (or which unit to paint next) shows in the ranking: after `--unit 2:5`
channel 5 should lead block 2. Read-only: the session is loaded, never locked or written, so it
works on a session another clipterm is running.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipterm.errors import ClipTermError


@dataclass(frozen=True)
class ChannelRow:
    channel: int
    mean: float  # mean activation over the block's positions
    share: float  # mean / sum over the block's channels of |mean|


@dataclass(frozen=True)
class Ranking:
    block: int
    block_name: str
    model: str
    lane: str
    step: int
    rows: list[ChannelRow]


def rank_channels(path: Path, block: int, lane: str | None = None, device: str = "auto") -> Ranking:
    """Every channel of `block`, most active first, on the lane's current picture (its float canvas,
    normalized as the engine feeds it to the model)."""
    import torch

    from clipterm import session as sess
    from clipterm.runner import load_session_model
    from clipterm.units import block_activations, channel_means, check_block, tower

    s = sess.load(Path(path))
    lane = lane or next(iter(s.lanes))
    if lane not in s.lanes:
        raise ClipTermError(f"{path}: has no lane {lane} (lanes: {', '.join(s.lanes)})")
    bundle = load_session_model(s.model, device)
    info = check_block(tower(bundle.model, bundle.image_size), block, bundle.name)
    canvas = torch.from_numpy(s.arrays[lane]["image"])[None]
    if canvas.shape[-1] != bundle.image_size:
        raise ClipTermError(f"{path}: lane {lane}'s canvas does not fit {bundle.name}'s {bundle.image_size}px input")
    means = channel_means(block_activations(bundle, canvas, block))[0]
    total = float(means.abs().sum()) or 1.0
    order = torch.argsort(means, descending=True, stable=True).tolist()
    rows = [ChannelRow(c, float(means[c]), float(means[c]) / total) for c in order]
    return Ranking(block, info.name, bundle.name, lane, s.steps, rows)
