"""Step time of the lane parts, measured side by side in one process (interleaved repetitions).

    python bench/parts.py --model ViT-B-32 --pretrained none --device cpu --views 8

1. Parameterizations: one `constrained` lane at --views views painted through pixel, fourier and
   pyramid; the table gives each one's median step time and its ratio to pixel (target: <= 1.10).
2. Lanes: four lanes (pixel, fourier, pyramid, pixel+cutouts, 2 views each) in one engine against
   the same four lanes each in its own engine; the ratio of the one engine's step time to the sum
   of the four (target: <= 1.00), and how many image-tower forwards one step of the four makes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from clipterm.engine import Engine
from clipterm.models import load_model
from clipterm.presets import preset
from clipterm.runner import extra_models

PROMPT = "a red circle on a black background"


def timed(engine: Engine, steps: int) -> float:
    t0 = time.perf_counter()
    engine.step(steps)
    engine.flush()
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)
    return (time.perf_counter() - t0) / steps


def rep_times(engines: dict[str, Engine], steps: int, reps: int, warmup: int) -> dict[str, list[float]]:
    """Each engine's step time per repetition, in order (a preset with a trial changes speed mid-run)."""
    for e in engines.values():
        e.step(warmup)
        e.flush()
    times: dict[str, list[float]] = {k: [] for k in engines}
    for _ in range(reps):  # interleaved, so drift in machine load hits every variant alike
        for k, e in engines.items():
            times[k].append(timed(e, steps))
    return times


def median_times(engines: dict[str, Engine], steps: int, reps: int, warmup: int) -> dict[str, float]:
    return {k: statistics.median(v) for k, v in rep_times(engines, steps, reps, warmup).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default="none")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2, help="steps per timed repetition")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--versus", nargs="*", default=[], help="presets to time against constrained at their view count")
    ap.add_argument("--only-versus", action="store_true", help="skip the parameterization and four-lane tables")
    args = ap.parse_args()
    bundle = load_model(args.model, args.pretrained, args.device)
    print(
        f"model {args.model} ({args.pretrained}), device {bundle.device}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, {args.steps} steps x {args.reps} reps (median)"
    )

    for name in args.versus:
        spec = preset(name)
        views = spec.value("views")
        pair = {name: spec, f"constrained, {views} views": preset("constrained").with_value("views", views)}
        models = extra_models(pair, bundle)  # an ensemble's other models (its cost is part of the step)
        engines = {k: Engine(bundle, PROMPT, {"a": s}, seed=0, eval_every=0, models=models) for k, s in pair.items()}
        reps = rep_times(engines, args.steps, args.reps, args.warmup)
        t = {k: statistics.median(v) for k, v in reps.items()}
        mean = {k: statistics.mean(v) for k, v in reps.items()}  # over the whole timed run, trial included
        (a, ta), (b, tb) = t.items()
        print(
            f"\n| {args.model}, {views} views | median step ms | steps/s | mean step ms over the timed steps |"
            f"\n| --- | --- | --- | --- |\n"
            f"| {a} ({spec.describe()}) | {ta * 1000:.0f} | {1 / ta:.2f} | {mean[a] * 1000:.0f} |\n"
            f"| {b} | {tb * 1000:.0f} | {1 / tb:.2f} | {mean[b] * 1000:.0f} |\n"
            f"| {a} / constrained step time | {ta / tb:.3f}x | | {mean[a] / mean[b]:.3f}x |"
        )
        for k, v in reps.items():
            print(f"per repetition, {k}: " + " ".join(f"{x * 1000:.0f}" for x in v) + " ms")
    if args.only_versus:
        return

    base = preset("constrained").with_value("views", args.views)
    engines = {
        name: Engine(bundle, PROMPT, {"a": base.with_value("param", name)}, seed=0, eval_every=0)
        for name in ("pixel", "fourier", "pyramid")
    }
    t = median_times(engines, args.steps, args.reps, args.warmup)
    print(f"\n| parameterization ({args.views} views) | step ms | vs pixel |\n| --- | --- | --- |")
    for name, s in t.items():
        print(f"| {name} | {s * 1000:.0f} | {s / t['pixel']:.3f}x |")

    two = preset("constrained").with_value("views", 2)
    four = {
        "a": two,
        "b": two.with_value("param", "fourier"),
        "c": two.with_value("param", "pyramid"),
        "d": two.with_value("transforms", "cutouts"),
    }
    together = Engine(bundle, PROMPT, four, seed=0, eval_every=0)
    alone = {name: Engine(bundle, PROMPT, {name: spec}, seed=0, eval_every=0) for name, spec in four.items()}
    t = median_times({"together": together, **alone}, args.steps, args.reps, args.warmup)
    summed = sum(t[n] for n in four)
    per_step = together.forwards / together.step_count
    batch = sum(ln.n_views + 1 for ln in together.lanes.values())  # views + the clean canvas, every lane
    print(
        "\n| four lanes, 2 views each | step ms |\n| --- | --- |\n"
        + "".join(f"| lane {n} alone ({four[n].describe()}) | {t[n] * 1000:.0f} |\n" for n in four)
        + f"| sum of the four alone | {summed * 1000:.0f} |\n"
        f"| all four in one engine | {t['together'] * 1000:.0f} |\n"
        f"| ratio one engine / sum | {t['together'] / summed:.3f}x |\n"
        f"| image-tower forwards per step (one engine) | {per_step:g} (batch {batch}) |"
    )


if __name__ == "__main__":
    main()
