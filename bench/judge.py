"""Quality yardstick: for every base prompt and preset, own-model vs judge similarity and judge top-1.

    python bench/judge.py [--steps 200] [--model shapes-a] [--judge shapes-b] [--prompts N]

Each prompt is optimized on --model; the final canvas is saved as an 8-bit image and shown to the
judge, an independently trained model. 'judge top-1' is the fraction of prompts whose own caption
the judge ranks first among the 24 base captions. Prints a Markdown table (pasted into README).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from clipterm.engine import Engine
from clipterm.judge import Judge
from clipterm.models import load_model
from clipterm.presets import preset, with_value
from clipterm.shapes import base_captions

CONFIGS = {
    "unconstrained": preset("unconstrained"),
    "constrained": preset("constrained"),
    "constrained, 8 views, TV 1e-3": with_value(with_value(preset("constrained"), "views", 8), "tv_weight", 1e-3),
    "self-guided": preset("self-guided"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--model", default="shapes-a")
    ap.add_argument("--judge", default="shapes-b")
    ap.add_argument("--prompts", type=int, default=24, help="use the first N base captions")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    bundle = load_model(args.model, device="auto")
    judge = Judge(load_model(args.judge, device=bundle.device.type))
    prompts = base_captions()[: args.prompts]
    names = list(CONFIGS)
    rows: dict[str, dict[str, list[float]]] = {n: {"own": [], "judge": [], "top1": []} for n in names}
    t0 = time.time()
    for prompt in prompts:
        for pair in (names[0:2], names[2:4]):  # two presets per engine: one batched pass for both
            e = Engine(bundle, prompt, {"a": CONFIGS[pair[0]], "b": CONFIGS[pair[1]]}, seed=args.seed, eval_every=0)
            e.step(args.steps)
            e.flush()
            for lane, name in zip("ab", pair):
                v = judge.rank_canvas(e.shown(lane), prompt)
                rows[name]["own"].append(float(e.lanes[lane].history[-1, 0]))
                rows[name]["judge"].append(float(v.prompt_score))
                rows[name]["top1"].append(float(v.top == prompt))
    elapsed = time.time() - t0
    print(f"model {args.model} -> judge {args.judge}, {len(prompts)} base prompts, {args.steps} steps, "
          f"seed {args.seed}, device {bundle.device}, {elapsed:.0f}s\n")
    print("| preset | similarity on own model | similarity on judge | judge ranks the prompt first |")
    print("| --- | --- | --- | --- |")
    for name in names:
        r = rows[name]
        print(f"| {name} | {np.mean(r['own']):.3f} | {np.mean(r['judge']):.3f} | {np.mean(r['top1']):.0%} |")


if __name__ == "__main__":
    main()
