"""Whether bytes are a state torch's CPU random generator accepts, decided without importing torch.

A session stores each lane's view generator as `rng.npy` (uint8, what `torch.Generator.get_state`
returns). `clipterm info` validates a session completely but must not pay torch's 2-3 s import for
this one check, so the rule `torch.Generator.set_state` applies is spelled out here (and checked
against torch itself, state by state, in tests/test_startup.py).

The state is ATen's `CPUGeneratorImplState`, 5056 bytes: the legacy TH layout (initial seed, `left`,
`seeded`, `next`, 624 Mersenne-Twister words, a cached double normal sample) and a cached float
normal sample. torch requires that size (older releases also took the 5048-byte legacy layout,
which no clipterm writes; it is refused here so a state this accepts loads on every torch), then
`seeded`, 1 <= `left` <= 624 and `next` (as uint32) <= 624.
"""

from __future__ import annotations

import struct

import numpy as np

MT_N = 624  # Mersenne-Twister state words
STATE_SIZE = (8 + 4 + 4 + 8 + 8 * MT_N + 3 * 8 + 4 + 4) + (4 + 1 + 3)  # legacy pod + float sample = 5056
_HEAD = struct.Struct("<QiiQ")  # the_initial_seed, left, seeded, next


def valid_cpu_generator_state(state: np.ndarray) -> bool:
    """True when `torch.Generator().set_state(torch.from_numpy(state))` would accept `state`."""
    if state.dtype != np.uint8 or state.ndim != 1 or state.size != STATE_SIZE:
        return False
    _seed, left, seeded, nxt = _HEAD.unpack_from(state.tobytes(), 0)
    return seeded != 0 and 1 <= left <= MT_N and (nxt & 0xFFFFFFFF) <= MT_N
