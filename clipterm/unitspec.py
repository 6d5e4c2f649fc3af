"""The --unit syntax and a lane's objective as data (torch-free: parsed before any model loads).

One unit, as `--unit`, `clipterm info`, the change history and the app's objective field write it:

    BLOCK:CHANNEL[:WEIGHT]            channel: mean over positions        --unit 2:5   --unit 2:5:0.5
    BLOCK:CHANNEL@TOKEN[:WEIGHT]      neuron of a ViT block (0 = class)   --unit 2:5@3
    BLOCK:CHANNEL@Y,X[:WEIGHT]        neuron of a ResNet stage            --unit 1:7@2,3
    BLOCK:FILE.npy[:WEIGHT]           direction in the block's space      --unit 2:dir.npy  (1-D floats)
    text:A[ - B ...][:WEIGHT]         direction in the embedding space    --unit 'text:a smiling face - a face'

Blocks are numbered from 0 as `clipterm units` and the Layers pane show them. A negative weight
minimizes the unit. In a direction's text, ' - ' and ' + ' (with spaces) join texts, so 't-shirt'
stays one word; a text that ends in ':NUMBER' needs an explicit weight after it. Several units in
one field (the app) are joined by ';'.
"""

from __future__ import annotations

import io
import re
from dataclasses import replace
from pathlib import Path

from clipterm.errors import ClipTermError
from clipterm.lanespec import LaneSpec, PartSpec
from clipterm.parts.base import ParamError, lookup, settings_from
from clipterm.text import first_control, printable

_NUM = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
_WEIGHT = re.compile(rf"^(?P<body>.*?):\s*(?P<w>{_NUM})\s*$", re.S)
_CHANNEL = re.compile(rf"^(?P<block>\d+):(?P<ch>\d+)(@(?P<a>\d+)(,(?P<b>\d+))?)?(:\s*(?P<w>{_NUM}))?$")
_BLOCK_FILE = re.compile(rf"^(?P<block>\d+):(?P<file>.+\.npy)(:\s*(?P<w>{_NUM}))?$", re.S)
MAX_VECTOR_BYTES = 1 << 20
SYNTAX = "BLOCK:CHANNEL[:WEIGHT], BLOCK:CHANNEL@TOKEN, BLOCK:CHANNEL@Y,X, BLOCK:FILE.npy or text:A - B[:WEIGHT]"


class UnitError(ClipTermError):
    """A --unit (or objective field) that does not say which unit to paint."""


def _shown(text: str) -> str:
    return printable(text if len(text) <= 80 else text[:80] + "…")


def parse_unit(text: str) -> PartSpec:
    """One unit in the syntax above -> its term part (every field checked); UnitError says why."""
    raw = text.strip()
    if not raw:
        raise UnitError(f"--unit is empty: expected {SYNTAX}")
    if raw.startswith("text:"):
        m = _WEIGHT.match(raw[5:])
        body, weight = (m.group("body"), m.group("w")) if m else (raw[5:], None)
        return _part("direction", {"weight": _weight(weight, text), **_texts(body, text)}, text)
    c = _CHANNEL.match(raw)
    if c:
        fields = {"weight": _weight(c.group("w"), text), "block": int(c.group("block")), "channel": int(c.group("ch"))}
        if c.group("a") is None:
            return _part("channel", fields, text)
        if c.group("b") is None:
            return _part("neuron", {**fields, "token": int(c.group("a"))}, text)
        return _part("neuron", {**fields, "y": int(c.group("a")), "x": int(c.group("b"))}, text)
    f = _BLOCK_FILE.match(raw)
    if f:
        fields = {"weight": _weight(f.group("w"), text), "block": int(f.group("block"))}
        return _part("direction", {**fields, "vector": read_vector(Path(f.group("file")))}, text)
    raise UnitError(f"--unit {_shown(text)!r}: expected {SYNTAX}")


def _weight(value: str | None, text: str) -> float:
    """The unit's weight (1 when none is written): non-zero, within [-100, 100]."""
    weight = 1.0 if value is None else float(value)
    if weight == 0:
        raise UnitError(f"--unit {_shown(text)!r}: weight 0 does nothing")
    if abs(weight) > 100:
        raise UnitError(f"--unit {_shown(text)!r}: keep the weight within [-100, 100]")
    return weight


def _texts(body: str, text: str) -> dict[str, list[str]]:
    """'A - B + C' -> plus [A, C], minus [B]; every text non-empty plain text."""
    bits = re.split(r"\s+([+-])\s+", " " + body.strip() + " ")
    plus: list[str] = []
    minus: list[str] = []
    signs = ["+", *bits[1::2]]
    for sign, words in zip(signs, bits[0::2]):
        words = words.strip()
        if not words:
            raise UnitError(f"--unit {_shown(text)!r}: a direction's texts must not be empty (text:A - B)")
        if first_control(words) is not None:
            raise UnitError(f"--unit {_shown(text)!r}: a direction's text holds a control character")
        if len(words) > 200 or "+" in words or ";" in words:
            raise UnitError(f"--unit {_shown(text)!r}: each text at most 200 characters, without '+' or ';'")
        (plus if sign == "+" else minus).append(words)
    if not plus:
        raise UnitError(f"--unit {_shown(text)!r}: a direction needs a text to move toward")
    return {"plus": plus, "minus": minus}


def _part(kind: str, fields: dict, text: str) -> PartSpec:
    cls = lookup("term", kind, "unit")
    try:
        return PartSpec(kind, settings_from(cls.Settings, fields, kind))
    except ParamError as e:
        raise UnitError(f"--unit {_shown(text)!r}: {e}") from None


def read_vector(path: Path) -> list[float]:
    """A direction from a 1-D float .npy file (read without pickle, at most 1 MiB)."""
    import numpy as np

    from clipterm.images import regular_input

    try:
        p = regular_input(path, "direction file")
        with open(p, "rb") as f:
            data = f.read(MAX_VECTOR_BYTES + 1)
    except OSError as e:
        raise UnitError(f"{_shown(str(path))}: cannot read ({e.strerror})") from None
    except ClipTermError as e:
        raise UnitError(str(e)) from None
    if len(data) > MAX_VECTOR_BYTES:
        raise UnitError(f"{_shown(str(path))}: a direction file is at most {MAX_VECTOR_BYTES} bytes")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception:  # numpy raises many types on malformed files
        raise UnitError(f"{_shown(str(path))}: not a .npy file (numpy, no pickle)") from None
    if arr.ndim != 1 or arr.dtype.kind not in "fiu" or not len(arr) or not np.isfinite(arr).all():
        raise UnitError(
            f"{_shown(str(path))}: a direction is a 1-D array of finite numbers, got {arr.dtype} {arr.shape}"
        )
    return [float(v) for v in arr]


def parse_units(text: str) -> tuple[PartSpec, ...]:
    """Several units joined by ';' (the app's objective field); '' is none."""
    return tuple(parse_unit(u) for u in text.split(";") if u.strip())


def is_unit(part: PartSpec) -> bool:
    return bool(getattr(lookup("term", part.name, "terms"), "unit", False))


def units_of(spec: LaneSpec) -> tuple[PartSpec, ...]:
    """A lane's unit terms, in order."""
    return tuple(p for p in spec.terms if is_unit(p))


def label(part: PartSpec) -> str:
    """One unit term in the --unit syntax."""
    return lookup("term", part.name, "terms").label(part.settings)  # type: ignore[attr-defined]


def describe_units(spec: LaneSpec) -> str:
    """A lane's units joined by '; ' ('' when it has none): the app's objective field, changes."""
    return "; ".join(label(p) for p in units_of(spec))


def with_units(spec: LaneSpec, units: tuple[PartSpec, ...], prompt: bool = True) -> LaneSpec:
    """`spec` with its unit terms replaced by `units` (after the other terms); `prompt=False` also
    drops its prompt terms (an objective of units alone). Refused when no objective would be left."""
    keep = [p for p in spec.terms if not is_unit(p) and (prompt or not lookup("term", p.name, "terms").similarity)]
    terms = (*keep, *units)
    if not any(lookup("term", p.name, "terms").similarity or is_unit(p) for p in terms):
        raise UnitError("the objective would be empty: give a prompt or a unit")
    return replace(spec, terms=terms)


def has_prompt_term(spec: LaneSpec) -> bool:
    return bool(spec.similarity_terms())


def carry_objective(old: LaneSpec, new: LaneSpec) -> LaneSpec:
    """`new` (another preset for a lane) keeping the lane's own objective: its units, and no prompt
    term if it had none. A lane of prompt terms only takes `new` as it is."""
    if units_of(old) or not has_prompt_term(old):
        return with_units(new, units_of(old), prompt=has_prompt_term(old))
    return new
