"""The optimization engine: lanes of images pulled toward a prompt by frozen CLIP models.

A lane composes parts (see clipterm/parts and lanespec): a parameterization makes its image, a
view pipeline makes its views, an objective scores them, an optimizer moves the parameters. All
lanes advance together in ONE batched forward (per model) and ONE backward per step; each lane
keeps its own optimizer, best image, view generator and metric history, so a lane's trajectory is
the same whether it runs alone or beside others. Per-step metrics stay on the device until
`flush()`, so a step never waits for the GPU. No UI code here.

A lane may start several times (`views.starts`): its starts share each step's views until step
`views.trial`, then the one the model scores best on the fixed held-out views goes on alone. Why:
a start is drawn from the run seed alone, so one unlucky start (an empty figure, a wrong ground)
fails every prompt of a seed; several starts at views/starts views each cost what one costs.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from clipterm import augment
from clipterm.errors import ClipTermError
from clipterm.lanespec import (
    EVAL_COLUMNS,
    HISTORY_COLUMNS,
    MAX_LANES,
    LaneSpec,
    check_lane_name,
    opt_suffix,
    start_prefix,
)
from clipterm.models import ModelBundle, png_roundtrip
from clipterm.parts.base import ParamError, lookup
from clipterm.parts.image import ImageParam
from clipterm.parts.optim_adam import Optimizer
from clipterm.parts.term import Term
from clipterm.parts.view import Transform
from clipterm.presets import preset
from clipterm.prompts import PromptTerm, parse_prompt
from clipterm.units import Tap, check_unit, tower
from clipterm.unitspec import carry_objective, describe_units, has_prompt_term, units_of, with_units

OWN = ""  # in a similarity term's model list: the run's own model
CHOICE_SEED = 20261206  # the fixed draw of a lane's own views that `views.choose = "views"` compares starts on


class EngineError(ClipTermError):
    """The optimization cannot continue as asked (NaN canvas, bad lane name...)."""


def lane_seed(seed: int, name: str) -> int:
    """Each lane's view stream depends on the run seed and the lane's name (a=1, b=2, ... z=26), not
    its position, so a lane draws the same views alone or beside others."""
    k = ord(name) - 96 if len(name) == 1 else 27 + zlib.crc32(name.encode()) % 1_000_000
    return (seed * 1_000_003 + k * 7919) % (2**63)


def start_seed(seed: int, k: int) -> int:
    """The seed of a lane's start `k`: start 0 is the run seed's draw, so one start is a plain lane."""
    return seed if k == 0 else (seed * 1_000_003 + 104_729 * k + 17) % (2**63)


@dataclass
class Lane:
    """One lane: its spec, its built parts and everything needed to continue it exactly."""

    name: str
    spec: LaneSpec
    image: ImageParam
    views: list[Transform]
    terms: list[Term]
    optim: Optimizer
    optimizer: torch.optim.Optimizer
    best: torch.Tensor  # the best image so far (image space)
    best_loss: torch.Tensor
    gen: torch.Generator
    history: np.ndarray = field(default_factory=lambda: np.zeros((0, len(HISTORY_COLUMNS)), np.float32))
    evals: np.ndarray = field(default_factory=lambda: np.zeros((0, len(EVAL_COLUMNS)), np.float32))
    pending: list[torch.Tensor] = field(default_factory=list)
    last_raw: torch.Tensor | None = None  # clean-canvas similarity, carried between raw_every measurements
    rivals: list[ImageParam] = field(default_factory=list)  # starts 1.. (kept, idle, after the choice)
    rival_optimizers: list[torch.optim.Optimizer] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.history) + len(self.pending)

    @property
    def n_views(self) -> int:
        return self.spec.views.views if self.spec.views.augment else 1

    def in_trial(self) -> bool:
        """Whether this step's views are shared among the lane's starts (before the choice)."""
        return bool(self.rivals) and self.steps < self.spec.views.trial

    def candidates(self) -> list[tuple[ImageParam, torch.optim.Optimizer]]:
        """The lane's own image (start 0) and every other start, each with its optimizer."""
        return [(self.image, self.optimizer), *zip(self.rivals, self.rival_optimizers)]

    def similarity_terms(self) -> list[Term]:
        return [t for t in self.terms if t.similarity]

    def unit_terms(self) -> list[Term]:
        """The lane's unit terms (channel, neuron, direction), scored from activations of the forward."""
        return [t for t in self.terms if t.unit]

    def shown(self) -> torch.Tensor:
        """The canvas as a person sees it, (1,3,H,W) in [0,1]."""
        return self.image.shown()


def build_parts(spec: LaneSpec) -> tuple[list[Transform], list[Term], Optimizer]:
    views = [lookup("transform", p.name, "transforms")(p.settings) for p in spec.transforms]
    terms = [lookup("term", p.name, "terms")(p.settings) for p in spec.terms]
    optim = lookup("optim", spec.optim.name, "optim")(spec.optim.settings)
    return views, terms, optim  # type: ignore[return-value]


class Engine:
    """Holds the models, the encoded prompt and the lanes; `step()` advances every lane once."""

    def __init__(
        self,
        bundle: ModelBundle,
        prompt: str,
        lanes: dict[str, LaneSpec],
        seed: int = 0,
        eval_every: int = 50,
        precision: str = "auto",
        compile: bool = False,
        raw_every: int = 1,
        models: dict[str, ModelBundle] | None = None,
    ) -> None:
        if not lanes or len(lanes) > MAX_LANES:
            raise EngineError(f"a run has 1 to {MAX_LANES} lanes, got {len(lanes)}")
        for name in lanes:
            check_lane_name(name)
        self.bundle = bundle
        self.device = bundle.device
        # models by name; OWN is the run's model. Ensembles name others (loaded by the caller).
        self.models: dict[str, ModelBundle] = {OWN: bundle, bundle.name: bundle, **(models or {})}
        self.seed = int(seed)
        self.eval_every = int(eval_every)
        self.configure(precision, compile, raw_every)
        self.warnings: list[str] = []
        self.changes: list[dict] = []
        self.probe = None  # optional probes.Probe: armed around the forward/backward of steps it is due
        self.prompt = ""
        self.terms: list[PromptTerm] = []
        self._text: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._directions: dict[tuple[tuple[str, ...], tuple[str, ...]], torch.Tensor] = {}
        self.lanes: dict[str, Lane] = {}
        for spec in lanes.values():
            self._check_models(spec)
        self.set_prompt(prompt, record=False)
        for name, spec in lanes.items():
            self.lanes[name] = self._new_lane(name, spec)
        self._held_out = augment.held_out_thetas()
        self.forwards = 0  # image-tower forward passes made by steps (one per model in use per step)

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

    def _check_models(self, spec: LaneSpec) -> None:
        for m in spec.models():
            if m not in self.models:
                raise EngineError(f"model {m!r} named by a lane's objective is not loaded")

    def _check_objective(self, name: str, spec: LaneSpec) -> None:
        """A lane's units must fit the run's model, and a prompt term needs a prompt (a session made
        with units alone has none)."""
        if not self.terms and has_prompt_term(spec):
            raise EngineError(f"lane {name}: its objective has a prompt term, but the run has no prompt")
        units = units_of(spec)
        if units:
            blocks = tower(self.bundle.model, self.bundle.image_size)
            for p in units:
                check_unit(p.name, p.settings, blocks, self.bundle.name)
                if p.settings.block < 0:
                    self._direction(p.settings)  # encoded now: a zero direction is refused before step 1

    def _new_lane(self, name: str, spec: LaneSpec) -> Lane:
        self._check_objective(name, spec)
        cls = lookup("param", spec.param.name, "param")
        image = cls(spec.param.settings, self.bundle.image_size, self.device, self.seed)  # type: ignore[call-arg]
        views, terms, optim = build_parts(spec)
        with torch.no_grad():
            best = image.image().detach().clone()
        ln = Lane(
            name=name,
            spec=spec,
            image=image,  # type: ignore[arg-type]
            views=views,
            terms=terms,
            optim=optim,
            optimizer=optim.build(image.parameters()),  # type: ignore[attr-defined]
            best=best,
            best_loss=torch.tensor(math.inf, device=self.device),
            gen=torch.Generator().manual_seed(lane_seed(self.seed, name)),
        )
        self._match_starts(ln)
        return ln

    def _match_starts(self, ln: Lane) -> None:
        """Give the lane the other starts its spec asks for (fresh draws of the lane's kind), or drop
        those it no longer asks for; idempotent, so every spec change can call it."""
        want = ln.spec.views.starts - 1
        kind = type(ln.image)
        if any(type(r) is not kind for r in ln.rivals):  # the parameterization changed: draw anew
            ln.rivals, ln.rival_optimizers = [], []
        del ln.rivals[want:], ln.rival_optimizers[want:]
        for k in range(len(ln.rivals) + 1, want + 1):
            rival = kind(ln.spec.param.settings, self.bundle.image_size, self.device, start_seed(self.seed, k))  # type: ignore[call-arg]
            ln.rivals.append(rival)
            ln.rival_optimizers.append(ln.optim.build(rival.parameters()))  # type: ignore[attr-defined]
        for r in ln.rivals:
            r.settings = ln.spec.param.settings

    def rebuild_lanes(self, lanes: dict[str, LaneSpec]) -> None:
        """Fresh lanes from specs (the caller then loads their saved state): restoring a session."""
        for spec in lanes.values():
            self._check_models(spec)
        self.lanes = {name: self._new_lane(check_lane_name(name), spec) for name, spec in lanes.items()}

    @property
    def step_count(self) -> int:
        return max(lane.steps for lane in self.lanes.values())

    def lane(self, name: str) -> Lane:
        if name not in self.lanes:
            raise EngineError(f"lane {name!r} is not part of this run (lanes: {', '.join(self.lanes)})")
        return self.lanes[name]

    def _model_keys(self) -> list[str]:
        """Distinct model names the lanes' similarity terms use (OWN first)."""
        keys = [OWN]
        for ln in self.lanes.values():
            for t in ln.similarity_terms():
                for m in t.settings.models or (OWN,):
                    key = OWN if self.models[m] is self.bundle else m
                    if key not in keys:
                        keys.append(key)
        return keys

    def set_prompt(self, prompt: str, record: bool = True) -> list[str]:
        """Parse and encode a new prompt on every model in use; lanes continue from their canvases.

        "" (no prompt) is a run whose lanes' objectives are units alone; `_check_objective` refuses a
        lane with a prompt term then."""
        if prompt == "" and not record:
            self.prompt, self.terms, self._text = "", [], {}
            return []
        terms = parse_prompt(prompt)
        warns = []
        texts = [t.text for t in terms]
        encoded = {}
        w = torch.tensor([t.weight for t in terms], dtype=torch.float32)
        w = w / w.clamp_min(0).sum()
        for key, bundle in self.models.items():
            if key not in (OWN, *self._used_names()):
                continue
            for t in terms:
                n = bundle.token_count(t.text)
                if n > bundle.context_length and key == OWN:
                    warns.append(
                        f"prompt term {t.text[:40]!r} has {n} tokens; truncated to the model's {bundle.context_length}"
                    )
            encoded[key] = (bundle.encode_text(texts), w.to(bundle.device))
        self._text = encoded
        if record:
            self.changes.append(
                {"step": self.step_count, "lane": "*", "key": "prompt", "old": self.prompt, "new": prompt}
            )
        self.prompt = prompt
        self.terms = terms
        self.warnings.extend(warns)
        return warns

    def _used_names(self) -> set[str]:
        names: set[str] = set()
        for ln in self.lanes.values():
            names.update(ln.spec.models())
        return names

    def _text_for(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        if key not in self._text:  # a lane began using this model after the prompt was set
            bundle = self.models[key]
            texts = [t.text for t in self.terms]
            w = torch.tensor([t.weight for t in self.terms], dtype=torch.float32)
            self._text[key] = (bundle.encode_text(texts), (w / w.clamp_min(0).sum()).to(bundle.device))
        return self._text[key]

    def text_features(self, model: str = OWN) -> torch.Tensor:
        """The encoded prompt terms on `model` (rows: terms), as the similarity uses them."""
        return self._text_for(model)[0]

    def set_param(self, lane: str, key: str, value: object) -> LaneSpec:
        """Validated live edit of one setting; effective from the next step."""
        ln = self.lane(lane)
        label, fname, rule = ln.spec.resolve(key)
        if not rule.live:
            raise ParamError(f"{key} is fixed while the lane runs (set it when the lane is made)")
        old = ln.spec.value(key)
        new = ln.spec.with_value(key, value)
        self._apply_spec(ln, new)
        self.changes.append(
            {"step": self.step_count, "lane": lane, "key": key, "old": _plain(old), "new": _plain(new.value(key))}
        )
        return new

    def _apply_spec(self, ln: Lane, new: LaneSpec) -> None:
        """Swap in a changed spec of the same parameterization, rebuilding only the parts it changed."""
        old = ln.spec
        views, terms, optim = build_parts(new)
        self._check_models(new)
        self._check_objective(ln.name, new)
        if new.optim.name != old.optim.name:
            ln.optimizer = optim.build(ln.image.parameters())
            ln.rival_optimizers = [optim.build(r.parameters()) for r in ln.rivals]  # type: ignore[attr-defined]
        elif new.optim.settings != old.optim.settings:
            for _, optimizer in ln.candidates():  # every start keeps its moments, as the lane does
                for g in optimizer.param_groups:
                    g["lr"], g["weight_decay"] = new.optim.settings.lr, new.optim.settings.weight_decay
        if new.param.settings != old.param.settings:
            ln.image.settings = new.param.settings
        ln.spec, ln.views, ln.terms, ln.optim = new, views, terms, optim
        self._match_starts(ln)

    def set_preset(self, lane: str, name: str) -> LaneSpec:
        """Switch a lane's preset, keeping its canvas (refit if the parameterization differs); the
        optimizer is rebuilt only if its kind or parameters change."""
        ln = self.lane(lane)
        old = ln.spec
        new = carry_objective(old, preset(name))  # the lane's own objective stays: units (alone)
        if new.param.name != old.param.name:
            self._convert(ln, new)
        else:
            self._apply_spec(ln, new)
            ln.image.settings = new.param.settings
        self.changes.append({"step": self.step_count, "lane": lane, "key": "preset", "old": old.preset, "new": name})
        return new

    def _convert(self, ln: Lane, new: LaneSpec) -> None:
        """Move a lane to another parameterization: the new one is fitted to the current picture."""
        canvas = ln.shown().detach()
        self._check_objective(ln.name, new)
        cls = lookup("param", new.param.name, "param")
        image = cls(new.param.settings, self.bundle.image_size, self.device, self.seed)  # type: ignore[call-arg]
        image.fit(canvas)  # type: ignore[attr-defined]
        views, terms, optim = build_parts(new)
        ln.image, ln.spec, ln.views, ln.terms, ln.optim = image, new, views, terms, optim  # type: ignore[assignment]
        ln.optimizer = optim.build(image.parameters())  # type: ignore[attr-defined]
        self._match_starts(ln)
        with torch.no_grad():
            ln.best = image.image().detach().clone()  # type: ignore[attr-defined]

    def set_units(self, lane: str, units: tuple) -> LaneSpec:
        """Replace a lane's unit terms (after its other terms); effective from the next step, recorded."""
        ln = self.lane(lane)
        old = describe_units(ln.spec)
        new = with_units(ln.spec, tuple(units))
        self._apply_spec(ln, new)
        if describe_units(new) != old:
            self.changes.append(
                {"step": self.step_count, "lane": lane, "key": "units", "old": old, "new": describe_units(new)}
            )
        return new

    # ----------------------------------------------------------------- the step
    def _similarity(self, feats: torch.Tensor, key: str = OWN) -> torch.Tensor:
        """Weighted prompt similarity per row: sum_i w_i cos_i / sum of positive weights."""
        text, weights = self._text_for(key)
        return (feats @ text.T) @ weights

    def _views(self, ln: Lane, x: torch.Tensor, n: int, gen: torch.Generator | None = None) -> torch.Tensor:
        """`n` views of `x` through the lane's transforms, drawn from `gen` (default: the lane's stream)."""
        y = x
        for t in ln.views:
            y = t(y, n, ln.gen if gen is None else gen)
        if y.shape[0] == 1:
            y = y.expand(n, -1, -1, -1)
        size = self.bundle.image_size
        if y.shape[-1] != size or y.shape[-2] != size:
            y = F.interpolate(y, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return y

    def _lane_pixels(self, ln: Lane, measure_raw: bool) -> tuple[list[torch.Tensor], torch.Tensor, int]:
        """The lane's images (its own; in a trial every start's), its batch of views (+ a clean copy
        of its own when raw is measured), and how many rows are views (shared out among starts)."""
        xs = [c.image() for c, _ in ln.candidates()] if ln.in_trial() else [ln.image.image()]
        x = xs[0]
        if ln.spec.views.augment:
            n = ln.spec.views.views
            each = max(1, n // len(xs))
            views = torch.cat([self._views(ln, c, each) for c in xs]) if len(xs) > 1 else self._views(ln, x, n)
            batch = torch.cat([views, x.detach()], dim=0) if measure_raw else views
            return xs, batch, views.shape[0]
        if len(xs) > 1:  # clean canvases: each start is one row, its own first
            return xs, torch.cat(xs), len(xs)
        return xs, x, 1

    def _model_input(self, batch: torch.Tensor, key: str, normalize: bool) -> torch.Tensor:
        bundle = self.models[key]
        if batch.shape[-1] != bundle.image_size:
            size = (bundle.image_size, bundle.image_size)
            batch = F.interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False)
        batch = batch.to(bundle.device)
        if normalize:
            batch = (batch - bundle.mean_t) / bundle.std_t
        return batch

    def step(self, n: int = 1) -> None:
        """Advance every lane by `n` steps, one batched forward/backward each."""
        for _ in range(n):
            for ln in self.lanes.values():
                if ln.rivals and ln.steps == ln.spec.views.trial:
                    self._choose_start(ln)
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
                    for _, optimizer in ln.candidates():
                        optimizer.zero_grad(set_to_none=True)
                    ln.gen.set_state(states[ln.name])
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                wide = max(self.lanes.values(), key=lambda ln: ln.n_views if ln.spec.views.augment else 0)
                if not wide.spec.views.augment or wide.spec.views.views <= 1:
                    raise EngineError(
                        "out of memory even at 1 view per lane; use a smaller model or --device cpu"
                    ) from None
                views = wide.spec.views.views // 2
                self.set_param(wide.name, "views", views)
                self.warnings.append(
                    f"out of memory at step {self.step_count + 1}: lane {wide.name} views halved to {views}"
                )

    def _forward(
        self, key: str, chunks: list[torch.Tensor], probe: object, eager: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One batched forward of every lane's rows on model `key`: per-row prompt similarity (zeros
        when the run has no prompt) and the unit-norm embeddings. `eager`: hooks are armed (no
        compiled graph)."""
        x = torch.cat(chunks)
        bundle = self.models[key]
        if bundle.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        encode = self._encode if key == OWN and probe is None and not eager else bundle.model.encode_image
        self.forwards += 1
        with torch.autocast(bundle.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            feats = encode(x)
        feats = F.normalize(feats.float(), dim=-1)
        if not self.terms:
            return feats.new_zeros(feats.shape[0]).to(self.device), feats
        return self._similarity(feats, key).to(self.device), feats

    def _tap(self, lanes: list[Lane], items: list[tuple[int, bool, torch.Tensor]]) -> tuple[Tap, dict[int, slice]]:
        """Hooks for the own model's forward: each unit lane's rows (its normalized chunk) of the blocks
        its unit terms name, and where those rows sit in the batch."""
        wants: dict[int, list] = {}
        rows: dict[int, slice] = {}
        start = 0
        for i, norm, chunk in items:
            n = chunk.shape[0]
            if norm and lanes[i].unit_terms():
                rows[i] = slice(start, start + n)
                for block in sorted({t.block for t in lanes[i].unit_terms() if t.block >= 0}):  # type: ignore[attr-defined]
                    wants.setdefault(block, []).append((i, start, start + n))
            start += n
        return Tap(self.bundle.model, wants, start), rows

    def _direction(self, settings: Any) -> torch.Tensor:
        """normalize(sum of the plus texts - sum of the minus texts) on the own model, encoded once."""
        key = (settings.plus, settings.minus)
        if key not in self._directions:
            enc = self.bundle.encode_text(list(key[0] + key[1]))
            d = enc[: len(key[0])].sum(0) - enc[len(key[0]) :].sum(0)
            if float(d.norm()) < 1e-6:
                raise EngineError(f"the direction {'/'.join(key[0] + key[1])!r} is zero on {self.bundle.name}")
            self._directions[key] = F.normalize(d, dim=0)
        return self._directions[key]

    def _unit_score(self, t: Term, acts: dict, i: int, feats: torch.Tensor) -> torch.Tensor:
        """Per-row score of unit term `t` of lane `i` from the captured activations or the embeddings."""
        if t.block < 0:  # type: ignore[attr-defined]
            return t.score(None, feats, self._direction(t.settings))  # type: ignore[attr-defined]
        return t.score(acts[(i, t.block)], None, None)  # type: ignore[attr-defined]

    def unit_scores(self, ln: Lane, pixels: torch.Tensor) -> torch.Tensor:
        """Per-row score of the lane's first unit term for pixels in [0,1] (its own forward: evaluations)."""
        t = ln.unit_terms()[0]
        x = self._model_input(pixels, OWN, True)
        wants = {t.block: [(0, 0, len(x))]} if t.block >= 0 else {}  # type: ignore[attr-defined]
        with Tap(self.bundle.model, wants, len(x)) as tap:
            feats = F.normalize(self.bundle.model.encode_image(x).float(), dim=-1)
        return self._unit_score(t, tap.acts, 0, feats).to(self.device)

    def _step_once(self) -> None:
        lanes = list(self.lanes.values())
        due = (self.step_count + 1) % self.raw_every == 0
        probe = self.probe if self.probe is not None and self.probe.due(self.step_count + 1) else None
        images, counts, starts = [], [], []
        # per model: the rows each (lane, normalize) pair sends; OWN first so the probe sees its batch
        plan: dict[str, list[tuple[int, bool, torch.Tensor]]] = {k: [] for k in self._model_keys()}
        for i, ln in enumerate(lanes):
            xs, batch, n_views = self._lane_pixels(ln, due or ln.last_raw is None)
            images.append(xs[0])
            starts.append(xs)
            counts.append((batch.shape[0], n_views))
            wanted: list[tuple[str, bool]] = []
            for t in ln.similarity_terms():
                for m in t.settings.models or (OWN,):
                    pair = (OWN if self.models[m] is self.bundle else m, t.settings.normalize)
                    if pair not in wanted:
                        wanted.append(pair)
            if (OWN, True) not in wanted and ln.unit_terms():  # units read the own model's normalized rows
                wanted.append((OWN, True))
            for key, norm in wanted:
                plan[key].append((i, norm, self._model_input(batch, key, norm)))
        if probe is not None:  # eager forward on probe steps: hooks do not mix with a compiled graph
            sizes = {i: 0 for i in range(len(lanes))}
            for i, _, rows in plan[OWN]:
                sizes[i] += rows.shape[0]
            probe.begin([ln.name for ln in lanes], [sizes[i] for i in range(len(lanes))])
            for x in images:
                if x.requires_grad and not x.is_leaf:
                    x.retain_grad()
        sims: dict[tuple[int, str, bool], torch.Tensor] = {}
        # unit terms: hooks on the blocks they name, armed for the own model's forward only
        tap, unit_rows = self._tap(lanes, plan[OWN]) if any(ln.unit_terms() for ln in lanes) else (None, {})
        own_feats = None
        for key, items in plan.items():
            if not items:
                continue
            chunks = [rows for _, _, rows in items]
            if key == OWN and tap is not None:
                with tap:
                    out, own_feats = self._forward(key, chunks, probe, eager=True)
            else:
                out, _ = self._forward(key, chunks, probe if key == OWN else None)
            start = 0
            for i, norm, rows in items:
                sims[(i, key, norm)] = out[start : start + rows.shape[0]]
                start += rows.shape[0]
        total = None
        records = []
        for i, (ln, (size, n_views)) in enumerate(zip(lanes, counts)):
            x = images[i]
            zero = x.new_zeros(())
            sim_loss = None
            raw = None
            for t in ln.similarity_terms():
                s = None
                for m in t.settings.models or (OWN,):
                    key = OWN if self.models[m] is self.bundle else m
                    part = sims[(i, key, t.settings.normalize)]
                    s = part if s is None else s + part
                assert s is not None
                term_loss = t.loss(s[:n_views])
                term_loss = term_loss if t.weight == 1.0 else t.weight * term_loss
                sim_loss = term_loss if sim_loss is None else sim_loss + term_loss
                if raw is None and (size > n_views or not ln.spec.views.augment):  # the last row is the clean canvas
                    raw = s[-1].detach() if ln.spec.views.augment else s[0].detach()
            for t in ln.unit_terms():
                assert tap is not None and own_feats is not None
                s = self._unit_score(t, tap.acts, i, own_feats[unit_rows[i]])
                term_loss = t.weight * t.loss(s[:n_views])  # type: ignore[attr-defined]
                sim_loss = term_loss if sim_loss is None else sim_loss + term_loss
                if raw is None and (size > n_views or not ln.spec.views.augment):  # a lane of units alone
                    raw = s[-1].detach() if ln.spec.views.augment else s[0].detach()
            assert sim_loss is not None
            if raw is not None:
                ln.last_raw = raw
            lane_loss = sim_loss
            cols = {"tv": zero, "memory": zero}
            for t in ln.terms:
                if t.similarity or t.unit or t.weight == 0:
                    continue
                v = t(x, ln.best)
                lane_loss = lane_loss + t.weight * v
                for other in starts[i][1:]:  # the other starts of a trial pay the same terms
                    lane_loss = lane_loss + t.weight * t(other, ln.best)
                if t.column:
                    cols[t.column] = v
            total = lane_loss if total is None else total + lane_loss
            records.append(
                (ln.last_raw, lane_loss.detach(), sim_loss.detach(), cols["tv"].detach(), cols["memory"].detach())
            )
        for ln in lanes:
            for _, optimizer in ln.candidates():
                optimizer.zero_grad(set_to_none=True)
        assert total is not None
        total.backward()
        if probe is not None:
            probe.end({ln.name: images[i] for i, ln in enumerate(lanes)}, self.step_count + 1)
        with torch.no_grad():
            for i, (ln, (raw, lane_loss, sim_loss, tv, mem)) in enumerate(zip(lanes, records)):
                better = sim_loss < ln.best_loss
                ln.best.copy_(torch.where(better, images[i].detach(), ln.best))
                ln.best_loss = torch.where(better, sim_loss, ln.best_loss)
                moving = ln.candidates() if len(starts[i]) > 1 else [(ln.image, ln.optimizer)]
                for image, optimizer in moving:
                    if ln.optim.scheduled():
                        done = int(optimizer.state.get(image.parameters()[0], {}).get("step", 0))
                        for g in optimizer.param_groups:
                            g["lr"] = ln.optim.lr_at(done)
                    optimizer.step()
                    image.after_step()
                ln.pending.append(torch.stack([raw, lane_loss, sim_loss, tv, mem, ln.best_loss]).float())

    def _choice_views(self, ln: Lane, x: torch.Tensor) -> torch.Tensor:
        """The same fixed rows for every start, so the choice compares canvases, not view draws, and
        leaves the lane's own random stream alone (a resumed session chooses the same start)."""
        if ln.spec.views.choose == "canvas":
            return x
        if ln.spec.views.choose == "views":
            gen = torch.Generator(device=ln.gen.device).manual_seed(CHOICE_SEED)
            return self._views(ln, x, len(self._held_out), gen)
        return augment.apply_affine(x, self._held_out)

    @torch.no_grad()
    def _choose_start(self, ln: Lane) -> None:
        """End a lane's trial: the start the lane's own objective scores best (on the rows `views.choose`
        names) becomes the lane's image (the others stay, idle); recorded as a change."""
        if any(c["lane"] == ln.name and c["key"] == "start" and c["step"] == ln.steps for c in self.changes):
            return  # chosen already (a step that failed after the choice is being retried)
        scores = [
            float(self.term_similarity(ln, self._choice_views(ln, c.image().detach())).mean())
            for c, _ in ln.candidates()
        ]
        k = max(range(len(scores)), key=lambda i: scores[i])
        if k:
            (ln.image, ln.rivals[k - 1]), (ln.optimizer, ln.rival_optimizers[k - 1]) = (
                (ln.rivals[k - 1], ln.image),
                (ln.rival_optimizers[k - 1], ln.optimizer),
            )
        ln.best = ln.image.image().detach().clone()
        ln.best_loss = torch.tensor(math.inf, device=self.device)
        self.changes.append(
            {"step": ln.steps, "lane": ln.name, "key": "start", "old": "", "new": f"{k} of {len(scores)}"}
        )

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
    def term_similarity(self, ln: Lane, pixels: torch.Tensor) -> torch.Tensor:
        """Per-row similarity of pixels in [0,1] as the lane's first similarity term measures it (the
        sum over its models for an ensemble); a lane of units alone: its first unit's score."""
        if not ln.similarity_terms():
            return self.unit_scores(ln, pixels)
        t = ln.similarity_terms()[0]
        total = None
        for m in t.settings.models or (OWN,):
            key = OWN if self.models[m] is self.bundle else m
            feats = self.models[key].model.encode_image(self._model_input(pixels, key, t.settings.normalize))
            s = self._similarity(F.normalize(feats.float(), dim=-1), key).to(self.device)
            total = s if total is None else total + s
        assert total is not None
        return total

    @torch.no_grad()
    def evaluate(self) -> dict[str, tuple[float, float]]:
        """Robust (16 fixed held-out views) and verified (8-bit PNG round trip) similarity per lane."""
        out = {}
        for ln in self.lanes.values():
            x = ln.image.image().detach()
            robust = float(self.term_similarity(ln, augment.apply_affine(x, self._held_out)).mean())
            verified = self.verified_similarity(ln.name)
            ln.evals = np.concatenate([ln.evals, np.array([[ln.steps, robust, verified]], np.float32)])
            out[ln.name] = (robust, verified)
        return out

    @torch.no_grad()
    def verified_similarity(self, lane: str) -> float:
        """Similarity of the lane's picture saved as an 8-bit PNG and read back through each model's
        own preprocessing (what anyone re-scoring the exported file would measure)."""
        ln = self.lane(lane)
        img = png_roundtrip(self.shown(lane))
        if not ln.similarity_terms():
            return float(self.unit_scores(ln, self.bundle.preprocess_uint8(img)).mean())
        t = ln.similarity_terms()[0]
        total = 0.0
        for m in t.settings.models or (OWN,):
            key = OWN if self.models[m] is self.bundle else m
            bundle = self.models[key]
            total += float(self._similarity(bundle.encode_pixels(bundle.preprocess_uint8(img)), key).mean())
        return total

    def shown(self, lane: str) -> np.ndarray:
        """The lane's canvas as shown: float32 (3,H,W) in [0,1]."""
        return self.lane(lane).shown()[0].cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def preview(self, lane: str, size: int) -> np.ndarray:
        """A small uint8 HWC copy for the screen, downsampled on the device before the copy."""
        x = self.lane(lane).shown()
        if x.shape[-1] > size:
            x = F.interpolate(x, size=(size, size), mode="area")
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

        def arr(t: torch.Tensor) -> np.ndarray:
            return t.detach()[0].cpu().numpy().astype(np.float32)

        out = {
            "image": self.shown(name),
            "best": arr(ln.best),
            "best_loss": np.array(float(ln.best_loss), np.float32),
            "rng": ln.gen.get_state().numpy().astype(np.uint8),
            "history": ln.history.astype(np.float32),
            "evals": ln.evals.astype(np.float32),
        }
        steps = []  # each start's own optimizer step: a start added by a preset switch is behind the lane
        for k, (image, optimizer) in enumerate(ln.candidates()):
            step = 0.0
            for tname, t in image.tensors.items():
                st = optimizer.state.get(t, {})
                name_k = start_prefix(k) + tname
                sfx = opt_suffix(name_k)
                out[name_k] = arr(t)
                for moment in ("exp_avg", "exp_avg_sq"):  # a start not stepped yet: zeros, each its own array
                    out[f"opt_{moment}{sfx}"] = arr(st[moment]) if moment in st else np.zeros(t.shape[1:], np.float32)
                if "step" in st:
                    step = float(st["step"])
            steps.append(step)
        out["opt_step"] = np.array(steps[0], np.float32)
        if ln.rivals:
            out["opt_steps"] = np.array(steps, np.float32)
        return out

    def load_lane_state(self, name: str, state: dict[str, np.ndarray]) -> None:
        """Restore a lane from `lane_state` arrays (already validated by the session loader)."""
        ln = self.lane(name)
        for k, (image, _) in enumerate(ln.candidates()):
            for tname, t in image.tensors.items():
                shape = tuple(t.shape[1:])
                sfx = opt_suffix(start_prefix(k) + tname)
                for key in (start_prefix(k) + tname, f"opt_exp_avg{sfx}", f"opt_exp_avg_sq{sfx}"):
                    if key not in state:
                        raise EngineError(f"lane {name}: {key}.npy is missing")
                    if tuple(state[key].shape) != shape:
                        raise EngineError(f"lane {name}: {key} has shape {state[key].shape}, the lane needs {shape}")
        if tuple(state["best"].shape) != tuple(ln.best.shape[1:]):
            raise EngineError(
                f"lane {name}: best has shape {state['best'].shape}, the model needs {tuple(ln.best.shape[1:])}"
            )
        with torch.no_grad():
            ln.best.copy_(torch.from_numpy(state["best"])[None].to(self.device))
        ln.best_loss = torch.tensor(float(state["best_loss"]), device=self.device)
        step = float(state["opt_step"])
        steps = [float(x) for x in state.get("opt_steps", ())]
        if len(steps) != len(ln.rivals) + 1:  # saved before each start's step was: the others stepped with
            steps = [step, *[min(step, float(ln.spec.views.trial))] * len(ln.rivals)]  # the lane until the choice
        built = [self._restored(image, k, state, steps[k], ln) for k, (image, _) in enumerate(ln.candidates())]
        ln.optimizer, ln.rival_optimizers = built[0], built[1:]
        self._load_records(ln, state)

    def _restored(
        self, image: ImageParam, k: int, state: dict[str, np.ndarray], step: float, ln: Lane
    ) -> torch.optim.Optimizer:
        """Start `k`'s tensors from saved arrays, and a fresh optimizer holding their saved moments."""
        with torch.no_grad():
            for tname, t in image.tensors.items():
                t.copy_(torch.from_numpy(state[start_prefix(k) + tname])[None].to(self.device))
        optimizer = ln.optim.build(image.parameters())  # type: ignore[attr-defined]
        if step > 0:
            for tname, t in image.tensors.items():
                sfx = opt_suffix(start_prefix(k) + tname)
                optimizer.state[t] = {  # copies: Adam updates its moments in place, never the caller's arrays
                    "step": torch.tensor(step, dtype=torch.float32),
                    "exp_avg": torch.tensor(state[f"opt_exp_avg{sfx}"], device=self.device)[None],
                    "exp_avg_sq": torch.tensor(state[f"opt_exp_avg_sq{sfx}"], device=self.device)[None],
                }
        return optimizer

    def start_from(self, canvas: np.ndarray) -> dict[str, float]:
        """Start every lane from a picture instead of noise (`--init`): each parameterization fits
        itself to `canvas` (3,S,S) in [0,1] at the model's input size, and the best-so-far is that
        picture. Before the first step only. Returns each lane's fit error (max abs)."""
        if self.step_count:
            raise EngineError("a run starts from a picture only before its first step")
        x = torch.from_numpy(np.ascontiguousarray(canvas, dtype=np.float32))[None].to(self.device)
        errors = {}
        for name, ln in self.lanes.items():
            errors[name] = ln.image.fit(x)
            for rival in ln.rivals:  # a picture to start from is every start's
                rival.fit(x)
            with torch.no_grad():
                ln.best = ln.image.image().detach().clone()
        return errors

    def refit_lane(self, name: str, state: dict[str, np.ndarray]) -> None:
        """Continue a lane made on another model: its picture (resized to this model's input) is fitted
        by the lane's parameterization; history, evaluations and view generator carry over; the
        optimizer and the best-so-far start afresh."""
        ln = self.lane(name)
        canvas = state["param"] if "param" in state and state["param"].ndim == 3 else state["image"]
        x = torch.from_numpy(np.ascontiguousarray(canvas))[None].float()
        size = self.bundle.image_size
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        ln.image.fit(x.to(self.device))
        with torch.no_grad():
            ln.best = ln.image.image().detach().clone()
        ln.best_loss = torch.tensor(math.inf, device=self.device)
        ln.optimizer = ln.optim.build(ln.image.parameters())
        self._load_records(ln, state)

    def _load_records(self, ln: Lane, state: dict[str, np.ndarray]) -> None:
        """The view generator, history and evaluations of a saved lane (shared by load and refit)."""
        try:
            ln.gen.set_state(torch.from_numpy(state["rng"]))
        except RuntimeError:
            raise ParamError(f"lane {ln.name}: the saved RNG state is not a valid generator state") from None
        ln.history = state["history"].astype(np.float32)
        ln.evals = state["evals"].astype(np.float32)
        ln.pending.clear()
        # The carried clean-canvas similarity (raw_every > 1) continues from the last recorded one.
        ln.last_raw = torch.tensor(float(ln.history[-1, 0]), device=self.device) if len(ln.history) else None


def _plain(v: object) -> object:
    """A setting as a TOML-friendly change-history value (tuples of names become 'a+b')."""
    return "+".join(v) if isinstance(v, tuple) else v
