"""Full garbage collections at quiet moments, never in the middle of a key.

Textual caches a strip inside itself (`Strip.divide` keeps `[self]`), so every repaint leaves
reference cycles that hold the frame's cell objects: tens of thousands of them a second at 4 frames
a second. Only a full (oldest-generation) collection frees them, and Python starts one whenever
enough allocations have piled up, which is most often while a key's own repaint allocates: 15-30 ms
added to that key, the slowest keys' whole excess (bench/RESULTS.md, issue 15). The app turns
automatic full collections off while it runs and does one itself on a timer, skipping a tick that
follows a key closely (keys come in runs) but never letting garbage pile up past `longest` seconds.
Young collections stay automatic: they are cheap and free what dies young.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

NEVER = 1 << 30  # an oldest-generation threshold no run reaches: Python never starts a full collection


class QuietCollector:
    """Owns the full collections while started: `tick` (called every `every` seconds) runs one unless
    a key came within `quiet` seconds and the last one was under `longest` seconds ago."""

    def __init__(
        self,
        every: float = 0.5,
        quiet: float = 0.15,
        longest: float = 1.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every, self.quiet, self.longest, self.clock = every, quiet, longest, clock
        self.collections = 0
        self._saved: tuple[int, int, int] | None = None
        self._last_key = float("-inf")
        self._last_full = clock()

    @property
    def started(self) -> bool:
        return self._saved is not None

    def start(self) -> None:
        """Take over full collections (young ones stay Python's)."""
        if self._saved is None:
            self._saved = gc.get_threshold()
            gc.set_threshold(self._saved[0], self._saved[1], NEVER)
            self._last_full = self.clock()

    def stop(self) -> None:
        """Give full collections back to Python, with the thresholds it had."""
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None

    def key(self) -> None:
        """A key arrived: the next tick or two are likely to fall between keys of the same run."""
        self._last_key = self.clock()

    def tick(self) -> bool:
        """Run a full collection now if this is a quiet moment (or garbage has waited too long)."""
        if self._saved is None:
            return False
        now = self.clock()
        if now - self._last_key < self.quiet and now - self._last_full < self.longest:
            return False
        gc.collect()
        self._last_full = self.clock()
        self.collections += 1
        return True
