"""Key-to-screen latency of the app while its worker optimizes flat out, and frames shown per second.

    python bench/latency.py                       # shapes-a on the CPU, 40 + 20 key presses
    python bench/latency.py --device cuda --presses 100 --json

The app runs headless (Textual's test driver) at 160x48, so "screen" means: the compositor has
rendered the update that shows the key's effect (App._display was called after the change).
Two kinds of key are timed:
  t  toggle the lane: handled by the UI alone (the worker must never delay it);
  m  flip the preset: a round trip through the worker's command queue, applied between steps,
     then shown by the next snapshot (bounded by one optimization step).
A terminal adds its own drawing time on top of these numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from textual import events


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


async def _bench(
    app, presses: int, roundtrips: int, warmup: float, idle: bool = False, gap: tuple[float, float] = (0.05, 0.2)
) -> dict:
    displays: list[float] = []
    real_display = app._display

    def display(screen, renderable) -> None:  # every rendered screen update, timestamped
        real_display(screen, renderable)
        if renderable is not None:
            displays.append(time.perf_counter())

    app._display = display

    draws: list[tuple[float, str, str | None]] = []  # (time, active lane, its preset) at each redraw
    real_draw = app._draw

    def draw() -> None:
        snap = app.snapshot
        lane = snap.lanes.get(app.active) if snap else None
        draws.append((time.perf_counter(), app.active, lane.spec.preset if lane else None))
        real_draw()

    app._draw = draw

    def drawn_since(t: float, cond) -> float:
        """When the app first redrew with the key's effect (the screen update that shows it follows)."""
        return next(d for d, lane, preset in draws if d > t and cond(lane, preset))

    async def shown_after(t: float, timeout: float = 10.0) -> float:
        end = time.perf_counter() + timeout
        while time.perf_counter() < end:
            later = [d for d in displays if d > t]
            if later:
                return later[0]
            await asyncio.sleep(0.0005)
        raise TimeoutError("no screen update")

    async def until(cond, timeout: float = 30.0) -> None:
        end = time.perf_counter() + timeout
        while not cond():
            if time.perf_counter() > end:
                raise TimeoutError("condition not met")
            await asyncio.sleep(0.0005)

    async with app.run_test(size=(160, 48)) as pilot:
        await until(lambda: app.snapshot is not None and app.snapshot.running != idle)
        await asyncio.sleep(warmup)
        steps0, frames0, t_start = app.snapshot.steps, app.frames_shown, time.perf_counter()

        ui: list[float] = []
        ui_cpu: list[float] = []
        for _ in range(presses):
            before = app.active
            c0, t0 = time.thread_time(), time.perf_counter()
            app.post_message(events.Key("t", "t"))  # what the terminal driver posts for a key
            await until(lambda b=before: app.active != b)
            changed = drawn_since(t0, lambda lane, _p, b=before: lane != b)
            ui.append((await shown_after(changed) - t0) * 1000)
            ui_cpu.append((time.thread_time() - c0) * 1000)  # the UI thread's own CPU time for it
            await asyncio.sleep(random.uniform(*gap))

        worker: list[float] = []
        for _ in range(roundtrips):
            lane = app.active
            cur = app.snapshot.lanes[lane].spec.preset
            want = "unconstrained" if cur == "constrained" else "constrained"
            t0 = time.perf_counter()
            app.post_message(events.Key("m", "m"))
            await until(lambda ln=lane, w=want: app.snapshot.lanes[ln].spec.preset == w)
            changed = drawn_since(t0, lambda _lane, preset, w=want: preset == w)
            worker.append((await shown_after(changed) - t0) * 1000)
            await asyncio.sleep(random.uniform(*gap))

        elapsed = time.perf_counter() - t_start
        steps = app.snapshot.steps - steps0
        frames = app.frames_shown - frames0
        await pilot.press("q")
        await until(lambda: not app.is_running, timeout=60)
    return {
        "ui_key_ms": {"n": len(ui), "p50": percentile(ui, 0.5), "p95": percentile(ui, 0.95), "max": max(ui)},
        "worker_key_ms": {
            "n": len(worker),
            "p50": percentile(worker, 0.5),
            "p95": percentile(worker, 0.95),
            "max": max(worker) if worker else float("nan"),
        },
        "frames_per_s": frames / elapsed,
        "steps_per_s": steps / elapsed,
        "seconds": elapsed,
        "mean_step_ms": 1000 * elapsed / steps if steps else float("nan"),
        "ui_key_mean_ms": statistics.fmean(ui),
        "ui_key_cpu_ms": {"p50": percentile(ui_cpu, 0.5), "p95": percentile(ui_cpu, 0.95)},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="shapes-a")
    p.add_argument("--device", default="cpu")
    p.add_argument("--fps", type=float, default=4.0)
    p.add_argument("--presses", type=int, default=40, help="lane toggles (UI-only keys) to time")
    p.add_argument("--roundtrips", type=int, default=20, help="preset flips (worker round trips) to time")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of running before timing")
    p.add_argument("--idle", action="store_true", help="baseline: the same keys with the worker paused")
    p.add_argument(
        "--gap",
        type=float,
        nargs=2,
        default=(0.05, 0.2),
        metavar=("LO", "HI"),
        help="seconds between one key's effect on screen and the next key, drawn uniformly (0.05 0.2: a run of"
        " keys; 0.5 1.0: lone keys)",
    )
    p.add_argument("--lanes", default="ab", help="the app's lanes (ab: the same work for old and new code)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--torch-threads", type=int, default=None, help="override the app's torch CPU thread count")
    p.add_argument("--switch-interval", type=float, default=None, help="sys.setswitchinterval (seconds)")
    args = p.parse_args(argv)
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)

    from clipterm.app import build_app, settle_heap
    from clipterm.cli import build_app_parser

    with tempfile.TemporaryDirectory(prefix="clipterm-bench-") as tmp:
        app_args = build_app_parser().parse_args(
            [
                str(Path(tmp) / "bench"),
                "--model",
                args.model,
                "--device",
                args.device,
                "--judge",
                "none",
                "--render",
                "halfcell",
                "--fps",
                str(args.fps),
                "--autosave-steps",
                "0",
                "--autosave-seconds",
                "0",
                "--lanes",
                args.lanes,
            ]
            + (["--paused"] if args.idle else [])
        )
        app = build_app(app_args)
        settle_heap()  # as run_app does
        if args.torch_threads:
            import torch

            torch.set_num_threads(args.torch_threads)
        try:
            res = asyncio.run(_bench(app, args.presses, args.roundtrips, args.warmup, args.idle, tuple(args.gap)))
        finally:
            app.controller.shutdown()
    res.update(model=args.model, device=args.device, fps_target=args.fps, idle=args.idle, gap=list(args.gap))
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    u, w = res["ui_key_ms"], res["worker_key_ms"]
    state = (
        "worker paused (baseline)"
        if args.idle
        else (f"worker running flat out ({res['steps_per_s']:.1f} steps/s, {res['mean_step_ms']:.1f} ms/step)")
    )
    print(f"clipterm app latency — {args.model} on {args.device}, {state}")
    print(
        f"key to screen, UI-only key (t, toggle lane)      n={u['n']:3d}  p50 {u['p50']:7.2f} ms  "
        f"p95 {u['p95']:7.2f} ms  max {u['max']:7.2f} ms"
    )
    print(
        f"key to screen, via the worker (m, flip preset)   n={w['n']:3d}  p50 {w['p50']:7.2f} ms  "
        f"p95 {w['p95']:7.2f} ms  max {w['max']:7.2f} ms"
    )
    c = res["ui_key_cpu_ms"]
    print(
        f"UI thread CPU time per UI-only key (busy-waiting poll included)  p50 {c['p50']:7.2f} ms  "
        f"p95 {c['p95']:7.2f} ms"
    )
    print(f"frames shown: {res['frames_per_s']:.2f} per second (--fps {args.fps:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
