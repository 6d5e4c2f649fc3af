"""Opening runs from parsed run flags: create or resume a session, apply resume flags, report progress.

The CLI (`clipterm run`), the app and prompt batches all open runs the same way; this module holds
that shared code so none of them has to import another (cli -> app/batch -> cli was a cycle). Heavy
modules (runner, models, session) are imported where needed, so `clipterm --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from clipterm.errors import ClipTermError, SessionError, err

if TYPE_CHECKING:
    from clipterm.runner import Run
    from clipterm.session import Session

PARAM_FLAGS = {  # flag -> LaneParams field
    "lr": "lr",
    "views": "views",
    "tv_weight": "tv_weight",
    "memory_weight": "memory_weight",
    "temperature": "temperature",
    "weight_decay": "weight_decay",
    "degrees": "degrees",
    "translate": "translate",
    "scale_min": "scale_min",
    "scale_max": "scale_max",
    "flip_p": "flip_p",
}


def lane_params_from_args(args: argparse.Namespace, base: dict | None = None) -> dict:
    """Lane presets for a new session from --lanes/--mode-*, then the parameter flags applied."""
    from clipterm.presets import preset, with_value

    names = args.lanes or "ab"
    lanes = {}
    for lane in names:
        mode = getattr(args, f"mode_{lane}") or ("unconstrained" if lane == "a" else "constrained")
        lanes[lane] = preset(mode)
    for flag, field in PARAM_FLAGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        for lane in args.apply_to:
            if lane in lanes:
                lanes[lane] = with_value(lanes[lane], field, value)
    return lanes


def open_run(args: argparse.Namespace, path: Path, log: Callable[[str], None] = err) -> Run:
    """Create or resume the session at `path` as the flags ask; returns a Run holding its lock.

    An existing session is checked completely (lock, files, model, flags) before anything in it is
    touched, so a refused session is left byte-identical; only then is the lock taken.
    """
    from clipterm import session as sess
    from clipterm.models import load_default, load_model
    from clipterm.runner import Autosave, Run, check_fits, checkpoint_mismatch, load_recorded_model, same_model

    if args.autosave_seconds < 0 or args.autosave_seconds != args.autosave_seconds:
        raise ClipTermError("--autosave-seconds must be >= 0")
    if args.raw_every < 1:
        raise ClipTermError("--raw-every must be >= 1")
    autosave = Autosave(args.autosave_steps, args.autosave_seconds)
    if sess.is_session(path):
        holder = sess.lock_holder(path)
        if holder is not None:
            raise SessionError(
                f"{path}: session is already open in another clipterm process (pid {holder}); close that one first"
            )
        s = sess.load(path)
        _check_resume_flags(s, args)
        model = args.model or (s.model["name"] if args.pretrained else None)
        if model and not same_model(s.model, model, args.pretrained):
            if not args.retarget:
                raise SessionError(
                    f"{path}: made with {s.model['name']}/{s.model['pretrained']}, not "
                    f"{model}{'/' + args.pretrained if args.pretrained else ''}; pass --retarget "
                    f"to continue it on the new model"
                )
            bundle = load_model(model, args.pretrained, args.device)
            run = Run.retarget(path, bundle, autosave=autosave)
            log(f"retargeted {path} from {s.model['name']} to {bundle.name}")
        else:
            bundle = load_recorded_model(s.model, args.device)
            why = checkpoint_mismatch(s.model, bundle)
            if why and not args.retarget:
                raise SessionError(why)
            if why:
                run = Run.retarget(path, bundle, autosave=autosave)
                log(f"retargeted {path} to the changed weights of {bundle.name}")
            else:
                check_fits(s, bundle)
                run = Run.resume(path, bundle, autosave)
        log(f"resumed {path} at step {run.steps} on {bundle.name} ({bundle.device})")
        try:
            apply_resume_flags(run, args)
            run.engine.configure(args.precision, args.compile, args.raw_every)
        except BaseException:
            run.close()
            raise
        return run
    if args.prompt is None:
        raise ClipTermError("--prompt is required for a new session")
    lanes = lane_params_from_args(args)
    if args.model:
        bundle = load_model(args.model, args.pretrained, args.device)
    else:
        bundle, note = load_default(args.device)
        if note:
            log(note)
    run = Run.create(
        path,
        bundle,
        args.prompt,
        lanes,
        seed=args.seed or 0,
        eval_every=50 if args.eval_every is None else args.eval_every,
        frame_every=args.frame_every or 10,
        autosave=autosave,
    )
    run.engine.configure(args.precision, args.compile, args.raw_every)
    for w in run.engine.warnings:
        log(f"warning: {w}")
    log(f"new session {path} on {bundle.name} ({bundle.device}), lanes {','.join(lanes)}")
    return run


def _check_resume_flags(s: Session, args: argparse.Namespace) -> None:
    """Refuse resume flags that cannot apply, before the session is locked or anything is written.

    A session's seed and lanes are fixed when it is made; every other flag is validated here the
    way apply_resume_flags will apply it (prompt, presets, then parameters on top).
    """
    from clipterm.presets import preset, with_value
    from clipterm.prompts import parse_prompt

    if args.seed is not None and args.seed != s.seed:
        raise SessionError(
            f"{s.path}: --seed {args.seed} differs from the session's seed {s.seed}; a session's "
            f"seed is fixed when it is made"
        )
    if args.lanes is not None and set(args.lanes) != set(s.lanes):
        raise SessionError(
            f"{s.path}: --lanes {args.lanes} differs from the session's lanes "
            f"{''.join(s.lanes)}; a session's lanes are fixed when it is made"
        )
    if args.prompt is not None:
        parse_prompt(args.prompt)
    for lane, params in s.lanes.items():
        mode = getattr(args, f"mode_{lane}", None)
        p = preset(mode) if mode and mode != params.preset else params
        for flag, field in PARAM_FLAGS.items():
            value = getattr(args, flag, None)
            if value is not None and lane in args.apply_to:
                p = with_value(p, field, value)


def apply_resume_flags(run: Run, args: argparse.Namespace) -> None:
    """Flags given at resume change the live run and are recorded in the session's history.

    A flag equal to the current value changes and records nothing, so repeating the command that
    made a session resumes it exactly.
    """
    from clipterm.presets import with_value

    e = run.engine
    if args.prompt is not None and args.prompt != e.prompt:
        e.set_prompt(args.prompt)
    for lane in e.lanes:
        mode = getattr(args, f"mode_{lane}", None)
        if mode and mode != e.lanes[lane].params.preset:
            e.set_preset(lane, mode)
    for flag, field in PARAM_FLAGS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        for lane in args.apply_to:
            if lane in e.lanes:
                current = e.lanes[lane].params
                if getattr(with_value(current, field, value), field) != getattr(current, field):
                    e.set_param(lane, field, value)
    if args.eval_every is not None and args.eval_every != e.eval_every:
        e.changes.append(
            {"step": e.step_count, "lane": "*", "key": "eval_every", "old": e.eval_every, "new": args.eval_every}
        )
        e.eval_every = args.eval_every
    frame_every = None if args.frame_every is None else args.frame_every or 10  # 0 means the default, as at creation
    if frame_every is not None and frame_every != run.frame_every:
        e.changes.append(
            {"step": e.step_count, "lane": "*", "key": "frame_every", "old": run.frame_every, "new": frame_every}
        )
        run.frame_every = frame_every


class Progress:
    """A one-line progress bar on a terminal; plain lines every ~10 % otherwise."""

    def __init__(self, total: int, start: int, quiet: bool) -> None:
        self.total, self.start, self.quiet = total, start, quiet
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.last_line = 0.0
        self.next_mark = start

    def update(self, step: int, sims: dict[str, float]) -> None:
        if self.quiet:
            return
        rate = (step - self.start) / max(1e-9, time.monotonic() - self.t0)
        sim = "  ".join(f"{k.upper()} {v:.3f}" for k, v in sims.items())
        frac = step / max(1, self.total)
        if self.tty:
            now = time.monotonic()
            if now - self.last_line < 0.1 and step < self.total:
                return
            self.last_line = now
            bar = "#" * int(frac * 30)
            sys.stderr.write(f"\r[{bar:<30}] {step}/{self.total}  {rate:6.1f} steps/s  {sim}   ")
            if step >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()
        elif step >= self.next_mark or step >= self.total:
            sys.stderr.write(f"step {step}/{self.total}  {rate:.1f} steps/s  {sim}\n")
            self.next_mark = step + max(1, self.total // 10)
