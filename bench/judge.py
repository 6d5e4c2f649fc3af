"""Recognition yardstick: does an independent model see the prompt in what a preset paints?

    python bench/judge.py [--presets P ...] [--variant NAME=PRESET,key=value ...] [--judges shapes-b shapes-c]
                          [--steps 200] [--seeds 3] [--prompts 24] [--model shapes-a] [--sheets DIR]
                          [--records FILE]

Each of the 24 base prompts is optimized on --model with every preset (all presets of a prompt are
lanes of one engine: one batched pass per step; a lane's result does not depend on its neighbours).
The final canvas, as an 8-bit image, is shown to each judge: models trained separately, never
optimized against. 'top-1' is the fraction of prompts whose own caption the judge ranks first among
the 24 base captions (chance: 4 %). A judge that is part of a preset's objective (an ensemble) is
not a judge for that preset: its cells read '—'. A second table splits each judge's first caption
into what it gets right: the colour (chance 25 %), the shape (33 %) and the ground (50 %), so a
top-1 that comes from colour alone shows as such.

Held-out discipline: tune with --judges shapes-b (and shapes-d for ensembles that contain shapes-b)
only; shapes-c is looked at once, for the report.
With --seeds K every number is the mean over seeds 0..K-1 with the range of the per-seed means.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from clipterm.engine import Engine
from clipterm.judge import Judge
from clipterm.lanespec import MAX_LANES, LaneSpec, apply_pairs
from clipterm.launch import parse_lane_arg
from clipterm.models import load_model
from clipterm.presets import preset
from clipterm.runner import extra_models
from clipterm.shapes import base_attrs, base_captions

DEFAULT_PRESETS = ("unconstrained", "constrained", "lucid", "pyramid", "cutouts", "ensemble")
ATTRS = ("colour", "shape", "ground")  # the parts of a base caption, in base_attrs' order


def configs(args: argparse.Namespace) -> dict[str, LaneSpec]:
    out = {name: preset(name) for name in args.presets}
    for text in args.variant or []:
        name, base, pairs = parse_lane_arg(text)
        out[name] = apply_pairs(preset(base), pairs)
    return out


def lane_name(preset_name: str) -> str:
    """A valid lane name from a preset or variant name (self-guided -> self_guided)."""
    return ("p" + "".join(c if c.isalnum() else "_" for c in preset_name.lower()))[:16]


def run_prompt(bundle, models, specs: dict[str, LaneSpec], prompt: str, seed: int, steps: int) -> dict:
    """Every spec's final canvas and own similarity for one prompt, MAX_LANES lanes per engine."""
    names = list(specs)
    out = {}
    for i in range(0, len(names), MAX_LANES):
        chunk = names[i : i + MAX_LANES]
        # a lane's view stream depends on its name: name lanes after their preset, not their position
        lanes = {lane_name(n): specs[n] for n in chunk}
        e = Engine(bundle, prompt, lanes, seed=seed, eval_every=0, models=models)
        e.step(steps)
        e.flush()
        for n in chunk:
            out[n] = (e.shown(lane_name(n)), float(e.lanes[lane_name(n)].history[-1, 0]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="*", default=list(DEFAULT_PRESETS))
    ap.add_argument("--variant", action="append", help="NAME=PRESET,key=value,... (as --lane)")
    ap.add_argument("--judges", nargs="+", default=["shapes-b"])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=24, help="use the first N base captions")
    ap.add_argument("--model", default="shapes-a")
    ap.add_argument("--sheets", type=Path, default=None, help="write a contact sheet per preset and seed")
    ap.add_argument("--records", type=Path, default=None, help="write one JSON line per preset, seed and prompt")
    args = ap.parse_args()

    specs = configs(args)
    bundle = load_model(args.model, device="auto")
    models = extra_models(specs, bundle)
    judges = {j: Judge(load_model(j, device=bundle.device.type)) for j in args.judges}
    prompts = base_captions()[: args.prompts]
    attrs = dict(zip(base_captions(), base_attrs()))  # caption -> (colour, shape, ground)
    # rows[name][metric] = per seed, the values over prompts
    rows: dict[str, dict[str, list[list[float]]]] = {n: {} for n in specs}
    pictures: dict[tuple[str, int], list[np.ndarray]] = {(n, s): [] for n in specs for s in range(args.seeds)}
    records: list[dict] = []
    t0 = time.time()
    for seed in range(args.seeds):
        for r in rows.values():
            for metric in ("own", *[f"{j}/{m}" for j in judges for m in ("sim", "top1", *ATTRS)]):
                r.setdefault(metric, []).append([])
        for prompt in prompts:
            for name, (canvas, own) in run_prompt(bundle, models, specs, prompt, seed, args.steps).items():
                rows[name]["own"][-1].append(own)
                pictures[name, seed].append(canvas)
                record = {"preset": name, "seed": seed, "prompt": prompt, "own": own}
                for jname, judge in judges.items():
                    v = judge.rank_canvas(canvas, prompt)
                    rows[name][f"{jname}/sim"][-1].append(float(v.prompt_score))
                    rows[name][f"{jname}/top1"][-1].append(float(v.top == prompt))
                    for attr, got, want in zip(ATTRS, attrs[v.top], attrs[prompt]):  # the top is a base caption
                        rows[name][f"{jname}/{attr}"][-1].append(float(got == want))
                    record[jname] = {"sim": float(v.prompt_score), "top": v.top}
                records.append(record)
        print(f"seed {seed} done, {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    elapsed = time.time() - t0
    seeds = "seed 0" if args.seeds == 1 else f"seeds 0..{args.seeds - 1} (mean [min–max of the per-seed means])"
    print(
        f"optimized on {args.model}; judges {', '.join(judges)}; {len(prompts)} base prompts, {args.steps} steps, "
        f"{seeds}, device {bundle.device}, {elapsed:.0f}s\n"
    )
    head = "| preset | parts | similarity on own model(s) |"
    head += "".join(f" similarity on {j} | top-1 on {j} |" for j in judges)
    print(head + "\n" + "| --- " * (3 + 2 * len(judges)) + "|")
    for name, spec in specs.items():
        line = f"| {name} | {spec.describe()} | {_cell(rows[name]['own'], '.3f')} |"
        for j in judges:
            if j in spec.models():
                line += " — | — |"
            else:
                line += f" {_cell(rows[name][f'{j}/sim'], '.3f')} | {_cell(rows[name][f'{j}/top1'], '.0%')} |"
        print(line)
    print_parts(specs, rows, judges)
    if args.records is not None:
        args.records.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        print(f"records: {args.records}")
    if args.sheets is not None:
        args.sheets.mkdir(parents=True, exist_ok=True)
        for (name, seed), canvases in pictures.items():
            path = args.sheets / (f"{name}.png" if seed == 0 else f"{name}-seed{seed}.png")
            prompt_sheet(canvases, prompts, f"{name} on {args.model}, {args.steps} steps, seed {seed}", path)
            print(f"sheet: {path}")


def print_parts(specs: dict[str, LaneSpec], rows: dict, judges: dict) -> None:
    """What each judge's first caption gets right, per preset: its colour, shape and ground."""
    head = "| preset |" + "".join(f" {a} right on {j} |" for j in judges for a in ATTRS)
    print("\n" + head + "\n" + "| --- " * (1 + len(ATTRS) * len(judges)) + "|")
    for name, spec in specs.items():
        cells = [
            " — |" if j in spec.models() else f" {_cell(rows[name][f'{j}/{a}'], '.0%')} |"
            for j in judges
            for a in ATTRS
        ]
        print(f"| {name} |" + "".join(cells))


def prompt_sheet(canvases: list[np.ndarray], prompts: list[str], title: str, out: Path) -> None:
    """One picture per prompt, 6 to a row, each upscaled 3x with its prompt under it (Pillow's font)."""
    from PIL import Image, ImageDraw

    from clipterm.export import to_uint8, upscale

    cols, k, pad, text_h = 6, 3, 8, 28
    side = canvases[0].shape[-1] * k
    rows = -(-len(canvases) // cols)
    sheet = Image.new("RGB", (cols * (side + pad) + pad, 24 + rows * (side + text_h + pad)), (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 6), title, fill=(235, 235, 235))
    for i, (canvas, prompt) in enumerate(zip(canvases, prompts)):
        x, y = pad + (i % cols) * (side + pad), 24 + (i // cols) * (side + text_h + pad)
        sheet.paste(upscale(Image.fromarray(to_uint8(canvas)), k), (x, y))
        words = prompt.removeprefix("a ").split(" on ")
        for j, line in enumerate((words[0], "on " + words[1] if len(words) > 1 else "")):
            draw.text((x, y + side + 2 + 12 * j), line, fill=(160, 160, 170))
    sheet.save(out)


def _cell(values: list[list[float]], fmt: str) -> str:
    """Mean over seeds and prompts; with several seeds, the range of the per-seed means too."""
    per_seed = np.array(values).mean(axis=1)
    mean = format(float(per_seed.mean()), fmt)
    if len(per_seed) == 1:
        return mean
    return f"{mean} [{format(float(per_seed.min()), fmt)}–{format(float(per_seed.max()), fmt)}]"


if __name__ == "__main__":
    main()
