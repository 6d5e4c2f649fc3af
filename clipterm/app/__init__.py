"""The Textual app: `clipterm [SESSION]` opens (or resumes) a session and shows it live.

Imports of Textual and textual-image happen inside `run_app`, because textual-image queries the
terminal when imported and must do so before Textual takes the terminal over.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

from clipterm.prompts import slugify
from clipterm.text import printable

DEFAULT_PROMPT = "a red circle on a black background"
SESSIONS_DIR = Path("sessions")
RENDERERS = ("auto", "kitty", "sixel", "halfcell", "unicode")


def new_session_path(prompt: str, root: Path = SESSIONS_DIR, now: _dt.datetime | None = None) -> Path:
    """sessions/YYYYMMDD-HHMMSS-prompt-slug, with -2, -3... if that name is taken."""
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = root / f"{stamp}-{slugify(prompt, max_len=40, fallback='session')}"
    path, n = base, 2
    while path.exists():
        path = base.with_name(f"{base.name}-{n}")
        n += 1
    return path


def image_class(render: str):
    """The textual-image widget class for --render (auto asks the terminal what it supports)."""
    import textual_image.renderable as tir
    import textual_image.widget as tiw

    from clipterm.app.render import FastHalfcellImage

    classes = {
        "auto": tiw.Image,
        "kitty": tiw.TGPImage,
        "sixel": tiw.SixelImage,
        "halfcell": FastHalfcellImage,
        "unicode": tiw.UnicodeImage,
    }
    if render not in classes:
        raise ValueError(f"--render must be one of {', '.join(RENDERERS)}")
    if render == "auto" and tir.Image is tir.HalfcellImage:  # the terminal has no image protocol
        return FastHalfcellImage
    return classes[render]


def build_app(args: argparse.Namespace, log_stream=None):
    """Open the run (new or resumed) from parsed args and wrap it in the app; the app owns the run."""
    from clipterm import session as sess
    from clipterm.app.controller import read_ui_state
    from clipterm.app.ui import ClipTermApp
    from clipterm.errors import ClipTermError
    from clipterm.judge import judge_from_flags
    from clipterm.launch import open_run
    from clipterm.recipe import has_recipe

    if args.fps is None or not 0 < args.fps <= 60:
        raise ClipTermError("--fps must be within (0, 60]")
    path = args.session
    units = getattr(args, "unit", None)  # with units and no prompt, the objective is the units alone
    if path is None:
        path = new_session_path(args.prompt or ("units " + " ".join(units) if units else DEFAULT_PROMPT))
    resuming = path.exists() and (sess.is_session(path) or has_recipe(path))  # a start-up killed early
    if not resuming and args.prompt is None and not units:
        args.prompt = DEFAULT_PROMPT
    image_cls = image_class(args.render)
    lines: list[str] = []
    # On a terminal, "opening PATH …" is a status line that the next line replaces: a log line, or
    # the refusal the CLI prints, so a refused session reads as one line, as everywhere else.
    showing = log_stream is not None and _is_terminal(log_stream)

    def clear_status() -> None:
        nonlocal showing
        if showing:
            log_stream.write("\r\x1b[K")  # back to the line's start, erase it
            log_stream.flush()
            showing = False

    def log(msg: str) -> None:
        lines.append(msg.replace(str(path), path.name))
        if log_stream is not None:
            clear_status()
            log_stream.write(f"clipterm: {printable(msg)}\n")
            log_stream.flush()

    if showing:
        log_stream.write(f"clipterm: opening {printable(str(path))} …")
        log_stream.flush()
    try:
        # the judge loads first: a bad --judge or --labels is refused before the session is touched
        judge = judge_from_flags(args.judge, args.labels, args.device)
        run = open_run(args, path, log=log)
    finally:
        clear_status()
    try:
        ui_state = read_ui_state(path) if resuming else {}
        return ClipTermApp(
            run,
            image_cls=image_cls,
            fps=args.fps,
            paused=args.paused,
            judge=judge,
            startup_log=lines,
            ui_state=ui_state,
        )
    except BaseException:
        run.close()
        raise


def _is_terminal(stream: object) -> bool:
    """Whether `stream` is a terminal (a status line there can be erased; in a log file it cannot)."""
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        return False


def settle_heap() -> None:
    """Freeze what is alive after start-up (torch, the model, the app) out of the garbage collector's view.

    Torch and open_clip leave millions of long-lived objects; a full collection walked them all and
    froze the screen for up to ~0.7 s now and then. Frozen objects are never collected, which is
    right for these, and the collector stays fast for the short-lived objects drawing makes.
    """
    import gc

    gc.collect()
    gc.freeze()


def run_app(args: argparse.Namespace) -> int:
    """Run the app until quit; whatever ends it (q, ctrl+c, SIGHUP, a crash), the session is saved."""
    app = build_app(args, log_stream=sys.stderr)
    settle_heap()
    try:
        code = app.run()
    finally:
        app.controller.shutdown()
    if not app.controller.saved_ok:
        sys.stderr.write(f"clipterm: the final save of {app.run_.path} failed; the previous save is kept\n")
        return 1
    sys.stderr.write(f"clipterm: saved {app.run_.path} at step {app.run_.steps}\n")
    return code or 0
