"""A lane as data: which parameterization, views, objective terms and optimizer it composes.

`LaneSpec` is what presets, the CLI's `--lane`, the app's Parameters table and session files all
describe. It is pure data (frozen dataclasses of part settings); the engine turns it into tensors.
Every value is checked against its part's declared rule, and every editable value has a short key
(`lr`, `views`, `tv_weight`, `degrees`...) and a dotted one (`affine.degrees`, `optim.lr`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from clipterm.parts.base import (
    ParamError,
    Rule,
    lookup,
    parse_setting,
    rules,
    setting,
    settings_dict,
    settings_from,
    with_setting,
)

LANE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,15}$")
MAX_LANES = 8
MAX_PARTS = 16
FIRST = ("lr", "weight_decay", "views")  # the most edited settings lead the app's Parameters table
# A lane's metric arrays (engine writes them, sessions store them): here, not in the engine, so the
# session format and `clipterm info` know them without importing torch.
HISTORY_COLUMNS = ("raw_sim", "loss", "sim_loss", "tv", "memory", "best_sim_loss")
EVAL_COLUMNS = ("step", "robust_sim", "verified_sim")


def opt_suffix(tensor: str) -> str:
    """Session file suffix of a tensor's optimizer moments ('' for pixel's 'param', as in format 1)."""
    return "" if tensor == "param" else f"_{tensor}"


def start_prefix(k: int) -> str:
    """Array-name prefix of a lane's start `k` (0: the lane's own tensors, no prefix)."""
    return f"start{k}_" if k else ""


def check_lane_name(name: object) -> str:
    """A lane name is a short lowercase word (it names the lane's directory, lane-NAME)."""
    if not isinstance(name, str) or not LANE_NAME.match(name):
        shown = name if isinstance(name, str) and name.isprintable() and len(name) < 40 else "…"
        raise ParamError(f"lane name {shown!r}: use 1-16 of a-z, 0-9 and _, starting with a letter")
    return name


@dataclass(frozen=True)
class ViewSettings:
    augment: bool = setting(False, bool, doc="score random views (on) or the clean canvas (off)")
    views: int = setting(1, int, 1, 256, doc="views per step")
    starts: int = setting(1, int, 1, 16, live=False, doc="starts sharing the views until `trial`; the best goes on")
    trial: int = setting(0, int, 0, 100_000, live=False, doc="steps before the best of several starts is kept")
    choose: str = setting(
        "held-out",
        str,
        choices=("held-out", "views", "canvas"),
        live=False,
        doc="what picks the start: the 16 held-out views, 16 fixed draws of the lane's views, or the canvas",
    )


@dataclass(frozen=True)
class PartSpec:
    """One part: its registered name and its settings."""

    name: str
    settings: Any


@dataclass(frozen=True)
class LaneSpec:
    preset: str
    param: PartSpec
    views: ViewSettings
    transforms: tuple[PartSpec, ...]
    terms: tuple[PartSpec, ...]
    optim: PartSpec

    # ------------------------------------------------------------------ addressing fields
    def slots(self) -> list[tuple[str, Any]]:
        """(part label, settings) in display order; labels are what dotted keys start with."""
        out: list[tuple[str, Any]] = [("param", self.param.settings), ("views", self.views)]
        seen: dict[str, int] = {}
        for group in (self.transforms, self.terms):
            for p in group:
                seen[p.name] = seen.get(p.name, 0) + 1
                out.append((p.name if seen[p.name] == 1 else f"{p.name}{seen[p.name]}", p.settings))
        out.append(("optim", self.optim.settings))
        return out

    def keys(self) -> dict[str, tuple[str, str, Rule]]:
        """Every key a user may set -> (part label, field, rule): short keys where unambiguous, dotted always."""
        short: dict[str, list[tuple[str, str, Rule]]] = {}
        out: dict[str, tuple[str, str, Rule]] = {}
        for label, settings in self.slots():
            for fname, rule in rules(type(settings)).items():
                out[f"{label}.{fname}"] = (label, fname, rule)
                short.setdefault(rule.key or fname, []).append((label, fname, rule))
        for key, hits in short.items():
            if len(hits) == 1 and key not in out:
                out[key] = hits[0]
        return out

    def value(self, key: str) -> Any:
        label, fname, _ = self.resolve(key)
        return getattr(dict(self.slots())[label], fname)

    def resolve(self, key: str) -> tuple[str, str, Rule]:
        keys = self.keys()
        if key not in keys:
            hint = ", ".join(k for k in keys if "." not in k)
            raise ParamError(f"{key!r} is not a setting of this lane (settings: {hint})")
        return keys[key]

    def with_value(self, key: str, value: object) -> LaneSpec:
        """A copy with one checked change; `param=NAME` / `optimizer=NAME` swap a part for another."""
        if key == "param":
            cls = lookup("param", value, "param")
            return replace(self, param=PartSpec(cls.name, cls.Settings()))
        if key == "optimizer":
            cls = lookup("optim", value, "optimizer")
            return replace(self, optim=PartSpec(cls.name, self.optim.settings))
        if key == "transforms":
            names = parse_setting("transforms", Rule("names"), value)
            parts = tuple(PartSpec(n, lookup("transform", n, "transforms").Settings()) for n in names)  # type: ignore[union-attr]
            return replace(self, transforms=parts)
        label, fname, _ = self.resolve(key)
        return self._replace_slot(label, lambda s: with_setting(s, fname, value, label))

    def _replace_slot(self, label: str, change: Any) -> LaneSpec:
        if label == "param":
            return replace(self, param=replace(self.param, settings=change(self.param.settings)))
        if label == "views":
            return replace(self, views=change(self.views))
        if label == "optim":
            return replace(self, optim=replace(self.optim, settings=change(self.optim.settings)))
        labels = [lb for lb, _ in self.slots()][2:-1]
        i = labels.index(label)
        n_t = len(self.transforms)
        if i < n_t:
            parts = list(self.transforms)
            parts[i] = replace(parts[i], settings=change(parts[i].settings))
            return replace(self, transforms=tuple(parts))
        parts = list(self.terms)
        parts[i - n_t] = replace(parts[i - n_t], settings=change(parts[i - n_t].settings))
        return replace(self, terms=tuple(parts))

    def live_keys(self) -> list[tuple[str, str, Rule]]:
        """(key, part label, rule) of the values that may change while the lane runs, in display order.

        The key is the short one where it names this field alone, else the dotted one."""
        keys = self.keys()
        out: list[tuple[str, str, Rule]] = []
        for label, settings in self.slots():
            for fname, rule in rules(type(settings)).items():
                short = rule.key or fname
                if rule.live:
                    hit = keys.get(short)
                    out.append((short if hit and hit[:2] == (label, fname) else f"{label}.{fname}", label, rule))
        return sorted(out, key=lambda row: FIRST.index(row[0]) if row[0] in FIRST else len(FIRST))

    def describe(self) -> str:
        """One line: the parts, e.g. 'pixel · affine x4 · prompt+tv · adam'."""
        views = "+".join(p.name for p in self.transforms) if self.views.augment and self.transforms else "clean"
        if self.views.augment:
            views += f" x{self.views.views}"
        if self.views.starts > 1:
            views += f" · best of {self.views.starts} starts at step {self.views.trial}"
            if self.views.choose != "held-out":
                views += f" by its {self.views.choose}"
        terms = "+".join(_term_label(p) for p in self.terms)
        return f"{self.param.name} · {views} · {terms} · {self.optim.name}"

    # ------------------------------------------------------------------ tables (TOML, presets, sessions)
    def to_table(self) -> dict:
        return {
            "preset": self.preset,
            "param": {"kind": self.param.name, **settings_dict(self.param.settings)},
            "views": settings_dict(self.views),
            "transforms": [{"kind": p.name, **settings_dict(p.settings)} for p in self.transforms],
            "terms": [{"kind": p.name, **settings_dict(p.settings)} for p in self.terms],
            "optim": {"kind": self.optim.name, **settings_dict(self.optim.settings)},
        }

    def similarity_terms(self) -> list[PartSpec]:
        return [p for p in self.terms if lookup("term", p.name, "terms").similarity]

    def models(self) -> list[str]:
        """Model names the lane's similarity terms name (besides the run's own model, '')."""
        out: list[str] = []
        for p in self.similarity_terms():
            for m in p.settings.models:
                if m not in out:
                    out.append(m)
        return out

    def arrays(self, size: int) -> dict[str, tuple[int, ...]]:
        """The parameterization's tensors (name -> shape) for a canvas of `size`, and those of every
        other start (`start1_code`...), kept after the choice so a session always holds the same files."""
        own = lookup("param", self.param.name, "param").shapes(self.param.settings, size)  # type: ignore[attr-defined]
        out = dict(own)
        for k in range(1, self.views.starts):
            out.update({f"{start_prefix(k)}{name}": shape for name, shape in own.items()})
        return out


def _term_label(part: PartSpec) -> str:
    """A term's name in a lane's one-line description; a unit says which ('channel 2:5')."""
    label = getattr(lookup("term", part.name, "terms"), "label", None)
    return f"{part.name} {label(part.settings)}" if label is not None else part.name


def _part(kind: str, table: object, where: str) -> PartSpec:
    if not isinstance(table, dict):
        raise ParamError(f"{where} must be a table with a 'kind'")
    data = dict(table)
    cls = lookup(kind, data.pop("kind", None), where)
    return PartSpec(cls.name, settings_from(cls.Settings, data, f"{where}.{cls.name}"))


def _part_list(kind: str, items: object, where: str) -> tuple[PartSpec, ...]:
    if not isinstance(items, list) or len(items) > MAX_PARTS:
        raise ParamError(f"{where} must be a list of at most {MAX_PARTS} tables")
    return tuple(_part(kind, t, f"{where}[{i}]") for i, t in enumerate(items))


def from_table(table: object, where: str = "lane") -> LaneSpec:
    """A LaneSpec from its nested table (a preset file, a format-2 session); every value checked."""
    if not isinstance(table, dict):
        raise ParamError(f"{where} must be a table")
    data = dict(table)
    required = ("preset", "param", "views", "transforms", "terms", "optim")
    missing = [k for k in required if k not in data]
    if missing:
        raise ParamError(f"{where}: missing {missing[0]!r}")
    unknown = sorted(set(data) - set(required))
    if unknown:
        raise ParamError(f"{where}: unknown key {unknown[0]!r}")
    if not isinstance(data["preset"], str) or not data["preset"].isprintable() or len(data["preset"]) > 64:
        raise ParamError(f"{where}: 'preset' must be a short name")
    if not isinstance(data["views"], dict):
        raise ParamError(f"{where}.views must be a table")
    spec = LaneSpec(
        preset=data["preset"],
        param=_part("param", data["param"], f"{where}.param"),
        views=settings_from(ViewSettings, data["views"], f"{where}.views"),
        transforms=_part_list("transform", data["transforms"], f"{where}.transforms"),
        terms=_part_list("term", data["terms"], f"{where}.terms"),
        optim=_part("optim", data["optim"], f"{where}.optim"),
    )
    if not any(
        lookup("term", p.name, "terms").similarity or getattr(lookup("term", p.name, "terms"), "unit", False)
        for p in spec.terms
    ):
        raise ParamError(
            f"{where}: the objective needs a similarity term (prompt) or a unit (channel, neuron, direction)"
        )
    return spec


def apply_pairs(spec: LaneSpec, pairs: list[tuple[str, str]]) -> LaneSpec:
    """key=value edits in order (part swaps first, so `param=fourier,decay=1.5` works in any order)."""
    swaps = [kv for kv in pairs if kv[0] in ("param", "optimizer", "transforms")]
    for key, value in swaps + [kv for kv in pairs if kv not in swaps]:
        spec = spec.with_value(key, value)
    return spec
