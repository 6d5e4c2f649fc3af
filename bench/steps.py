"""Steps per second: the clipterm engine against a reference loop written like seed 004's script.

    python bench/steps.py --model ViT-B-32 --pretrained none --device cpu --views 1 8 --lanes ab

The reference does, per step and lane, one forward/backward per augmented view in fp32 and calls
`.item()` after each (as the seed does); the engine does the same views of both lanes in ONE batched
pass with metrics kept on the device. Both run the same number of views, interleaved in one
process, after warm-up; median and spread over repetitions are printed, plus the ratio.
`--pretrained none` builds the architecture with untrained weights (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from clipterm import augment, losses
from clipterm.engine import Engine
from clipterm.models import load_model, stock_layout
from clipterm.presets import preset

PROMPT = "a red circle on a black background"
# libkineto (the torch profiler's native side) logs to file descriptor 2 in its own format, e.g.
# "USDT:2026-11-25 11:04:47 21649:21649 SyncActivityProfilerHandler.cpp:39] profiler_start".
KINETO_LINE = re.compile(r"^(USDT|VERBOSE|INFO|WARNING|STAGE|ERROR):\d{4}-\d\d-\d\d [\d:]+ \d+:\d+ \S+\.cpp:\d+\] ")


@contextlib.contextmanager
def without_kineto_log() -> Iterator[None]:
    """Keep libkineto's log lines out of the bench's output (they are not ours to print).

    libkineto writes them from C++ straight to file descriptor 2 (not through sys.stderr), so fd 2
    is pointed at a temporary file for the profiled region; afterwards every line that is not in
    kineto's format goes to stderr as it would have, so a real warning or error is never lost.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode(errors="replace").splitlines(True) if not KINETO_LINE.match(ln)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def step_peak_mib(fn, device: torch.device, steps: int = 2) -> float:
    """Peak memory that `steps` calls of fn allocate on top of what was allocated before them.

    CUDA: the caching allocator's peak. CPU: the process's resident set never shrinks back, so it
    cannot tell one variant's peak from the next; instead the profiler's record of every tensor
    allocation and free is replayed in time order and the running total's maximum is taken.
    """
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(steps):
            fn()
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with without_kineto_log(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(steps):
            fn()
    total = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        total += event.self_cpu_memory_usage
        peak = max(peak, total)
    return peak / 2**20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Reference:
    """Seed 004's loop shape: per lane, per view, forward + backward + .item(); fp32; Adam 0.05.

    It runs on open_clip's stock layout of the same weights (`stock_layout`), as the seed did; the
    engine's model has the CPU fast paths of `models.adapt_for_cpu` (the same model on CUDA).
    """

    def __init__(self, bundle, lanes: dict[str, object], seed: int) -> None:
        self.bundle = dataclasses.replace(bundle, model=stock_layout(bundle.model))
        bundle = self.bundle
        with torch.no_grad():
            self.text = F.normalize(bundle.model.encode_text(bundle.tokenize([PROMPT])).float(), dim=-1)
        size = bundle.image_size
        noise = torch.randn((1, 3, size, size), generator=torch.Generator().manual_seed(seed)).to(bundle.device)
        self.lanes = []
        for name, spec in lanes.items():
            img = (0.5 + 0.1 * noise).clone().requires_grad_(True)
            gen = torch.Generator().manual_seed(seed + ord(name))
            self.lanes.append((spec, img, torch.optim.Adam([img], lr=spec.value("lr")), gen))

    def step(self) -> None:
        b = self.bundle
        for spec, img, opt, gen in self.lanes:
            opt.zero_grad()
            augmented = spec.views.augment
            n = spec.views.views if augmented else 1
            a = spec.transforms[0].settings
            for _ in range(n):
                x = img
                if augmented:
                    theta = augment.sample_affine(gen, 1, a.degrees, a.translate, a.scale_min, a.scale_max, a.flip_p)
                    x = augment.apply_affine(img, theta)
                feat = F.normalize(b.model.encode_image((x - b.mean_t) / b.std_t).float(), dim=-1)
                sim = (feat @ self.text.T).squeeze()
                loss = (1 - sim) / n
                if spec.value("tv_weight"):
                    loss = loss + spec.value("tv_weight") * losses.tv_l2(img) / n
                loss.backward()
                sim.item()
            opt.step()
            with torch.no_grad():
                img.clamp_(0, 1)


def time_steps(fn, steps: int, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return time.perf_counter() - t0


def count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default="none")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--views", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--lanes", default="ab", choices=("ab", "a", "b"))
    ap.add_argument("--steps", type=int, default=4, help="steps per timed repetition")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument(
        "--peak-tflops",
        type=float,
        default=989.0,
        help="device peak for the utilisation estimate (H100 SXM dense bf16: 989)",
    )
    ap.add_argument("--compile", action="store_true", help="also time the engine with torch.compile")
    args = ap.parse_args()

    bundle = load_model(args.model, args.pretrained, args.device)
    dev = bundle.device
    print(
        f"model {args.model} ({args.pretrained}), device {dev}"
        f"{' ' + torch.cuda.get_device_name(dev) if dev.type == 'cuda' else ''}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, lanes {args.lanes}, {args.steps} steps x {args.reps} reps"
    )
    print(
        "| views | engine variant | reference steps/s | engine steps/s | engine views/s "
        "| speed-up (ref time / engine time) | ref step peak MiB | engine step peak MiB | engine MFU |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    variants = {"default (raw sim every step)": 1, "raw sim every 10 steps (same work as ref)": 10}
    for views in args.views:
        lanes = {}
        if "a" in args.lanes:
            lanes["a"] = preset("unconstrained")
        if "b" in args.lanes:
            lanes["b"] = preset("constrained").with_value("views", views)
        views_per_step = sum(s.views.views if s.views.augment else 1 for s in lanes.values())
        ref = Reference(bundle, lanes, seed=0)
        engines = {}
        for label, raw_every in variants.items():
            engines[label] = Engine(bundle, PROMPT, lanes, seed=0, eval_every=0, raw_every=raw_every)
            if args.compile:
                engines[label + ", compiled"] = Engine(
                    bundle, PROMPT, lanes, seed=0, eval_every=0, raw_every=raw_every, compile=True
                )
        for _ in range(args.warmup):
            ref.step()
            for eng in engines.values():
                eng.step()
                eng.flush()
        times: dict[str, list[float]] = {"ref": [], **{k: [] for k in engines}}
        for _ in range(args.reps):  # interleaved so drift in machine load hits all alike
            times["ref"].append(time_steps(ref.step, args.steps, dev))
            for label, eng in engines.items():
                times[label].append(time_steps(eng.step, args.steps, dev))
                eng.flush()
        peaks = {"ref": step_peak_mib(ref.step, dev)}
        for label, eng in engines.items():
            peaks[label] = step_peak_mib(lambda eng=eng: (eng.step(), eng.flush()), dev)
        r = statistics.median(times["ref"])
        for label, eng in engines.items():
            e = statistics.median(times[label])
            mfu = "n/a (cpu)"
            if dev.type == "cuda":
                flops = count_flops(eng.step)
                mfu = f"{flops / (e / args.steps) / (args.peak_tflops * 1e12):.1%}"
            print(
                f"| {views} | {label} | {args.steps / r:.2f} (±{spread(times['ref']):.0f}%) | {args.steps / e:.2f} "
                f"(±{spread(times[label]):.0f}%) | {views_per_step * args.steps / e:.1f} | {r / e:.2f}x "
                f"| {peaks['ref']:.0f} | {peaks[label]:.0f} | {mfu} |",
                flush=True,
            )


def spread(ts: list[float]) -> float:
    """(max - min) / median, in percent."""
    return (max(ts) - min(ts)) / statistics.median(ts) * 100


if __name__ == "__main__":
    main()
