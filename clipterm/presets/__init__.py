"""Presets are data: TOML lane specs shipped here and read from ~/.config/clipterm/presets/ too.

A preset file NAME.toml holds `about`, `source` (where the recipe comes from) and a lane table
(param, views, transforms, terms, optim; see lanespec). A user's file with a shipped name replaces
the shipped one. Format-1 sessions stored flat lane parameters; `from_legacy` reads those.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from clipterm.lanespec import LaneSpec, from_table
from clipterm.parts.base import ParamError

__all__ = ["ParamError", "Preset", "available", "from_legacy", "preset", "user_dir"]
SHIPPED = Path(__file__).parent
MAX_PRESET_BYTES = 64 << 10


@dataclass(frozen=True)
class Preset:
    name: str
    about: str
    source: str
    origin: str  # "shipped" or the user file's path
    spec: LaneSpec


def user_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "clipterm" / "presets"


def _read(path: Path, origin: str) -> Preset:
    name = path.stem
    where = f"preset {name} ({path})"
    try:
        if path.stat().st_size > MAX_PRESET_BYTES:
            raise ParamError(f"{where}: larger than {MAX_PRESET_BYTES} bytes")
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ParamError(f"{where}: cannot read it ({' '.join(str(e).split())[:120]})") from None
    about, source = doc.pop("about", ""), doc.pop("source", "")
    if not isinstance(about, str) or not isinstance(source, str):
        raise ParamError(f"{where}: 'about' and 'source' must be strings")
    spec = from_table({"preset": name, **doc}, where)
    return Preset(name, about, source, origin, spec)


@lru_cache(maxsize=4)
def _load(user: str, stamp: tuple) -> tuple[dict[str, Preset], tuple[str, ...]]:
    """Shipped presets, then the user's over them; a broken user file is skipped with a warning."""
    out = {p.stem: _read(p, "shipped") for p in sorted(SHIPPED.glob("*.toml"))}
    warnings = []
    folder = Path(user)
    if folder.is_dir():
        for path in sorted(folder.glob("*.toml")):
            try:
                out[path.stem] = _read(path, str(path))
            except ParamError as e:
                warnings.append(str(e))
    return dict(sorted(out.items())), tuple(warnings)  # by name ("pyramid" before "pyramid-shift")


def _loaded() -> tuple[dict[str, Preset], tuple[str, ...]]:
    """The presets, read again when the user's folder or a file in it changed (else cached)."""
    folder = user_dir()
    try:
        stamp = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.glob("*.toml")))
    except OSError:
        stamp = ()
    return _load(str(folder), stamp)


def available() -> dict[str, Preset]:
    return _loaded()[0]


def warnings() -> tuple[str, ...]:
    """Why user preset files were skipped (for the CLI and the app's log)."""
    return _loaded()[1]


def preset(name: str) -> LaneSpec:
    table = available()
    if name not in table:
        raise ParamError(f"unknown preset {name!r}: choose from {', '.join(table)}")
    return table[name].spec


LEGACY_KEYS = (
    "optimizer", "lr", "weight_decay", "init_mean", "init_std", "clamp", "normalize", "loss", "temperature",
    "tv_weight", "tv_kind", "memory_weight", "augment", "views", "degrees", "translate", "scale_min",
    "scale_max", "flip_p", "display",
)  # fmt: skip


def from_legacy(data: dict, where: str = "lane") -> LaneSpec:
    """A format-1 lane table (flat seed parameters on top of a seed preset) as a LaneSpec."""
    if not isinstance(data, dict) or not isinstance(data.get("preset"), str):
        raise ParamError(f"{where}: 'preset' must be a string naming a preset")
    unknown = sorted(set(data) - set(LEGACY_KEYS) - {"preset"})
    if unknown:
        raise ParamError(f"{where}: unknown lane parameter(s): {', '.join(unknown)}")
    spec = preset(data["preset"])
    if "optimizer" in data:
        spec = spec.with_value("optimizer", data["optimizer"])
    for key in LEGACY_KEYS[1:]:
        if key in data:
            try:
                spec = spec.with_value(key, data[key])
            except ParamError as e:
                raise ParamError(f"{where}: {e}") from None
    return spec
