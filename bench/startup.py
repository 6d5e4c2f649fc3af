"""Start-up time of clipterm's commands against a bare `import torch`, side by side in one run.

    python bench/startup.py --reps 3

Each repetition starts every command once as a fresh `python` process, in turn (interleaved, so a
change in machine load hits every command alike); a cell is the median over the repetitions of the
wall time from process start to exit, and the peak resident memory of that process (wait4's
ru_maxrss). Rows:

- `import torch`: `python -c "import torch"`, the yardstick;
- `--help`, `presets`, `info SESSION`: the small commands (target: under half the yardstick's time;
  they must not import torch at all);
- `run --steps 1`: a new session on the bundled shapes-a model on the CPU, from process start to
  exit, which covers the first frame (a new session saves its step-0 frame) and one step.

`--before DIR` adds the same clipterm rows for another checkout's package (DIR holds its `clipterm/`,
e.g. `git archive efc4f41 clipterm | tar -x -C DIR`), run with PYTHONPATH=DIR, interleaved too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "a red circle on a black background"
SMALL = ("--help", "presets", "info")


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(seconds from start to exit, peak RSS MiB) of one child; a failure ends the bench.

    Children run in `cwd` (a scratch directory), so `python -m clipterm` imports the installed
    package or --before's, never a clipterm/ that happens to sit in the caller's directory."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"{' '.join(argv)}: exit {proc.returncode}\n{err.read().decode(errors='replace')}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="OMP/MKL threads of every child (default 2)")
    ap.add_argument("--before", type=Path, default=None, help="a directory holding an older clipterm/ to compare")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    py = [sys.executable]
    clipterm = [*py, "-m", "clipterm"]
    work = Path(tempfile.mkdtemp(prefix="clipterm-startup-"))
    try:
        session = work / "info-session"
        run_flags = ["--model", "shapes-a", "--device", "cpu", "--prompt", PROMPT, "--quiet"]
        timed([*clipterm, "run", str(session), "--steps", "2", *run_flags], env, work)  # what `info` reads
        rows: dict[str, tuple[list[str], dict[str, str]]] = {"import torch": ([*py, "-c", "import torch"], env)}
        trees = [("", env)]
        if args.before is not None:
            trees.append((" (before)", {**env, "PYTHONPATH": str(args.before.resolve())}))
        for suffix, tree_env in trees:
            rows[f"--help{suffix}"] = ([*clipterm, "--help"], tree_env)
            rows[f"presets{suffix}"] = ([*clipterm, "presets"], tree_env)
            rows[f"info{suffix}"] = ([*clipterm, "info", str(session)], tree_env)
            rows[f"run --steps 1{suffix}"] = ([], tree_env)  # a new directory each time, below
        times: dict[str, list[float]] = {k: [] for k in rows}
        rss: dict[str, list[float]] = {k: [] for k in rows}
        timed(rows["import torch"][0], env, work)  # warm the page cache once for every row alike
        for rep in range(args.reps):
            for i, (name, (argv, row_env)) in enumerate(rows.items()):
                if name.startswith("run --steps 1"):
                    argv = [*clipterm, "run", str(work / f"run-{rep}-{i}"), "--steps", "1", *run_flags]
                t, m = timed(argv, row_env, work)
                times[name].append(t)
                rss[name].append(m)
        base = statistics.median(times["import torch"])
        cpus = os.cpu_count()
        print(f"python {sys.version.split()[0]}, {cpus} cpus, {args.threads} threads, {args.reps} reps (median)")
        print()
        print("| command | wall s (median) | min s | peak RSS MiB | time / `import torch` | target |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name in rows:
            med = statistics.median(times[name])
            target = ""
            if name in SMALL:
                target = "< 0.5: " + ("met" if med / base < 0.5 else "MISSED")
            print(
                f"| `{name}` | {med:.3f} | {min(times[name]):.3f} | {statistics.median(rss[name]):.0f} "
                f"| {med / base:.2f} | {target} |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
