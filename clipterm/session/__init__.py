"""Sessions on disk: TOML state plus .npy tensors, written atomically, read without pickle.

Layout of a session directory (docs/SESSION_FORMAT.md is the full specification):
    session.toml              metadata, parameters, change history, checkpoint sha256, [files] sha256s
    lane-a/, lane-b/          image, param, best, best_loss, opt_*, rng, history, evals (.npy), final.png
                              optional: probes.npy float32 (R,L,6), probe_steps.npy int64 (R,) (probes.py),
                              opt_steps.npy float32 (starts,) (each start's optimizer step)
    frames/lane-X.npy         uint8 (N,S,S,3) trajectory, frames/lane-X-steps.npy int64 (N,)
    .pending/                 a save in progress (journal); .lock  the single-writer lock

Modules by concern: `format` (Session, names, session.toml, validating loader), `npy` (safe
pickle-free reading, .npy/.png bytes), `journal` (atomic save, roll-forward), `lock` (one writer).
Callers use this package's names (`from clipterm import session as sess`); the modules import
each other only in that order: npy <- format <- journal <- lock.
"""

from clipterm.errors import SessionError
from clipterm.session.format import (
    COMPLETE,
    FINITE,
    FORMAT_VERSION,
    FRAME_SIZE,
    LANE_ARRAYS,
    LOCK,
    MAX_JOURNAL_BYTES,
    MAX_STEPS,
    MAX_TOML_BYTES,
    OPTIONAL_LANE_ARRAYS,
    PENDING,
    PROBE_STATS,
    SUMMARY_KEYS,
    TOML_NAME,
    Session,
    check_prompt_lanes,
    check_run_fields,
    is_known_file,
    is_session,
    lane_dir_name,
    load,
    now,
    read_toml,
    render_toml,
    require,
    tensor_arrays,
)
from clipterm.session.journal import save
from clipterm.session.lock import SessionLock, lock_holder
from clipterm.session.npy import MAX_NPY_BYTES, is_regular_file

__all__ = [
    "check_prompt_lanes",
    "check_run_fields",
    "require",
    "COMPLETE",
    "FINITE",
    "FORMAT_VERSION",
    "FRAME_SIZE",
    "LANE_ARRAYS",
    "LOCK",
    "MAX_JOURNAL_BYTES",
    "MAX_NPY_BYTES",
    "MAX_STEPS",
    "MAX_TOML_BYTES",
    "OPTIONAL_LANE_ARRAYS",
    "PENDING",
    "PROBE_STATS",
    "SUMMARY_KEYS",
    "TOML_NAME",
    "Session",
    "SessionError",
    "SessionLock",
    "is_regular_file",
    "is_session",
    "is_known_file",
    "tensor_arrays",
    "lane_dir_name",
    "load",
    "lock_holder",
    "now",
    "read_toml",
    "render_toml",
    "save",
]
