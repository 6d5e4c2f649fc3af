"""Command line: `clipterm [SESSION]` opens the app; subcommands run headless.

Every expected failure ends as one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from clipterm import __version__
from clipterm.errors import ClipTermError, err
from clipterm.launch import DEFAULT_LANES, PARAM_FLAGS, Progress, default_lanes, lanes_flag, open_run
from clipterm.text import printable

if TYPE_CHECKING:
    pass

SUBCOMMANDS = (
    "run",
    "info",
    "judge",
    "train-shapes",
    "train-prior",
    "score",
    "export",
    "analyze",
    "presets",
    "units",
    "render-shapes",
    "examples",
)
EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line (no usage dump) with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_BAD_INPUT)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0 or v > 10_000_000:
        raise argparse.ArgumentTypeError(f"expected 0..10000000, got {v}")
    return v


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= v < 2**63:
        raise argparse.ArgumentTypeError(f"seed must be within 0..2^63-1, got {v}")
    return v


def _default_lanes_text() -> str:
    """'a (unconstrained), b (constrained) and c (...)': a new session's lanes, for help texts."""
    items = [f"{name} ({_default_of(name)})" for name in DEFAULT_LANES]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _defaults() -> dict[str, tuple[str, str]]:
    """Each default lane's preset on a shapes model and on any other (lane C's differ)."""
    shapes, other = default_lanes(True), default_lanes(False)
    return {lane: (shapes[lane], other[lane]) for lane in DEFAULT_LANES}


def _default_of(lane: str) -> str:
    """A default lane's preset for help texts: lane C's depends on the model's world."""
    shapes, other = _defaults()[lane]
    return shapes if shapes == other else f"{shapes} on a shapes model, {other} on any other"


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        help="shapes-a, shapes-b or an open_clip name (default: ViT-B-32/openai, falling back to shapes-a offline)",
    )
    p.add_argument("--pretrained", help="pretrained tag (openai, laion2b_...), checkpoint file, directory, or none")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")


def add_labels_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--labels",
        default=None,
        metavar="shapes|imagenet|FILE",
        help="what the judge ranks the prompt among (default: the 24 base captions for a shapes judge, "
        "ImageNet's classes for any other; FILE: one label per line)",
    )


def add_run_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--prompt", help="text, or terms joined by '|' each with optional :weight")
    p.add_argument(
        "--unit",
        action="append",
        metavar="BLOCK:CHANNEL[:WEIGHT]",
        help="add a unit to the objective (repeatable; without --prompt the units alone): BLOCK:CHANNEL, "
        "neuron BLOCK:CHANNEL@TOKEN or @Y,X, direction BLOCK:FILE.npy or 'text:A - B' (README: Units)",
    )
    p.add_argument("--seed", type=_seed, default=None, help="random seed of a new session (default 0)")
    every = "".join(DEFAULT_LANES)
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        metavar="IMAGE",
        help="start a new session's lanes from this picture instead of noise (centre square, resized to the model)",
    )
    p.add_argument(
        "--lanes",
        type=lanes_flag,
        default=None,
        metavar="LETTERS|none",
        help=f"which of the default lanes {_default_lanes_text()} a new session runs: some of the letters "
        f"{every} in that order, or none (default {every})",
    )
    for name in DEFAULT_LANES:
        p.add_argument(
            f"--mode-{name}",
            dest=f"mode_{name}",
            metavar="PRESET",
            help=f"preset of lane {name.upper()} (default {_default_of(name)})",
        )
    p.add_argument(
        "--lane",
        action="append",
        metavar="NAME=PRESET[,KEY=VALUE...]",
        help=f"add a lane (or replace one of {', '.join(DEFAULT_LANES)}): a preset's parts with changes, "
        f"e.g. d=constrained,param=fourier,views=4",
    )
    p.add_argument(
        "--apply-to",
        dest="apply_to",
        default=None,
        metavar="LANES",
        help="lanes the parameter flags below change: letters (ab) or names (a,c); default all",
    )
    for flag in PARAM_FLAGS:
        p.add_argument("--" + flag.replace("_", "-"), dest=flag, default=None, metavar="X")
    p.add_argument(
        "--eval-every",
        dest="eval_every",
        type=_positive_int,
        default=None,
        help="steps between robust/verified measurements (default 50)",
    )
    p.add_argument(
        "--frame-every",
        dest="frame_every",
        type=_positive_int,
        default=None,
        help="steps between saved trajectory frames (default 10)",
    )
    p.add_argument("--autosave-steps", dest="autosave_steps", type=_positive_int, default=50)
    p.add_argument("--autosave-seconds", dest="autosave_seconds", type=float, default=60.0)
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="autocast precision of the model pass (auto: bf16 on CUDA, fp32 on CPU)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the image tower (slow first step)")
    p.add_argument(
        "--raw-every",
        dest="raw_every",
        type=_positive_int,
        default=1,
        help="measure augmented lanes' clean-canvas similarity every K steps (default 1)",
    )
    p.add_argument(
        "--retarget", action="store_true", help="allow resuming a session with a different model than it was made with"
    )
    p.add_argument(
        "--probe-every",
        dest="probe_every",
        type=_positive_int,
        default=None,
        help="steps between layer probe records (default 10; 0 = off)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="clipterm",
        description="Watch a CLIP model paint its own picture of a prompt. `clipterm [SESSION]` opens the app; "
        f"a new session runs the lanes {_default_lanes_text()}; --lanes, --mode-X and --lane change them.",
    )
    p.add_argument("--version", action="version", version=f"clipterm {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    r = sub.add_parser("run", help="optimize headless into a session directory (new or resumed)")
    r.add_argument("out", type=Path, metavar="SESSION")
    r.add_argument("--steps", type=_positive_int, required=True, help="total steps to reach")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.add_argument(
        "--prompts-file",
        dest="prompts_file",
        type=Path,
        default=None,
        help="one prompt per line: SESSION becomes a directory of sessions plus summary.csv/.md",
    )
    r.add_argument(
        "--judge",
        default=None,
        metavar="MODEL[:PRETRAINED]",
        help="independent model that ranks the prompt for each lane at the end (batches: default shapes-b; none: off)",
    )
    add_labels_arg(r)
    add_run_args(r)

    i = sub.add_parser("info", help="print a session's summary")
    i.add_argument("session", type=Path)
    i.add_argument("--json", action="store_true")

    j = sub.add_parser("judge", help="rank labels (and a prompt) for images with an independent model")
    j.add_argument("images", type=Path, nargs="+")
    j.add_argument("--judge", default="shapes-b", metavar="MODEL[:PRETRAINED]", help="judge model (default shapes-b)")
    j.add_argument("--pretrained", default=None, help="the judge's pretrained tag or checkpoint (or MODEL:TAG)")
    add_labels_arg(j)
    j.add_argument("--prompt", default=None, help="report this caption's rank too")
    j.add_argument("--device", default="auto")
    j.add_argument("--top", type=_positive_int, default=3, help="captions to list per image")

    sc = sub.add_parser("score", help="score images on several models (one at a time) against a prompt")
    sc.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    sc.add_argument("--prompt", required=True, help="text, or terms joined by '|' each with optional :weight")
    sc.add_argument(
        "--model",
        dest="models",
        action="extend",
        nargs="+",
        metavar="M[:PRETRAINED]",
        help="models to score on, e.g. shapes-a shapes-b ViT-B-32:openai (default shapes-a shapes-b)",
    )
    sc.add_argument("--baseline", type=Path, default=None, help="a real photo to add as a reference row")
    sc.add_argument("--device", default="auto")
    sc.add_argument("--json", action="store_true", help="print JSON instead of a table")

    ex = sub.add_parser("export", help="a session's canvas as PNG, its trajectory as GIF, or a contact sheet")
    ex.add_argument("session", type=Path)
    ex.add_argument("--lane", default="a", help="lane name (default a; the sheet shows every lane)")
    ex.add_argument("--format", dest="format", default="png", help="png, gif or sheet (default png)")
    ex.add_argument("--out", type=Path, required=True, help="output file")
    ex.add_argument("--scale", type=_positive_int, default=None, help="whole upscaling factor (default auto)")

    an = sub.add_parser("analyze", help="plot a session's layer probes and similarity curves as PNGs")
    an.add_argument("session", type=Path)
    an.add_argument("--out", type=Path, required=True, help="output directory")

    sub.add_parser("presets", help="list the lane presets (shipped and ~/.config/clipterm/presets), one per line")

    u = sub.add_parser("units", help="a block's channels ranked by mean activation on a lane's picture")
    u.add_argument("session", type=Path)
    u.add_argument("--block", type=_positive_int, required=True, help="block number (0 = first resblock / layer1)")
    u.add_argument("--lane", default=None, help="lane name (default: the session's first lane)")
    u.add_argument("--top", type=_positive_int, default=0, help="list only the N most active channels (0 = all)")
    u.add_argument("--device", default="auto")

    rs = sub.add_parser("render-shapes", help="write N base-world renders (PNG) and their captions (CSV)")
    rs.add_argument("n", type=_positive_int, metavar="N")
    rs.add_argument("dir", type=Path, metavar="DIR", help="a new or empty directory")
    rs.add_argument("--seed", type=_seed, default=0)

    ex2 = sub.add_parser("examples", help="rank a folder of images by a unit's activation; contact sheet + CSV")
    ex2.add_argument("dir", type=Path, metavar="DIR", help="folder of images (not searched recursively)")
    ex2.add_argument("--model", required=True, help="shapes-a, shapes-b or an open_clip name")
    ex2.add_argument("--pretrained", default=None)
    ex2.add_argument("--block", type=_positive_int, required=True, help="block number (0 = first resblock / layer1)")
    ex2.add_argument("--channel", type=_positive_int, required=True)
    ex2.add_argument("--out", type=Path, required=True, help="the contact sheet (PNG); the CSV goes beside it")
    ex2.add_argument("--batch", type=_positive_int, default=64, help="images per forward pass (default 64)")
    ex2.add_argument("--device", default="auto")
    ex2.add_argument("--quiet", action="store_true", help="no progress output")

    t = sub.add_parser("train-shapes", help="train a small CLIP on the shapes world")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--seed", type=_seed, default=1)
    t.add_argument("--arch", choices=("vit", "resnet", "vit-p16"), default="vit")
    t.add_argument("--steps", type=_positive_int, default=1000)
    t.add_argument("--batch", type=_positive_int, default=128)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument(
        "--adversarial", type=float, default=0.0, metavar="EPS", help="train on worst-case images within EPS (0-0.5)"
    )

    tp = sub.add_parser("train-prior", help="train the shape prior that the vae parameterization paints through")
    tp.add_argument("--out", type=Path, required=True)
    tp.add_argument("--seed", type=_seed, default=0)
    tp.add_argument("--steps", type=_positive_int, default=5000)
    tp.add_argument("--batch", type=_positive_int, default=64)
    tp.add_argument("--figures", choices=("rich", "base"), default="rich", help="the world the prior learns")
    return p


def build_app_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="clipterm", description="Open the clipterm app (or a subcommand: " + ", ".join(SUBCOMMANDS) + ").")
    p.add_argument("--version", action="version", version=f"clipterm {__version__}")
    p.add_argument("session", nargs="?", type=Path, help="session directory to open or create")
    add_run_args(p)
    p.add_argument(
        "--render",
        choices=("auto", "kitty", "sixel", "halfcell", "unicode"),
        default="auto",
        help="how frames are drawn in the terminal",
    )
    p.add_argument("--fps", type=float, default=4.0, help="frames per second sent to the screen (default 4)")
    p.add_argument("--paused", action="store_true", help="open paused (space starts the optimization)")
    p.add_argument(
        "--judge",
        default="shapes-c",
        metavar="MODEL",
        help="independent model whose ranking of the prompt is shown for every lane (default shapes-c, the "
        "held-out judge; none: off)",
    )
    add_labels_arg(p)
    return p


# ---------------------------------------------------------------------------- run
def cmd_run(args: argparse.Namespace) -> int:
    """Run headless to --steps total; SIGINT, SIGTERM and SIGHUP save and exit (128 + signal).

    The handlers only set a flag, so a signal never lands inside a save; the loop checks the flag
    after every step. Output errors (a terminal gone with SIGHUP) never stop the final save.
    """
    if getattr(args, "prompts_file", None) is not None:
        from clipterm.batch import run_batch

        return run_batch(args)
    judge = None
    if args.judge is not None or args.labels is not None:  # loaded first: a bad judge writes nothing
        from clipterm.judge import DEFAULT_JUDGE, judge_from_flags

        judge = judge_from_flags(args.judge or DEFAULT_JUDGE, args.labels, args.device)
    stop = {"sig": 0}

    def on_signal(signum, _frame) -> None:
        stop["sig"] = signum

    def say(msg: str) -> None:
        try:
            err(msg)
        except OSError:
            pass  # stderr is gone (SSH dropped); the session on disk is what matters

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    run = None
    progress = None
    try:
        run = open_run(args, args.out, log=say)
        from clipterm.probes import configure

        configure(run.engine, args.probe_every)
        if run.steps >= args.steps:
            say(f"{args.out} is already at step {run.steps} (>= --steps {args.steps}); nothing to do")
            if run.dirty():
                run.save()
            return 0
        progress = Progress(args.steps, run.steps, args.quiet)
        while run.steps < args.steps and not stop["sig"]:
            run.step()
            if run.steps % 10 == 0 or run.steps == args.steps:
                run.engine.flush()
                try:
                    progress.update(run.steps, {n: float(ln.history[-1, 0]) for n, ln in run.engine.lanes.items()})
                except OSError:
                    progress.quiet = True
        run.save()
        if stop["sig"]:
            say(f"stopped by signal {stop['sig']} at step {run.steps}; saved {args.out}")
            return 128 + stop["sig"]
        summ = run.summary()
        for lane, row in summ.items():
            what = "similarity" if run.engine.lanes[lane].similarity_terms() else "unit score"
            say(
                f"lane {lane} ({run.engine.lanes[lane].spec.preset}): {what} "
                f"{row.get('last_similarity', float('nan')):.4f}, best {row.get('best_similarity', float('nan')):.4f}"
            )
        if judge is not None:
            from clipterm.prompts import main_term

            prompt = main_term(run.engine.prompt)
            for lane in run.engine.lanes:
                say(f"lane {lane}: {judge.rank_canvas(run.engine.shown(lane), prompt).line(judge.name)}")
        return 0
    finally:
        if progress is not None:
            progress.close()
        if run is not None:
            run.close()
        for s, h in old.items():
            signal.signal(s, h)


# ---------------------------------------------------------------------------- info, judge, train
def cmd_info(args: argparse.Namespace) -> int:
    """Print a session's summary; read-only (works on a session another clipterm is running)."""
    from clipterm import initimage
    from clipterm import recipe as rc
    from clipterm import session as sess

    if rc.has_recipe(args.session):
        return _info_recipe(args)
    s = sess.load(args.session)
    holder = sess.lock_holder(s.path)
    start = initimage.started_from(s.changes)
    data = {
        "path": str(s.path),
        "format_version": sess.FORMAT_VERSION,
        "prompt": s.prompt,
        "model": s.model,
        "seed": s.seed,
        "steps": s.steps,
        "created": s.created,
        "updated": s.updated,
        "eval_every": s.eval_every,
        "frame_every": s.frame_every,
        "lanes": {n: {"preset": p.preset, "parts": p.describe(), **s.summary.get(n, {})} for n, p in s.lanes.items()},
        "changes": len(s.changes),
        "init": {"source": start[0], "sha256": start[1]} if start else None,
        "frames": {n: int(len(f[0])) for n, f in s.frames.items()},
        "open_by_pid": holder,
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    # Every string below came from the session's files (someone may have handed it to you): escaped.
    print(f"session  {printable(str(s.path))}" + (f"   (open in pid {printable(holder)})" if holder else ""))
    print(f"prompt   {printable(s.prompt) or '(none: the objective is units alone)'}")
    print(f"model    {printable(s.model['name'])} ({printable(s.model['pretrained'])})")
    print(f"steps    {s.steps}   seed {s.seed}   changes {len(s.changes)}")
    if start is not None:
        print(f"init     {printable(start[0])} (pixels sha256 {printable(start[1][:12])}…, a copy in init.png)")
    for n, row in data["lanes"].items():
        nums = "  ".join(
            f"{k.replace('_similarity', '')} {v:.4f}" for k, v in row.items() if k not in ("preset", "parts")
        )
        print(f"lane {printable(n):<4} {printable(row['preset']):<14} {nums}   [{printable(row['parts'])}]")
    return 0


def _info_recipe(args: argparse.Namespace) -> int:
    """`info` on a directory that holds only a recipe: a start-up killed before the first save."""
    from clipterm import recipe as rc
    from clipterm import session as sess

    r = rc.read(args.session)
    assert r is not None
    holder = sess.lock_holder(args.session)
    data = {
        "path": str(args.session),
        "recipe_only": True,
        "prompt": r.prompt,
        "model": {"name": r.model, "pretrained": r.pretrained},
        "seed": r.seed,
        "steps": 0,
        "created": r.created,
        "eval_every": r.eval_every,
        "frame_every": r.frame_every,
        "lanes": {n: {"preset": spec.preset, "parts": spec.describe()} for n, spec in r.lanes.items()},
        # lanes the model that loads picks from: for a shapes model ("shapes"), or for any other ("other")
        "world_lanes": {w: {n: spec.preset for n, spec in lanes.items()} for w, lanes in r.world_lanes.items()},
        "init": {"source": r.init_source, "sha256": r.init_sha256} if r.init_sha256 else None,
        "open_by_pid": holder,
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    state = f"being created by pid {printable(holder)}" if holder else "start-up did not finish"
    print(f"session  {printable(str(args.session))}   ({state}: only its recipe; `clipterm run` starts it)")
    print(f"prompt   {printable(r.prompt)}")
    print(f"model    {printable(r.model or 'default')}" + (f" ({printable(r.pretrained)})" if r.pretrained else ""))
    print(f"steps    0   seed {r.seed}")
    if r.init_sha256:
        print(f"init     {printable(r.init_source)} (pixels sha256 {r.init_sha256[:12]}…, a copy in init.png)")
    for n, row in data["lanes"].items():
        where = {"shapes": "on a shapes model", "other": "on any other"}
        picks = [f"{printable(lanes[n])} {where[w]}" for w, lanes in data["world_lanes"].items() if n in lanes]
        follows = f"  (the model picks: {', '.join(picks)})" if picks else ""
        print(f"lane {printable(n):<4} {printable(row['preset']):<14} [{printable(row['parts'])}]{follows}")
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    """Per image: its top label and the prompt's rank (the line scripts read), then with --prompt the
    verdict line `judge NAME: prompt ranked #k of N; top: LABEL (sim)`, then the next labels."""
    from clipterm.judge import load_judge, read_image

    images = [(p, read_image(p)) for p in args.images]
    judge = load_judge(args.judge, args.labels, args.device, args.pretrained)
    for path, img in images:
        v = judge.rank_image(img, args.prompt)
        line = f"{printable(str(path))}: {v.top!r} {v.top_score:.4f}"
        if args.prompt is not None:
            line += f"  | prompt rank {v.prompt_rank}/{len(v.captions)} ({v.prompt_score:.4f})"
        print(line)
        if args.prompt is not None:
            print(f"  {v.line(judge.name)}")
        for cap, score in list(zip(v.captions, v.scores))[1 : args.top]:
            print(f"    {score:.4f}  {printable(cap)}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from clipterm.score import score_images

    table = score_images(
        args.images, args.prompt, args.models or ["shapes-a", "shapes-b"], args.device, baseline=args.baseline, log=err
    )
    print(json.dumps(table.to_dict(), indent=2) if args.json else table.render())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from clipterm.export import export

    for path in export(args.session, args.lane, args.format, args.out, args.scale):
        print(path)
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from clipterm.analysis import analyze

    for path in analyze(args.session, args.out, log=err):
        print(path)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from clipterm import shapes

    if args.lr <= 0 or args.lr != args.lr:
        raise ClipTermError("--lr must be positive")
    if args.steps < 1 or args.batch < 2:
        raise ClipTermError("--steps must be >= 1 and --batch >= 2")
    if not 0 <= args.adversarial <= 0.5:
        raise ClipTermError("--adversarial must be between 0 and 0.5 (a radius in [0, 1] pixel units)")
    rep = shapes.train(
        args.arch,
        args.seed,
        args.out,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        log=lambda m: print(m, file=sys.stderr, flush=True),
        adversarial=args.adversarial,
    )
    print(json.dumps(rep))
    return 0


def cmd_train_prior(args: argparse.Namespace) -> int:
    from clipterm import prior
    from clipterm.outputs import check_output

    if args.steps < 1 or args.batch < 2:
        raise ClipTermError("--steps must be >= 1 and --batch >= 2")
    check_output(args.out)
    rep = prior.train(
        args.out,
        args.seed,
        args.steps,
        args.batch,
        figures=args.figures,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    print(json.dumps(rep))
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    """One line per preset: name, its parts, where it comes from (and the user file that overrides
    it) and which default lane it is; the sources vary most in length, so they come last."""
    from clipterm import presets

    for w in presets.warnings():
        err(f"warning: {w}")
    table = presets.available()
    roles: dict[str, list[str]] = {}
    for lane, (on_shapes, on_other) in _defaults().items():
        if on_shapes == on_other:
            roles.setdefault(on_shapes, []).append(f"lane {lane.upper()}")
        else:
            roles.setdefault(on_shapes, []).append(f"lane {lane.upper()} on shapes models")
            roles.setdefault(on_other, []).append(f"lane {lane.upper()} on other models")
    width = max(len(n) for n in table)
    parts = {name: p.spec.describe() for name, p in table.items()}
    parts_width = max(len(x) for x in parts.values())
    for name, p in table.items():
        origin = p.source if p.origin == "shipped" else f"{p.source or 'user'} ({p.origin})"
        print(f"{name:<{width}}  {parts[name]:<{parts_width}}  " + " · ".join([origin, *roles.get(name, [])]))
    return 0


def cmd_units(args: argparse.Namespace) -> int:
    """One line per channel, most active first: channel, mean activation, share of the block's total."""
    from clipterm.channels import rank_channels

    r = rank_channels(args.session, args.block, args.lane, args.device)
    err(
        f"block {r.block} ({r.block_name}) of {r.model}, lane {printable(r.lane)} at step {r.step}: "
        f"{len(r.rows)} channels by mean activation (share: of the sum of |means|)"
    )
    for row in r.rows[: args.top or None]:
        print(f"{row.channel:>5}  {row.mean:+.5f}  {row.share:+.2%}")
    return 0


def cmd_render_shapes(args: argparse.Namespace) -> int:
    from clipterm.examples import render_shapes

    paths = render_shapes(args.n, args.dir, args.seed)
    err(f"wrote {len(paths) - 1} renders and {paths[-1].name} to {args.dir}")
    return 0


def cmd_examples(args: argparse.Namespace) -> int:
    from clipterm.examples import examples

    if args.batch < 1:
        raise ClipTermError("--batch must be at least 1")
    for path in examples(
        args.model, args.pretrained, args.device, args.block, args.channel, args.dir, args.out, args.quiet, args.batch
    ):
        print(path)
    return 0


def cmd_app(argv: list[str]) -> int:
    args = build_app_parser().parse_args(argv)
    from clipterm.app import run_app

    return run_app(args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help", "--version"):
            return cmd_app(argv)
        args = build_parser().parse_args(argv)
        handler = {
            "run": cmd_run,
            "info": cmd_info,
            "judge": cmd_judge,
            "train-shapes": cmd_train,
            "train-prior": cmd_train_prior,
            "score": cmd_score,
            "export": cmd_export,
            "analyze": cmd_analyze,
            "presets": cmd_presets,
            "units": cmd_units,
            "render-shapes": cmd_render_shapes,
            "examples": cmd_examples,
        }
        return handler[args.command](args)
    except ClipTermError as e:
        err(f"error: {e}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        err("interrupted")
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
