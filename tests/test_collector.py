"""The app's garbage-collection schedule (clipterm/app/collector.py): full collections only from its
timer, never right after a key unless garbage has waited too long, and Python's own thresholds back
once it stops."""

from __future__ import annotations

import gc

import pytest

from clipterm.app.collector import NEVER, QuietCollector


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def full_collections():
    """The start times (gc's own count) of every full collection while the test runs."""
    seen: list[int] = []

    def note(phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] == 2:
            seen.append(1)

    gc.callbacks.append(note)
    yield seen
    gc.callbacks.remove(note)


def test_start_turns_automatic_full_collections_off_and_stop_gives_them_back():
    before = gc.get_threshold()
    c = QuietCollector()
    try:
        c.start()
        assert c.started
        assert gc.get_threshold() == (before[0], before[1], NEVER)  # young collections stay Python's
        c.start()  # twice is once: stop must still restore the first thresholds
    finally:
        c.stop()
    assert gc.get_threshold() == before and not c.started
    c.stop()  # stopping again changes nothing
    assert gc.get_threshold() == before


def test_tick_collects_at_quiet_moments_and_waits_after_a_key(full_collections):
    clock = Clock()
    c = QuietCollector(every=0.5, quiet=0.15, longest=1.5, clock=clock)
    assert c.tick() is False and full_collections == []  # not started: Python's schedule, not ours
    c.start()
    try:
        clock.now += 0.5
        assert c.tick() is True and c.collections == 1 and len(full_collections) == 1
        c.key()
        clock.now += 0.1  # within `quiet` of the key: the next key of a run may come any moment
        assert c.tick() is False and c.collections == 1 and len(full_collections) == 1
        clock.now += 0.1  # 0.2 s after the key: quiet again
        assert c.tick() is True and c.collections == 2
    finally:
        c.stop()


def test_a_long_run_of_keys_cannot_hold_garbage_back_past_longest(full_collections):
    clock = Clock()
    c = QuietCollector(every=0.5, quiet=0.25, longest=1.5, clock=clock)
    c.start()
    try:
        done = []
        for _ in range(16):  # a key every 0.125 s for 2 s, a tick right after each
            clock.now += 0.125
            c.key()
            done.append(c.tick())
        # held back while the last collection was recent, then one as soon as 1.5 s had passed
        assert done.index(True) == 11 and sum(done) == 1 and len(full_collections) == 1
    finally:
        c.stop()
