"""Prompt batches (seed 004's prompt list): `clipterm run OUTDIR --prompts-file FILE --steps N`.

One ordinary, resumable session per prompt under OUTDIR (named by a slug of the prompt), then a
summary table (summary.csv and summary.md) of each lane's own, robust and verified similarity and
an independent judge's verdict on the saved PNG, so "high own score, meaningless to the judge" is
visible across a whole prompt list at once. Running the same command again resumes every session
(to a larger --steps, or just to rebuild the table).
"""

from __future__ import annotations

import argparse
import csv
import io
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipterm import session as sess
from clipterm.errors import ClipTermError, SessionError, err
from clipterm.images import read_image, regular_input
from clipterm.initimage import InitImage, prepare
from clipterm.judge import DEFAULT_JUDGE, Judge, judge_from_flags
from clipterm.models import ModelBundle
from clipterm.outputs import check_output, write_file
from clipterm.prompts import PromptError, main_term, parse_prompt, slugify
from clipterm.text import content_lines, printable

SUMMARY_COLUMNS = (
    "prompt",
    "session",
    "lane",
    "preset",
    "steps",
    "own",
    "robust",
    "verified",
    "judge_sim",
    "judge_rank",
    "judge_candidates",
    "judge_top",
)


def read_prompts(path: Path) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are ignored; each is validated."""
    p = regular_input(Path(path), "prompts file")  # a directory or FIFO is named as such
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ClipTermError(f"{p}: not UTF-8 text") from None
    except OSError as e:
        raise ClipTermError(f"{p}: cannot read ({e.strerror})") from None
    prompts = []
    for n, line in content_lines(text, " \t"):
        try:
            parse_prompt(line)
        except PromptError as e:
            raise ClipTermError(f"{p}:{n}: {e}") from None
        prompts.append(line)
    if not prompts:
        raise ClipTermError(f"{p}: has no prompts (one per line; blank lines and #comments are ignored)")
    return prompts


def session_names(prompts: list[str]) -> list[str]:
    """Unique slugs in file order (a repeated slug gets -2, -3, ...), stable across re-runs."""
    used: set[str] = set()
    names = []
    for prompt in prompts:
        base = slugify(prompt)
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}-{k}"
        used.add(name)
        names.append(name)
    return names


class _Models:
    """Loads each model once for the whole batch (sessions of one batch usually share it)."""

    def __init__(self, args: argparse.Namespace, log) -> None:
        self.args = args
        self.log = log
        self.cache: dict[tuple, ModelBundle] = {}

    def _remember(self, bundle: ModelBundle) -> ModelBundle:
        from clipterm.runner import model_record

        rec = model_record(bundle)
        self.cache.setdefault((rec["name"], rec["pretrained"]), bundle)
        return bundle

    def for_new(self) -> ModelBundle:
        from clipterm.models import load_default, load_model

        a = self.args
        key = ("args", a.model, a.pretrained)
        if key not in self.cache:
            if a.model:
                bundle = load_model(a.model, a.pretrained, a.device)
            else:
                bundle, note = load_default(a.device)
                if note:
                    self.log(note)
            self.cache[key] = self._remember(bundle)
        return self.cache[key]

    def for_session(self, s: sess.Session) -> ModelBundle:
        from clipterm.runner import load_session_model, same_model

        a = self.args
        if a.model and not same_model(s.model, a.model, a.pretrained):
            raise SessionError(
                f"{s.path}: made with {s.model['name']}/{s.model['pretrained']}, not {a.model}; "
                f"batches do not retarget (use `clipterm run {s.path} --retarget` on it)"
            )
        key = (str(s.model["name"]), str(s.model["pretrained"]))
        if key not in self.cache:
            self.cache[key] = load_session_model(s.model, a.device)
        bundle = self.cache[key]
        want = s.model.get("sha256")
        if want and bundle.sha256 != want:
            raise SessionError(f"{s.path}: the checkpoint of {bundle.name} changed since this session was made")
        return bundle


def open_session(
    path: Path,
    prompt: str,
    args: argparse.Namespace,
    models: _Models,
    init: InitImage | None = None,
    log: Callable[[str], None] = err,
):
    """Create the prompt's session, or resume it (it must hold the same prompt, and with --init have
    started from that picture). `init`: the picture new sessions start from."""
    from clipterm.launch import apply_resume_flags, check_resume_flags, lane_specs_from_args
    from clipterm.modelnames import is_shapes_model
    from clipterm.probes import configure
    from clipterm.runner import Autosave, Run, check_fits

    autosave = Autosave(args.autosave_steps, args.autosave_seconds)
    if path.exists() and sess.is_session(path):
        holder = sess.lock_holder(path)
        if holder is not None:  # checked before locking so a refused session stays byte-identical
            raise SessionError(f"{path}: session is already open in another clipterm process (pid {holder})")
        s = sess.load(path)
        if s.prompt != prompt:
            raise SessionError(f"{path}: holds the prompt {s.prompt!r}, not {prompt!r}; use another OUTDIR")
        check_resume_flags(s, args, init)  # as `run` resumes one: seed, lanes, --init and settings
        bundle = models.for_session(s)
        check_fits(s, bundle)
        run = Run.resume(path, bundle, autosave)
        apply_resume_flags(run, args)
    else:
        bundle = models.for_new()
        run = Run.create(
            path,
            bundle,
            prompt,
            # --unit adds units beside each prompt; lane C's default follows the model's world
            lane_specs_from_args(args, prompt=True, shapes_world=is_shapes_model(bundle.name)),
            seed=args.seed or 0,
            eval_every=50 if args.eval_every is None else args.eval_every,
            frame_every=args.frame_every or 10,
            autosave=autosave,
            init=init,
        )
        for lane, error in run.init_fit.items():
            log(f"lane {lane}: init from {init.source if init else ''}, fit error {error:.4f} (max abs)")
    configure(run.engine, getattr(args, "probe_every", None))
    run.engine.configure(args.precision, args.compile, args.raw_every)
    return run


@dataclass
class LaneResult:
    prompt: str
    session: str
    lane: str
    preset: str
    steps: int
    own: float
    robust: float
    verified: float
    judge_sim: float = float("nan")
    judge_rank: int = 0
    judge_candidates: int = 0
    judge_top: str = ""

    def row(self) -> list[str]:
        f = lambda v: "" if v != v else f"{v:.4f}"  # noqa: E731 - NaN -> empty cell
        return [
            self.prompt,
            self.session,
            self.lane,
            self.preset,
            str(self.steps),
            f(self.own),
            f(self.robust),
            f(self.verified),
            f(self.judge_sim),
            str(self.judge_rank or ""),
            str(self.judge_candidates or ""),
            self.judge_top,
        ]


def lane_results(run, name: str) -> list[LaneResult]:
    """Own (last raw similarity), robust and verified (measured at the final step) per lane."""
    e = run.engine
    e.flush()
    if any(not len(ln.evals) or int(ln.evals[-1, 0]) != ln.steps for ln in e.lanes.values()):
        e.evaluate()
    out = []
    for lane, ln in e.lanes.items():
        own = float(ln.history[-1, 0]) if len(ln.history) else float("nan")
        robust, verified = (float(ln.evals[-1, 1]), float(ln.evals[-1, 2])) if len(ln.evals) else (np.nan, np.nan)
        out.append(LaneResult(e.prompt, name, lane, ln.spec.preset, ln.steps, own, robust, verified))
    return out


def judge_results(results: list[LaneResult], outdir: Path, judge: Judge) -> None:
    """The judge's similarity of each lane's final.png to the prompt, and its rank among its labels."""
    from clipterm.score import PromptScorer

    for r in results:
        img = read_image(outdir / r.session / sess.lane_dir_name(r.lane) / "final.png")
        r.judge_sim = PromptScorer(judge.bundle, r.prompt).score_image(img)
        v = judge.rank_image(img, main_term(r.prompt))
        r.judge_rank, r.judge_candidates, r.judge_top = int(v.prompt_rank or 0), len(v.captions), v.top


def _write_atomic(path: Path, text: str) -> None:
    write_file(path, text.encode("utf-8"))


def write_summary(outdir: Path, results: list[LaneResult], judge: Judge | None) -> tuple[Path, Path]:
    """summary.csv (one row per prompt and lane) and the same table as summary.md."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SUMMARY_COLUMNS)
    for r in results:
        w.writerow(r.row())
    csv_path, md_path = outdir / "summary.csv", outdir / "summary.md"
    _write_atomic(csv_path, buf.getvalue())

    def cell(text: str) -> str:
        return printable(text).replace("|", "\\|")  # summary.md is printed to the terminal at the end

    if judge is None:
        judged = "no judge (--judge none)."
    else:
        judged = (
            f"judge = {printable(judge.name)}'s similarity of final.png to the prompt, and its rank of the "
            f"prompt among {judge.labels.describe()} (plus the prompt when it is not one of them)."
        )
    lines = [
        f"# clipterm batch: {len({r.prompt for r in results})} prompts",
        "",
        f"own = last raw similarity on the optimized model; robust = mean over 16 held-out views; "
        f"verified = after an 8-bit PNG round trip; {judged}",
        "",
        "| " + " | ".join(SUMMARY_COLUMNS) + " |",
        "|" + "---|" * len(SUMMARY_COLUMNS),
    ]
    for r in results:
        lines.append("| " + " | ".join(cell(c) for c in r.row()) + " |")
    _write_atomic(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


def run_batch(args: argparse.Namespace, log: Callable[[str], None] = err) -> int:
    """The `run --prompts-file` command: every prompt to --steps, then the summary table."""
    from clipterm.launch import Progress, check_pretrained_flag

    if args.prompt is not None:
        raise ClipTermError("--prompt and --prompts-file are exclusive: put the prompt in the file")
    if args.retarget:
        raise ClipTermError("--retarget is not supported with --prompts-file; retarget sessions one by one")
    check_pretrained_flag(args)  # a batch never reads --pretrained without --model
    prompts = read_prompts(args.prompts_file)
    outdir = Path(args.out)
    if outdir.exists() and (not outdir.is_dir() or sess.is_session(outdir)):
        raise ClipTermError(f"{outdir}: must be a directory of sessions (it is a file or a single session)")
    check_output(outdir, "batch")  # not inside a session either
    if args.autosave_seconds < 0 or args.autosave_seconds != args.autosave_seconds:
        raise ClipTermError("--autosave-seconds must be >= 0")
    # a bad picture, judge or labels file is refused before OUTDIR is made; the judge before any long run
    init = prepare(args.init) if args.init is not None else None
    judge = judge_from_flags(args.judge or DEFAULT_JUDGE, args.labels, args.device)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ClipTermError(f"{outdir}: cannot create ({e.strerror})") from None
    models = _Models(args, log)
    names = session_names(prompts)
    stop = {"sig": 0}

    def on_signal(signum, _frame) -> None:
        stop["sig"] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    results: list[LaneResult] = []
    try:
        for k, (prompt, name) in enumerate(zip(prompts, names), 1):
            path = outdir / name
            run = open_session(path, prompt, args, models, init, log)
            try:
                if not args.quiet:
                    log(f"[{k}/{len(prompts)}] {prompt!r} -> {path} (step {run.steps})")
                progress = Progress(args.steps, run.steps, args.quiet)
                while run.steps < args.steps and not stop["sig"]:
                    run.step()
                    if run.steps % 10 == 0 or run.steps == args.steps:
                        run.engine.flush()
                        progress.update(run.steps, {n: float(ln.history[-1, 0]) for n, ln in run.engine.lanes.items()})
                if stop["sig"]:
                    run.save()
                    log(f"stopped by signal {stop['sig']} at step {run.steps} of {path}; saved it")
                    return 128 + stop["sig"]
                results.extend(lane_results(run, name))
                run.save()
            finally:
                run.close()
        if judge is not None:
            judge_results(results, outdir, judge)
        csv_path, md_path = write_summary(outdir, results, judge)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if not args.quiet:
        log(f"{len(prompts)} sessions in {outdir}; summary in {csv_path} and {md_path}")
    print(md_path.read_text(encoding="utf-8"), end="")
    return 0
