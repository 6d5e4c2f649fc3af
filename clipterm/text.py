"""Text that came from a file or a user, made safe to show on a terminal.

A session someone hands you, a prompts file or an image name can hold escape sequences; written raw
to a terminal they can recolour, retitle or rewrite it. Everything that echoes such text goes
through `printable`, and prompts refuse control characters outright (`first_control`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# C0 controls (NUL..US), DEL and the C1 controls (U+0080..U+009F, which some terminals honour as CSI etc.).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _escape(m: re.Match[str]) -> str:
    return f"\\x{ord(m.group()):02x}"


def printable(text: str) -> str:
    """`text` with every C0/C1 control character and DEL written as a visible `\\xNN` escape.

    Why: text read from files reaches the terminal in error lines and summaries; escaping (rather
    than dropping) keeps the message honest about what the file holds.
    """
    return _CONTROL.sub(_escape, str(text))


def first_control(text: str) -> str | None:
    """The first control character in `text` as a `\\xNN` escape, or None when there is none."""
    m = _CONTROL.search(text)
    return _escape(m) if m else None


def content_lines(text: str, strip: str = " ") -> Iterator[tuple[int, str]]:
    """(line number, line) of a one-entry-per-line file (prompts, labels), `strip` taken off both
    ends; blank lines and lines starting with # are skipped. Lines end at "\n" only (CRLF too):
    str.splitlines would also split at \x0b, \x1c-\x1e and \x85, quietly turning a control
    character into a line break instead of letting the caller refuse it."""
    for n, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r").strip(strip)
        if line and not line.startswith("#"):
            yield n, line
