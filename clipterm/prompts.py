"""Prompt syntax: `text[:weight] | text[:weight] ...`; a negative weight pushes the image away."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from clipterm.errors import ClipTermError
from clipterm.text import first_control

_WEIGHT = re.compile(r"^(?P<text>.*?):\s*(?P<w>[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*$", re.S)
MAX_TERMS = 16
SLUG_MAX = 48


class PromptError(ClipTermError):
    """The prompt text cannot be used as an optimization target."""


@dataclass(frozen=True)
class PromptTerm:
    text: str
    weight: float


def parse_prompt(prompt: str) -> list[PromptTerm]:
    """Split on '|', read an optional trailing ':weight' per term; validate.

    Control characters (C0, DEL, C1, NUL) are refused: a prompt is shown on terminals (the app,
    `clipterm info`, logs) and drawn on sheets, so one holding escape sequences could drive the
    terminal of whoever opens the session later. Every entry (--prompt, the app's field, prompts
    files, session.toml) comes through here.
    """
    if prompt is None or not prompt.strip():
        raise PromptError("the prompt is empty: give some text, e.g. --prompt 'a red circle'")
    bad = first_control(prompt)
    if bad is not None:
        raise PromptError(
            f"the prompt holds a control character ({bad}); use plain text on one line (no escapes, tabs or newlines)"
        )
    parts = prompt.split("|")
    if len(parts) > MAX_TERMS:
        raise PromptError(f"too many prompt terms ({len(parts)}); at most {MAX_TERMS}")
    terms = []
    for raw in parts:
        part = raw.strip()
        m = _WEIGHT.match(part)
        text, weight = (m.group("text").strip(), float(m.group("w"))) if m else (part, 1.0)
        if not text:
            raise PromptError(f"empty prompt term in {prompt!r}: remove the stray '|' or ':'")
        if weight == 0:
            raise PromptError(f"prompt term {text!r} has weight 0, which does nothing")
        if abs(weight) > 100:
            raise PromptError(f"prompt term {text!r} has weight {weight}; keep weights within [-100, 100]")
        terms.append(PromptTerm(text, weight))
    if not any(t.weight > 0 for t in terms):
        raise PromptError("the prompt needs at least one term with a positive weight")
    return terms


def main_term(prompt: str) -> str:
    """The text of the prompt's heaviest term (the first of equals): what a judge ranks for a prompt
    of several weighted terms."""
    return max(parse_prompt(prompt), key=lambda t: t.weight).text


def slugify(text: str, max_len: int = SLUG_MAX, fallback: str = "prompt") -> str:
    """A directory name for a prompt: lowercase ASCII words joined by '-' (`fallback` if nothing is left).

    The one naming rule for sessions named after their prompt (the app's new sessions, batch sessions).
    """
    s = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    s = re.sub(r"[^a-z0-9]+", "-", s).strip("-")[:max_len].strip("-")
    return s or fallback
