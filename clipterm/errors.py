"""User-facing errors: each carries one line that the CLI prints before exiting with code 2."""

import sys


class ClipTermError(Exception):
    """An expected failure caused by input or environment, reported without a traceback."""


class ModelUnavailable(ClipTermError):
    """Weights for a requested model cannot be had (offline and not cached, bad path...)."""


class SessionError(ClipTermError):
    """A session directory or one of its files is missing, damaged, hostile or locked."""


def err(msg: str) -> None:
    """One `clipterm: ...` line on stderr: how the command line reports progress, warnings and refusals."""
    sys.stderr.write(f"clipterm: {msg}\n")
