"""The optimization engine: two lanes of pixels pulled toward a prompt by one frozen CLIP.

Both lanes advance together in ONE batched forward/backward per step; each lane keeps its own
optimizer, best image, augmentation RNG and metric history, so a lane's trajectory is the same
whether it runs alone or beside the other. Per-step metrics stay on the device and are copied to
the host only when asked (flush), so a step never waits for the GPU. No UI code here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from clipterm import augment, losses
from clipterm.errors import ClipTermError
from clipterm.models import ModelBundle, png_roundtrip
from clipterm.presets import LaneParams, ParamError, preset, with_value
from clipterm.prompts import PromptTerm, parse_prompt

LANES = ("a", "b")
HISTORY_COLUMNS = ("raw_sim", "loss", "sim_loss", "tv", "memory", "best_sim_loss")
EVAL_COLUMNS = ("step", "robust_sim", "verified_sim")


class EngineError(ClipTermError):
    """The optimization cannot continue as asked (NaN canvas, bad lane name...)."""


def lane_seed(seed: int, name: str) -> int:
    """Each lane's augmentation stream depends on the run seed and the lane name, not its position."""
    return (seed * 1_000_003 + (LANES.index(name) + 1) * 7919) % (2**63)


@dataclass
class Lane:
    """One optimized canvas and everything needed to continue it exactly."""

    name: str
    params: LaneParams
    param: torch.Tensor
    optimizer: torch.optim.Optimizer
    best: torch.Tensor
    best_loss: torch.Tensor
    gen: torch.Generator
    history: np.ndarray = field(default_factory=lambda: np.zeros((0, len(HISTORY_COLUMNS)), np.float32))
    evals: np.ndarray = field(default_factory=lambda: np.zeros((0, len(EVAL_COLUMNS)), np.float32))
    pending: list[torch.Tensor] = field(default_factory=list)
    last_raw: torch.Tensor | None = None  # clean-canvas similarity, carried between raw_every measurements

    @property
    def steps(self) -> int:
        return len(self.history) + len(self.pending)

    def model_pixels(self) -> torch.Tensor:
        return self.param

    @torch.no_grad()
    def shown(self) -> torch.Tensor:
        """The canvas as a person sees it, (1,3,H,W) in [0,1]."""
        x = self.param.detach().float()
        if self.params.display == "minmax":
            lo, hi = x.amin(), x.amax()
            return (x - lo) / (hi - lo).clamp_min(1e-12)
        return x.clamp(0, 1)


def make_optimizer(p: LaneParams, param: torch.Tensor) -> torch.optim.Optimizer:
    if p.optimizer == "adamw":
        return torch.optim.AdamW([param], lr=p.lr, weight_decay=p.weight_decay)
    return torch.optim.Adam([param], lr=p.lr, weight_decay=p.weight_decay)


class Engine:
    """Holds the model, the encoded prompt and the lanes; `step()` advances every lane once."""

    def __init__(
        self,
        bundle: ModelBundle,
        prompt: str,
        lanes: dict[str, LaneParams],
        seed: int = 0,
        eval_every: int = 50,
        precision: str = "auto",
        compile: bool = False,
        raw_every: int = 1,
    ) -> None:
        if not lanes or any(n not in LANES for n in lanes):
            raise EngineError(f"lanes must be a non-empty subset of {LANES}, got {list(lanes)}")
        self.bundle = bundle
        self.device = bundle.device
        self.seed = int(seed)
        self.eval_every = int(eval_every)
        self.configure(precision, compile, raw_every)
        self.warnings: list[str] = []
        self.changes: list[dict] = []
        self.probe = None  # optional probes.Probe: armed around the forward/backward of steps it is due
        self.prompt = ""
        self.terms: list[PromptTerm] = []
        self.set_prompt(prompt, record=False)
        size = bundle.image_size
        noise = torch.randn((1, 3, size, size), generator=torch.Generator().manual_seed(self.seed))
        self.lanes: dict[str, Lane] = {}
        for name in LANES:
            if name in lanes:
                self.lanes[name] = self._new_lane(name, lanes[name], noise)
        self._held_out = augment.held_out_thetas()

    # ----------------------------------------------------------------- set-up and live edits
    def configure(self, precision: str = "auto", compile: bool = False, raw_every: int = 1) -> None:
        """Speed options that change no saved state: autocast precision, torch.compile, raw-sim cadence.

        bf16 autocast and TF32 are the default on CUDA; raw_every=K measures the clean-canvas similarity
        of augmented lanes every K steps (carried forward between), saving one forward sample per step.
        """
        if precision not in ("auto", "fp32", "bf16"):
            raise EngineError(f"precision must be auto, fp32 or bf16, got {precision!r}")
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        if not 1 <= int(raw_every) <= 1_000_000:
            raise EngineError(f"raw_every must be within 1..1000000, got {raw_every}")
        self.precision = precision
        self.raw_every = int(raw_every)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        model = self.bundle.model
        self._encode = torch.compile(model.encode_image, dynamic=False) if compile else model.encode_image

    def _new_lane(self, name: str, p: LaneParams, noise: torch.Tensor) -> Lane:
        init = (p.init_mean + p.init_std * noise).to(self.device)
        param = init.clone().requires_grad_(True)
        return Lane(
            name=name,
            params=p,
            param=param,
            optimizer=make_optimizer(p, param),
            best=init.clone(),
            best_loss=torch.tensor(math.inf, device=self.device),
            gen=torch.Generator().manual_seed(lane_seed(self.seed, name)),
        )

    @property
    def step_count(self) -> int:
        return max(lane.steps for lane in self.lanes.values())

    def lane(self, name: str) -> Lane:
        if name not in self.lanes:
            raise EngineError(f"lane {name!r} is not part of this run (lanes: {', '.join(self.lanes)})")
        return self.lanes[name]

    def set_prompt(self, prompt: str, record: bool = True) -> list[str]:
        """Parse and encode a new prompt; lanes continue from their current canvases."""
        terms = parse_prompt(prompt)
        warns = []
        for t in terms:
            n = self.bundle.token_count(t.text)
            if n > self.bundle.context_length:
                warns.append(
                    f"prompt term {t.text[:40]!r} has {n} tokens; truncated to the model's {self.bundle.context_length}"
                )
        emb = self.bundle.encode_text([t.text for t in terms])
        w = torch.tensor([t.weight for t in terms], device=self.device, dtype=torch.float32)
        self._text = emb
        self._weights = w / w.clamp_min(0).sum()
        if record:
            self.changes.append(
                {"step": self.step_count, "lane": "*", "key": "prompt", "old": self.prompt, "new": prompt}
            )
        self.prompt = prompt
        self.terms = terms
        self.warnings.extend(warns)
        return warns

    def set_param(self, lane: str, key: str, value: object) -> LaneParams:
        """Validated live edit; effective from the next step."""
        ln = self.lane(lane)
        new = with_value(ln.params, key, value)
        old = getattr(ln.params, key)
        ln.params = new
        if key in ("lr", "weight_decay"):
            for g in ln.optimizer.param_groups:
                g[key] = getattr(new, key)
        self.changes.append({"step": self.step_count, "lane": lane, "key": key, "old": old, "new": getattr(new, key)})
        return new

    def set_preset(self, lane: str, name: str) -> LaneParams:
        """Switch a lane's preset, keeping its canvas; the optimizer is rebuilt only if its kind changes."""
        ln = self.lane(lane)
        new = preset(name)
        old = ln.params
        if new.optimizer != old.optimizer or new.weight_decay != old.weight_decay or new.lr != old.lr:
            if new.optimizer != old.optimizer:
                ln.optimizer = make_optimizer(new, ln.param)
            else:
                for g in ln.optimizer.param_groups:
                    g["lr"], g["weight_decay"] = new.lr, new.weight_decay
        ln.params = new
        self.changes.append({"step": self.step_count, "lane": lane, "key": "preset", "old": old.preset, "new": name})
        return new

    # ----------------------------------------------------------------- the step
    def _similarity(self, feats: torch.Tensor) -> torch.Tensor:
        """Weighted prompt similarity per row: sum_i w_i cos_i / sum of positive weights."""
        return (feats @ self._text.T) @ self._weights

    def _lane_inputs(self, ln: Lane, measure_raw: bool) -> tuple[torch.Tensor, int]:
        """The lane's model inputs and how many are views; a clean copy follows when raw is measured."""
        p = ln.params
        x = ln.model_pixels()
        if p.augment:
            theta = augment.sample_affine(ln.gen, p.views, p.degrees, p.translate, p.scale_min, p.scale_max, p.flip_p)
            views = augment.apply_affine(x, theta)
            batch = torch.cat([views, x.detach()], dim=0) if measure_raw else views
            n_views = p.views
        else:
            batch, n_views = x, 1
        if p.normalize:
            batch = (batch - self.bundle.mean_t) / self.bundle.std_t
        return batch, n_views

    def step(self, n: int = 1) -> None:
        """Advance every lane by `n` steps, one batched forward/backward each."""
        for _ in range(n):
            self._step_with_oom_retry()
            if self.eval_every > 0 and self.step_count % self.eval_every == 0:
                self.evaluate()

    def _step_with_oom_retry(self) -> None:
        """On out-of-memory, halve the views of the widest lane and retry the same step (logged)."""
        while True:
            states = {ln.name: ln.gen.get_state() for ln in self.lanes.values()}
            try:
                self._step_once()
                return
            except torch.OutOfMemoryError:
                for ln in self.lanes.values():
                    ln.optimizer.zero_grad(set_to_none=True)
                    ln.gen.set_state(states[ln.name])
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                wide = max(self.lanes.values(), key=lambda ln: ln.params.views if ln.params.augment else 0)
                if not wide.params.augment or wide.params.views <= 1:
                    raise EngineError(
                        "out of memory even at 1 view per lane; use a smaller model or --device cpu"
                    ) from None
                views = wide.params.views // 2
                self.set_param(wide.name, "views", views)
                self.warnings.append(
                    f"out of memory at step {self.step_count + 1}: lane {wide.name} views halved to {views}"
                )

    def _step_once(self) -> None:
        lanes = list(self.lanes.values())
        due = (self.step_count + 1) % self.raw_every == 0
        inputs, sizes = [], []
        for ln in lanes:
            batch, n_views = self._lane_inputs(ln, due or ln.last_raw is None)
            inputs.append(batch)
            sizes.append((batch.shape[0], n_views))
        probe = self.probe if self.probe is not None and self.probe.due(self.step_count + 1) else None
        if probe is not None:  # eager forward on probe steps: hooks do not mix with a compiled graph
            probe.begin([ln.name for ln in lanes], [size for size, _ in sizes])
        encode = self._encode if probe is None else self.bundle.model.encode_image
        x = torch.cat(inputs)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            feats = encode(x)
        feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        sims = self._similarity(feats)
        total = sims.new_zeros(())
        rows = []
        start = 0
        for ln, (size, n_views) in zip(lanes, sizes):
            p = ln.params
            s = sims[start : start + size]
            start += size
            sim_loss = losses.similarity_loss(s[:n_views], p.loss, p.temperature)
            if size > n_views or not p.augment:  # the last row is the clean canvas
                ln.last_raw = s[-1].detach()
            tv = (losses.tv_l2 if p.tv_kind == "l2" else losses.tv_l1)(ln.param) if p.tv_weight else sims.new_zeros(())
            mem = torch.mean((ln.param - ln.best) ** 2) if p.memory_weight else sims.new_zeros(())
            lane_loss = sim_loss + p.tv_weight * tv + p.memory_weight * mem
            total = total + lane_loss
            rows.append((ln.last_raw, lane_loss.detach(), sim_loss.detach(), tv.detach(), mem.detach()))
        for ln in lanes:
            ln.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if probe is not None:
            probe.end({ln.name: ln.param for ln in lanes}, self.step_count + 1)
        with torch.no_grad():
            for ln, (raw, lane_loss, sim_loss, tv, mem) in zip(lanes, rows):
                better = sim_loss < ln.best_loss
                ln.best.copy_(torch.where(better, ln.param.detach(), ln.best))
                ln.best_loss = torch.where(better, sim_loss, ln.best_loss)
                ln.optimizer.step()
                if ln.params.clamp:
                    ln.param.clamp_(0.0, 1.0)
                ln.pending.append(torch.stack([raw, lane_loss, sim_loss, tv, mem, ln.best_loss]).float())

    def flush(self) -> None:
        """Copy pending per-step metrics to the host (the only per-step sync point); check for NaN."""
        for ln in self.lanes.values():
            if ln.pending:
                rows = torch.stack(ln.pending).cpu().numpy().astype(np.float32)
                ln.pending.clear()
                ln.history = np.concatenate([ln.history, rows])
                if not np.isfinite(rows[:, 0]).all():
                    raise EngineError(
                        f"lane {ln.name}: similarity became NaN/Inf at step {len(ln.history)}; "
                        f"lower lr or change parameters, then continue"
                    )

    # ----------------------------------------------------------------- measurements
    @torch.no_grad()
    def evaluate(self) -> dict[str, tuple[float, float]]:
        """Robust (16 fixed held-out views) and verified (8-bit PNG round trip) similarity per lane."""
        out = {}
        for ln in self.lanes.values():
            x = ln.model_pixels().detach()
            views = augment.apply_affine(x, self._held_out)
            if ln.params.normalize:
                views = (views - self.bundle.mean_t) / self.bundle.std_t
            feats = torch.nn.functional.normalize(self.bundle.model.encode_image(views).float(), dim=-1)
            robust = float(self._similarity(feats).mean())
            verified = self.verified_similarity(ln.name)
            ln.evals = np.concatenate([ln.evals, np.array([[ln.steps, robust, verified]], np.float32)])
            out[ln.name] = (robust, verified)
        return out

    @torch.no_grad()
    def verified_similarity(self, lane: str) -> float:
        img = png_roundtrip(self.shown(lane))
        x = self.bundle.preprocess_uint8(img)
        return float(self._similarity(self.bundle.encode_pixels(x)).mean())

    def shown(self, lane: str) -> np.ndarray:
        """The lane's canvas as shown: float32 (3,H,W) in [0,1]."""
        return self.lane(lane).shown()[0].cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def preview(self, lane: str, size: int) -> np.ndarray:
        """A small uint8 HWC copy for the screen, downsampled on the device before the copy."""
        x = self.lane(lane).shown()
        if x.shape[-1] > size:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
        return (x[0].permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()

    @torch.no_grad()
    def similarity_of(self, pixels: torch.Tensor) -> float:
        """Prompt similarity of (1,3,H,W) pixels in [0,1] on this engine's model."""
        return float(self._similarity(self.bundle.encode_pixels(pixels.to(self.device))).mean())

    # ----------------------------------------------------------------- exact state (for sessions)
    def lane_state(self, name: str) -> dict[str, np.ndarray]:
        """Every array needed to continue lane `name` bit-exactly."""
        self.flush()
        ln = self.lane(name)
        st = ln.optimizer.state.get(ln.param, {})
        zeros = np.zeros(tuple(ln.param.shape[1:]), np.float32)

        def arr(t: torch.Tensor) -> np.ndarray:
            return t.detach()[0].cpu().numpy().astype(np.float32)

        return {
            "image": self.shown(name),
            "param": arr(ln.param),
            "best": arr(ln.best),
            "best_loss": np.array(float(ln.best_loss), np.float32),
            "opt_step": np.array(float(st["step"]) if "step" in st else 0.0, np.float32),
            "opt_exp_avg": arr(st["exp_avg"]) if "exp_avg" in st else zeros,
            "opt_exp_avg_sq": arr(st["exp_avg_sq"]) if "exp_avg_sq" in st else zeros,
            "rng": ln.gen.get_state().numpy().astype(np.uint8),
            "history": ln.history.astype(np.float32),
            "evals": ln.evals.astype(np.float32),
        }

    def load_lane_state(self, name: str, state: dict[str, np.ndarray]) -> None:
        """Restore a lane from `lane_state` arrays (already validated by the session loader)."""
        ln = self.lane(name)
        shape = tuple(ln.param.shape[1:])
        for key in ("param", "best", "opt_exp_avg", "opt_exp_avg_sq"):
            if tuple(state[key].shape) != shape:
                raise EngineError(f"lane {name}: {key} has shape {state[key].shape}, the model needs {shape}")
        with torch.no_grad():
            ln.param.copy_(torch.from_numpy(state["param"])[None].to(self.device))
            ln.best.copy_(torch.from_numpy(state["best"])[None].to(self.device))
        ln.best_loss = torch.tensor(float(state["best_loss"]), device=self.device)
        ln.optimizer = make_optimizer(ln.params, ln.param)
        if float(state["opt_step"]) > 0:
            ln.optimizer.state[ln.param] = {
                "step": torch.tensor(float(state["opt_step"]), dtype=torch.float32),
                "exp_avg": torch.from_numpy(state["opt_exp_avg"])[None].to(self.device),
                "exp_avg_sq": torch.from_numpy(state["opt_exp_avg_sq"])[None].to(self.device),
            }
        try:
            ln.gen.set_state(torch.from_numpy(state["rng"]))
        except RuntimeError:
            raise ParamError(f"lane {name}: the saved RNG state is not a valid generator state") from None
        ln.history = state["history"].astype(np.float32)
        ln.evals = state["evals"].astype(np.float32)
        ln.pending.clear()
        # The carried clean-canvas similarity (raw_every > 1) continues from the last recorded one.
        ln.last_raw = torch.tensor(float(ln.history[-1, 0]), device=self.device) if len(ln.history) else None
