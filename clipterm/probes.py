"""Layer probes: what each block of the vision tower does while a lane is being painted (seed 000).

Every `every` steps the engine calls `begin()` before its batched forward and `end()` after the
backward (steps in between are untouched: no hooks are registered then). While armed, forward
hooks on each block of the vision tower record activation statistics of the block's output, and a
tensor hook on that output records its gradient's statistics. Row 0 of a record is the canvas
itself: its pixels and the image gradient that the optimizer is about to apply.

A record is float32 (n_layers, 6) per lane with columns STAT_COLUMNS:
    act_mean, act_std   over every element of the lane's rows of the batch (views + clean copy)
    act_norm            mean over those rows of each row's L2 norm (independent of the view count)
    grad_mean, grad_std over every element of d(lane loss)/d(block output) for the lane's rows
    grad_norm           L2 norm of that whole gradient (the lane's gradient flowing through the block)
Lanes share the forward but their losses are summed, so each lane's slice of a block's gradient is
exactly the gradient of that lane's own loss. Statistics stay on the device until `lane_arrays()`
is called (at save time), so probing adds no host sync to the step.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch

STAT_COLUMNS = ("act_mean", "act_std", "act_norm", "grad_mean", "grad_std", "grad_norm")
DEFAULT_EVERY = 10
CANVAS = "canvas"


def find_blocks(model: torch.nn.Module) -> tuple[list[str], list[torch.nn.Module], int]:
    """The vision tower's blocks, their names, and which dim of a block's output is the batch.

    ViTs: visual.transformer.resblocks[i] (batch dim 0 unless the transformer runs sequence-first);
    open_clip's ModifiedResNet: visual.layer1..layer4. Anything else: no blocks (canvas row only).
    """
    visual = getattr(model, "visual", model)
    tr = getattr(visual, "transformer", None)
    blocks = getattr(tr, "resblocks", None)
    if blocks is not None and len(blocks):
        batch_dim = 0 if getattr(tr, "batch_first", True) else 1
        return [f"block{i}" for i in range(len(blocks))], list(blocks), batch_dim
    stages = [getattr(visual, f"layer{i}", None) for i in range(1, 5)]
    if all(isinstance(s, torch.nn.Module) for s in stages):
        return [f"layer{i}" for i in range(1, 5)], stages, 0
    return [], [], 0


def layer_names(model: torch.nn.Module) -> list[str]:
    """Row names of a probe record for `model`: the canvas first, then each block."""
    return [CANVAS] + find_blocks(model)[0]


def generic_layer_names(n_layers: int) -> list[str]:
    """Row names when only the arrays are at hand (analysis of a saved session)."""
    return [CANVAS] + [f"block {i}" for i in range(1, n_layers)]


def _act_stats(x: torch.Tensor) -> torch.Tensor:
    """(3,) mean, std, mean per-row L2 norm of x (rows along dim 0)."""
    x = x.detach().float()
    return torch.stack([x.mean(), x.std(unbiased=False), x.flatten(1).norm(dim=1).mean()])


def _grad_stats(g: torch.Tensor) -> torch.Tensor:
    """(3,) mean, std and L2 norm of a gradient slice."""
    g = g.detach().float()
    return torch.stack([g.mean(), g.std(unbiased=False), g.norm()])


class Probe:
    """Records per-block statistics every `every` steps for each lane; 0 turns it off."""

    def __init__(
        self, names: Sequence[str], blocks: Sequence[torch.nn.Module], batch_dim: int = 0, every: int = DEFAULT_EVERY
    ) -> None:
        self.names = [CANVAS] + list(names)
        self.blocks = list(blocks)
        self.batch_dim = batch_dim
        self.every = int(every)
        self._handles: list = []
        self._lanes: list[str] = []
        self._sizes: list[int] = []
        self._act: list[list[torch.Tensor] | None] = []
        self._grad: list[list[torch.Tensor] | None] = []
        # per lane: records already on the host, and records still on the device
        self._saved: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._pending: dict[str, list[tuple[int, torch.Tensor]]] = {}
        self._lock = threading.Lock()  # the app reads records from the UI thread while a worker steps

    @classmethod
    def for_model(cls, model: torch.nn.Module, every: int = DEFAULT_EVERY) -> Probe:
        names, blocks, batch_dim = find_blocks(model)
        return cls(names, blocks, batch_dim, every)

    @property
    def n_layers(self) -> int:
        return len(self.names)

    def due(self, step: int) -> bool:
        """Record the step that will be number `step` (1-based)? The first step is always recorded."""
        return self.every > 0 and (step == 1 or step % self.every == 0)

    # ------------------------------------------------------------------ around one step
    def begin(self, lanes: Sequence[str], sizes: Sequence[int]) -> None:
        """Arm the hooks for one forward whose batch is the lanes' rows concatenated in order."""
        self._remove()
        self._lanes, self._sizes = list(lanes), [int(s) for s in sizes]
        self._act = [None] * len(self.blocks)
        self._grad = [None] * len(self.blocks)
        for i, block in enumerate(self.blocks):
            self._handles.append(block.register_forward_hook(self._forward_hook(i)))

    def _split(self, t: torch.Tensor) -> list[torch.Tensor]:
        x = t.movedim(self.batch_dim, 0) if self.batch_dim else t
        return list(torch.split(x, self._sizes, dim=0))

    def _forward_hook(self, i: int):
        def hook(_module: torch.nn.Module, _inputs: object, out: object) -> None:
            if not isinstance(out, torch.Tensor) or out.shape[self.batch_dim] != sum(self._sizes):
                return  # not the step's batched forward (or an unexpected output type): ignore
            with torch.no_grad():
                self._act[i] = [_act_stats(part) for part in self._split(out)]
            if out.requires_grad:

                def grad_hook(g: torch.Tensor) -> None:
                    with torch.no_grad():
                        self._grad[i] = [_grad_stats(part) for part in self._split(g)]

                out.register_hook(grad_hook)

        return hook

    def end(self, params: dict[str, torch.Tensor], step: int) -> None:
        """Disarm and store one record per lane; `params` are the lanes' canvases after backward."""
        self._remove()
        nan3 = None
        with torch.no_grad():
            for k, lane in enumerate(self._lanes):
                p = params[lane]
                if nan3 is None:
                    nan3 = torch.full((3,), float("nan"), device=p.device)
                g = p.grad if p.grad is not None else torch.zeros_like(p)
                rows = [torch.cat([_act_stats(p), _grad_stats(g)])]
                for i in range(len(self.blocks)):
                    act = self._act[i][k].to(p.device) if self._act[i] is not None else nan3
                    grad = self._grad[i][k].to(p.device) if self._grad[i] is not None else nan3
                    rows.append(torch.cat([act, grad]))
                rec = torch.stack(rows).float()
                with self._lock:
                    self._drop_after(lane, int(step) - 1)  # a rewound engine (rollback) records its steps anew
                    self._pending.setdefault(lane, []).append((int(step), rec))
        self._act, self._grad = [], []

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # ------------------------------------------------------------------ records
    def _drop_after(self, lane: str, step: int) -> None:
        """Forget records made after `step` (the engine went back to an earlier save). Lock held."""
        pending = self._pending.get(lane)
        if pending and pending[-1][0] > step:
            self._pending[lane] = [(s, t) for s, t in pending if s <= step]
        saved = self._saved.get(lane)
        if saved is not None and len(saved[1]) and saved[1][-1] > step:
            keep = saved[1] <= step
            self._saved[lane] = (saved[0][keep], saved[1][keep])

    def lane_arrays(self, lane: str, upto: int | None = None) -> dict[str, np.ndarray]:
        """`probes` float32 (n_records, n_layers, 6) and `probe_steps` int64 (n_records,) for a session.

        `upto` (the lane's step count) drops records of steps the lane has been rolled back past.
        """
        with self._lock:
            if upto is not None:
                self._drop_after(lane, int(upto))
            stats, steps = self._saved.get(
                lane, (np.zeros((0, self.n_layers, len(STAT_COLUMNS)), np.float32), np.zeros((0,), np.int64))
            )
            pending = self._pending.pop(lane, [])
            if pending:
                new = torch.stack([t for _, t in pending]).cpu().numpy().astype(np.float32)
                stats = np.concatenate([stats, new])
                steps = np.concatenate([steps, np.array([s for s, _ in pending], np.int64)])
                self._saved[lane] = (stats, steps)
        return {"probes": stats, "probe_steps": steps}

    def latest(self, lane: str) -> tuple[int, np.ndarray] | None:
        """(step, (n_layers, 6) record) of the newest record of `lane`, for a live view; None if none yet."""
        steps, stats = self.recent(lane, 1)
        return (int(steps[-1]), stats[-1]) if len(steps) else None

    def recent(self, lane: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The last `n` records of `lane`: steps (k,) and stats (k, n_layers, 6), k <= n."""
        arr = self.lane_arrays(lane)
        return arr["probe_steps"][-n:], arr["probes"][-n:]

    def load(self, arrays: dict[str, dict[str, np.ndarray]]) -> None:
        """Continue the records of a resumed session (ignored when they were made on another model)."""
        for lane, arr in arrays.items():
            stats, steps = arr.get("probes"), arr.get("probe_steps")
            if stats is None or steps is None or stats.ndim != 3 or stats.shape[1] != self.n_layers:
                continue
            with self._lock:
                self._saved[lane] = (stats.astype(np.float32), steps.astype(np.int64))
                self._pending.pop(lane, None)


def configure(engine: object, every: int | None) -> None:
    """Set how often `engine`'s probe records (None keeps the current setting; 0 turns it off)."""
    probe = getattr(engine, "probe", None)
    if probe is not None and every is not None:
        probe.every = int(every)


def layer_rows(stats: np.ndarray, names: Sequence[str]) -> list[tuple[str, float, float, float, float]]:
    """Rows for the app's Layers view: (name, act_mean, act_std, act_norm, grad_norm) per layer.

    `stats` is one record (n_layers, 6) or a stack of them (the last record is shown).
    """
    arr = np.asarray(stats, dtype=np.float32)
    if arr.ndim == 3:
        if not len(arr):
            return []
        arr = arr[-1]
    if arr.ndim != 2 or arr.shape[1] != len(STAT_COLUMNS):
        raise ValueError(f"probe stats must be (n_layers, {len(STAT_COLUMNS)}), got {arr.shape}")
    names = list(names) if len(names) == len(arr) else generic_layer_names(len(arr))
    return [(names[i], float(r[0]), float(r[1]), float(r[2]), float(r[5])) for i, r in enumerate(arr)]
