"""What every lane part shares: a registry by kind and name, and settings with declared ranges.

A part (a parameterization, a view transform, an objective term, an optimizer) is a class with a
frozen `Settings` dataclass. Each settings field declares its type and range (or choices) with
`setting()`, so the CLI, the app's Parameters table and session loading validate one way. Adding
a part is one new module in `clipterm/parts/` that defines a class and decorates it `@register`.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields, replace
from dataclasses import field as dc_field
from typing import Any, ClassVar

from clipterm.errors import ClipTermError

KINDS = ("param", "transform", "term", "optim")
MAX_FLOATS = 8192  # longest "floats" setting: a direction in the widest block (ViT-L's 1024, RN50's 2048 channels)


class ParamError(ClipTermError):
    """A part, field or value that a lane cannot take (unknown name, out of range, wrong type)."""


@dataclass(frozen=True)
class Rule:
    """How one settings field is checked: a number range, a set of choices, on/off, or a name list."""

    kind: type | str  # float, int, bool, str (choices), "names" (a tuple of short names), "floats" (a vector)
    low: float = -math.inf
    high: float = math.inf
    choices: tuple[str, ...] = ()
    live: bool = True  # may change while a run is live (the app's Parameters table)
    key: str = ""  # the short key it answers to in --lane and the app ("" = its field name)
    doc: str = ""


def setting(default: Any, kind: type | str, low: float = -math.inf, high: float = math.inf, **kw: Any) -> Any:
    """A dataclass field carrying its Rule (see Rule for the keywords)."""
    if isinstance(default, list):
        default = tuple(default)
    return dc_field(default=default, metadata={"rule": Rule(kind, low, high, **kw)})


def rules(settings_cls: type) -> dict[str, Rule]:
    """field name -> Rule of a Settings dataclass."""
    return {f.name: f.metadata["rule"] for f in fields(settings_cls) if "rule" in f.metadata}


def parse_setting(name: str, rule: Rule, value: object) -> object:
    """Convert and check one value against its rule; ParamError says why in one line."""
    kind = rule.kind
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is str:
            if not isinstance(value, str) or value not in rule.choices:
                raise ParamError(f"{name} must be one of {', '.join(rule.choices)}, got {value!r}")
            return value
        if kind == "floats":
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or len(items) > MAX_FLOATS:
                raise ValueError
            vec = tuple(float(x) for x in items if not isinstance(x, bool))
            if len(vec) != len(items) or not all(math.isfinite(x) for x in vec):
                raise ValueError
            return vec
        if kind == "names":
            items = value.split("+") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not all(isinstance(x, str) for x in items):
                raise ValueError
            items = tuple(x.strip() for x in items if x.strip())
            if len(items) > 8 or any(len(x) > 200 or not x.isprintable() for x in items):
                raise ParamError(f"{name} must be at most 8 printable names joined by '+', got {value!r}")
            return items
        if isinstance(value, bool):
            raise ValueError
        if kind is int:
            f = float(value)  # type: ignore[arg-type]
            if f != int(f):
                raise ValueError
            v: float | int = int(f)
        else:
            v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        what = {
            bool: "on/off",
            int: "a whole number",
            float: "a number",
            "floats": f"at most {MAX_FLOATS} finite numbers",
        }.get(
            kind,  # type: ignore[arg-type]
            "a list of names",
        )
        raise ParamError(f"{name} must be {what}, got {value!r}") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise ParamError(f"{name} must be finite, got {value!r}")
    if not rule.low <= v <= rule.high:
        raise ParamError(f"{name} must be within [{rule.low:g}, {rule.high:g}], got {v:g}")
    return v


def settings_from(settings_cls: type, data: dict, where: str) -> Any:
    """Build a Settings instance from a TOML/CLI table, every field checked; unknown keys refused."""
    known = rules(settings_cls)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ParamError(f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(known) or 'none'})")
    values = {k: parse_setting(f"{where}.{k}", known[k], v) for k, v in data.items()}
    out = settings_cls(**values)
    check = getattr(out, "check", None)
    if check is not None:
        check(where)
    return out


def settings_dict(settings: Any) -> dict:
    """A Settings instance as plain TOML values (tuples become lists)."""
    return {f.name: (list(v) if isinstance(v := getattr(settings, f.name), tuple) else v) for f in fields(settings)}


def with_setting(settings: Any, name: str, value: object, where: str) -> Any:
    """A copy of `settings` with one checked change."""
    rule = rules(type(settings)).get(name)
    if rule is None:
        raise ParamError(f"{where}: unknown field {name!r}")
    out = replace(settings, **{name: parse_setting(name, rule, value)})
    check = getattr(out, "check", None)
    if check is not None:
        check(where)
    return out


def defaults(settings_cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in fields(settings_cls) if f.default is not MISSING}


@dataclass(frozen=True)
class Nothing:
    """Settings of a part that has none."""


class Part:
    """Base of every part: `kind` and `name` are its registry address, `Settings` its fields."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    Settings: ClassVar[type] = Nothing
    about: ClassVar[str] = ""


REGISTRY: dict[str, dict[str, type[Part]]] = {k: {} for k in KINDS}


def register(cls: type[Part]) -> type[Part]:
    """Class decorator: make a part available by (kind, name) to lane specs, presets and sessions."""
    if cls.kind not in REGISTRY or not cls.name:
        raise TypeError(f"{cls.__name__}: a part needs a kind in {KINDS} and a name")
    REGISTRY[cls.kind][cls.name] = cls
    return cls


def lookup(kind: str, name: object, where: str) -> type[Part]:
    """The registered part class, or a one-line ParamError naming the choices."""
    from clipterm.parts import load_all

    load_all()
    table = REGISTRY[kind]
    if not isinstance(name, str) or name not in table:
        raise ParamError(f"{where}: unknown {kind} {name!r} (choose from {', '.join(sorted(table))})")
    return table[name]
