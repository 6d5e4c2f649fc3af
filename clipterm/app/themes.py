"""Themes as TOML files, loaded into Textual `Theme`s.

Themes ship inside the package (clipterm/app/themes/, so an installed clipterm has them); a repo
checkout's top-level themes/ and the user's config directory are searched after it, and a later
file with the same theme name wins, so a user can restyle a bundled theme without touching it.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path

from textual.color import Color, ColorParseError
from textual.theme import Theme

from clipterm.errors import ClipTermError

PACKAGE_THEMES = Path(__file__).parent / "themes"
REPO_THEMES = Path(__file__).resolve().parents[2] / "themes"
DEFAULT_THEME = "clipterm-midnight"
COLOR_KEYS = (
    "primary",
    "secondary",
    "warning",
    "error",
    "success",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
)
_FIELDS = {f.name for f in dataclasses.fields(Theme)}


class ThemeError(ClipTermError):
    """A theme file that cannot be used (bad TOML, unknown key, unparsable colour)."""


def user_theme_dir() -> Path:
    """$XDG_CONFIG_HOME/clipterm/themes (~/.config/clipterm/themes)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "clipterm" / "themes"


def theme_dirs() -> list[Path]:
    """Where themes are looked for, lowest precedence first (duplicates removed)."""
    out: list[Path] = []
    for d in (PACKAGE_THEMES, REPO_THEMES, user_theme_dir()):
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def load_theme_file(path: Path) -> Theme:
    """Read one theme; every problem is reported with the file name."""
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ThemeError(f"{path}: unreadable ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ThemeError(f"{path}: TOML syntax error: {e}") from None
    unknown = set(doc) - _FIELDS
    if unknown:
        raise ThemeError(f"{path}: unknown theme key(s) {', '.join(sorted(unknown))}")
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ThemeError(f"{path}: 'name' must be a non-empty string")
    if "primary" not in doc:
        raise ThemeError(f"{path}: 'primary' colour is required")
    for key in COLOR_KEYS:
        if key in doc:
            try:
                Color.parse(doc[key])
            except (ColorParseError, TypeError, ValueError):
                raise ThemeError(f"{path}: {key} = {doc[key]!r} is not a colour") from None
    variables = doc.get("variables", {})
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        raise ThemeError(f"{path}: [variables] must map names to strings")
    if not isinstance(doc.get("dark", True), bool):
        raise ThemeError(f"{path}: 'dark' must be true or false")
    return Theme(**doc)


def discover_themes(warn=None) -> dict[str, Theme]:
    """All loadable themes by name; a broken file is skipped (reported through `warn`)."""
    themes: dict[str, Theme] = {}
    for d in theme_dirs():
        for path in sorted(d.glob("*.toml")):
            try:
                t = load_theme_file(path)
            except ThemeError as e:
                if warn is not None:
                    warn(str(e))
                continue
            themes[t.name] = t
    return themes
