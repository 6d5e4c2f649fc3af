"""Exact resume across processes: one go, two parts, signals, a lock taken over from a killed
holder, and a stress test that SIGKILLs `clipterm run` at 20 moments and resumes each time.

Uninterrupted and two-part runs are `python -m clipterm` processes. Killed and signalled ones are
forked from a warm server (ZYGOTE) so twenty kills do not cost twenty torch imports; each still
runs the real clipterm.cli.main in its own process. Every child uses one thread, so separate
processes reduce in the same order and their results can be compared bit for bit.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sessionkit import CHILD_ENV, RUN_FLAGS, cli, clipterm, lane_arrays, read_doc

from clipterm import session as sess

TOTAL = 60
AUTOSAVE = 5  # RUN_FLAGS' --autosave-steps
# A fork server: imports clipterm (torch, open_clip: seconds) once, then forks one child per
# `clipterm` command, which runs clipterm.cli.main(argv) exactly as `python -m clipterm` does, in
# its own process (own pid, own lock, killed for real). Children print each finished step and
# save, so the test knows what a killed one had done. The server stays single-threaded (checked),
# which is what makes forking it safe.
ZYGOTE = r"""
import json, os, sys, time, traceback
from clipterm import runner
import clipterm.cli, clipterm.engine, clipterm.probes, clipterm.session, open_clip, torch, PIL.Image
SLOW = 0.0
_step, _save, _replace = runner.Run.step, runner.Run.save, os.replace
def step(self, n=1):
    out = _step(self, n)
    print(f"step {self.steps}", flush=True)
    return out
def save(self):
    print(f"saving {self.steps}", flush=True)
    _save(self)
    print(f"saved {self.steps}", flush=True)
def replace(a, b):
    if SLOW:  # widens the window in which a kill lands inside a save's renames
        time.sleep(SLOW)
    _replace(a, b)
runner.Run.step, runner.Run.save, os.replace = step, save, replace
assert len(os.listdir("/proc/self/task")) == 1, "the fork server must be single-threaded"
for line in sys.stdin:
    req = json.loads(line)
    if "wait" in req:
        _, status = os.waitpid(req["wait"], 0)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(os.open(req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
            os.dup2(os.open(req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
            SLOW = req["slow"]
            code = clipterm.cli.main(req["argv"])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
"""


class ForkServer:
    """Starts `clipterm` children from the warm ZYGOTE process."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.n = 0
        self.children: list[Child] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=CHILD_ENV
        )

    def ask(self, req: dict) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the fork server died"
        return json.loads(line)

    def start(self, *argv: object, slow_rename: float = 0.0) -> Child:
        self.n += 1
        out, err = self.workdir / f"{self.n}.out", self.workdir / f"{self.n}.err"
        pid = self.ask({"argv": [str(a) for a in argv], "out": str(out), "err": str(err), "slow": slow_rename})["pid"]
        child = Child(self, pid, out, err)
        self.children.append(child)
        return child

    def close(self) -> None:
        """Kill and reap children a failed test left running, then stop the server."""
        for child in self.children:
            if child.code is None:
                try:
                    child.kill()
                except ProcessLookupError:
                    pass
                child.wait()
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


class Child:
    """One running `clipterm` command: what it printed so far, signals, its exit code."""

    def __init__(self, server: ForkServer, pid: int, out: Path, err: Path) -> None:
        self.server, self.pid, self.out, self.err = server, pid, out, err
        self.code: int | None = None

    def lines(self) -> list[str]:
        text = self.out.read_text() if self.out.exists() else ""
        return text.split("\n")[:-1]  # complete lines only

    def exited(self) -> bool:
        try:
            return Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
        except OSError:
            return True

    def wait_for(self, line: str, timeout: float = 120) -> bool:
        """Block until the child prints `line` (True) or exits without it (False)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if line in self.lines():
                return True
            if self.exited():
                return line in self.lines()
            time.sleep(0.005)
        raise TimeoutError(f"no {line!r} from pid {self.pid} in {timeout}s")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        os.kill(self.pid, sig)

    def wait(self) -> int:
        if self.code is None:
            self.code = self.server.ask({"wait": self.pid})["code"]
        return self.code

    def last(self, word: str) -> int:
        nums = [int(x.split()[1]) for x in self.lines() if x.startswith(word + " ")]
        return max(nums) if nums else -1


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ForkServer(tmp_path_factory.mktemp("children"))
    yield srv
    srv.close()


def run_args(path: Path, steps: int = TOTAL) -> list[str]:
    return ["run", str(path), "--steps", str(steps), *RUN_FLAGS]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, np.ndarray]:
    """Every array of a session run in one go to TOTAL steps."""
    path = tmp_path_factory.mktemp("ref") / "s"
    proc = clipterm(*run_args(path))
    assert proc.returncode == 0, proc.stderr
    assert read_doc(path)["steps"] == TOTAL
    return lane_arrays(path)


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k], equal_nan=True), k


def test_two_parts_equal_one_go(reference, tmp_path):
    path = tmp_path / "s"
    for steps in (TOTAL // 2, TOTAL):
        proc = clipterm(*run_args(path, steps))
        assert proc.returncode == 0, proc.stderr
    assert_same(lane_arrays(path), reference)
    assert read_doc(path)["changes"] == []


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_signal_saves_and_exits(signame, server, tmp_path):
    sig = getattr(signal, signame)
    path = tmp_path / "s"
    child = server.start("run", path, "--steps", "100000", *RUN_FLAGS, "--autosave-steps", "0")
    assert child.wait_for("step 3")
    child.kill(sig)
    code = child.wait()
    err = child.err.read_text()
    assert code == 128 + sig, err
    assert f"stopped by signal {int(sig)}" in err and "Traceback" not in err
    last = child.last("step")
    assert child.lines()[-1] == f"saved {last}"  # the step in progress finished, then one save, then exit
    s = sess.load(path)
    assert s.steps == last >= 3 and len(s.arrays["a"]["history"]) == last


def test_lock_refused_while_held_and_taken_over_after_sigkill(server, tmp_path, capsys):
    path = tmp_path / "s"
    child = server.start(*run_args(path, 100000))
    assert child.wait_for("saved 5")
    code, _, err = cli(capsys, "run", path, "--steps", "200", "--quiet")
    assert code == 2 and f"already open in another clipterm process (pid {child.pid})" in err
    code, out, _ = cli(capsys, "info", path)
    assert code == 0 and f"open in pid {child.pid}" in out
    child.kill()  # SIGKILL: no chance to unlock or clean up
    assert child.wait() == -signal.SIGKILL
    assert sess.lock_holder(path) is None
    steps = sess.load(path).steps
    assert steps >= child.last("saved") >= 5
    code, _, err = cli(capsys, "run", path, "--steps", str(steps + 1), "--quiet")
    assert code == 0, err
    assert read_doc(path)["steps"] == steps + 1


def test_stress_sigkill_at_20_moments_resumes_exactly(reference, server, tmp_path):
    """20 SIGKILLs at seeded moments (some inside saves, made slower to widen them): after each, the
    session loads, holds every step up to the last autosave boundary the child reached and nothing it
    had not computed, and its history equals the uninterrupted run's; the final arrays are bit-identical."""
    rng = random.Random(20240611)
    path = tmp_path / "s"
    ref_hist = {lane: reference[f"lane-{lane}/history.npy"] for lane in "ab"}
    mid_save = 0
    loaded = 0
    for i in range(20):
        if loaded >= TOTAL - AUTOSAVE:  # a fast machine got near the end: start a fresh session, keep killing
            shutil.rmtree(path)
            loaded = 0
        child = server.start(*run_args(path), slow_rename=0.01)
        if i % 3 == 2 and loaded + AUTOSAVE < TOTAL:  # land inside a save
            boundary = (loaded // AUTOSAVE + 1) * AUTOSAVE
            assert child.wait_for(f"saving {boundary}")
            time.sleep(rng.uniform(0.0, 0.25))
        else:  # land anywhere in a step (which may include an autosave)
            target = min(loaded + rng.randint(1, AUTOSAVE + 3), TOTAL - 1)
            assert child.wait_for(f"step {target}")
            time.sleep(rng.uniform(0.0, 0.2))
        child.kill()
        assert child.wait() == -signal.SIGKILL
        mid_save += (path / ".pending").is_dir()
        s = sess.load(path)
        reached, saved = child.last("step"), child.last("saved")
        assert s.steps >= saved and s.steps >= AUTOSAVE * (reached // AUTOSAVE), (i, s.steps, reached, saved)
        assert s.steps <= reached + 1 and s.steps % AUTOSAVE == 0, (i, s.steps, reached)
        for lane in "ab":
            assert np.array_equal(s.arrays[lane]["history"], ref_hist[lane][: s.steps]), (i, lane)
        loaded = s.steps
    assert mid_save >= 1  # at least one kill left a journal behind
    proc = clipterm(*run_args(path))
    assert proc.returncode == 0, proc.stderr
    assert_same(lane_arrays(path), reference)
    assert read_doc(path)["changes"] == []


# One lane of each kind of part: the parameterizations, every transform, a schedule, an ensemble,
# several starts (split at step 6, inside the trial; the choice at 8).
KINDS = [
    "--lanes",
    "none",
    "--lane",
    "f=constrained,param=fourier,views=2,transforms=pad+jitter+affine+noise",
    "--lane",
    "p=constrained,param=pyramid,views=2,transforms=cutouts,schedule=cosine,warmup=3",
    "--lane",
    "e=self-guided,models=shapes-a+shapes-b",
    "--lane",
    "v=vae-grey,views=2",
    "--lane",
    "m=vae-base,views=4,starts=2,trial=8",
]
KIND_STEPS = 12


def test_every_kind_of_lane_resumes_exactly_after_a_split_run_and_after_sigkill(server, tmp_path):
    one_go = tmp_path / "one"
    proc = clipterm(*run_args(one_go, KIND_STEPS), *KINDS)
    assert proc.returncode == 0, proc.stderr
    want = lane_arrays(one_go)
    assert {"lane-f/spectrum.npy", "lane-p/level1.npy", "lane-p/opt_exp_avg_sq_level64.npy"} <= set(want)
    assert {"lane-v/code.npy", "lane-m/start1_code.npy", "lane-m/opt_exp_avg_sq_start1_ground.npy"} <= set(want)
    split = tmp_path / "split"
    for steps in (KIND_STEPS // 2, KIND_STEPS):
        proc = clipterm(*run_args(split, steps), *KINDS)
        assert proc.returncode == 0, proc.stderr
    assert_same(lane_arrays(split), want)
    killed = tmp_path / "killed"
    child = server.start(*run_args(killed, KIND_STEPS), *KINDS)
    assert child.wait_for("saved 5")
    child.kill()  # in the middle of the steps after the first autosave
    assert child.wait() == -signal.SIGKILL
    assert sess.load(killed).steps >= 5
    proc = clipterm(*run_args(killed, KIND_STEPS), *KINDS)  # resume: the same flags change nothing
    assert proc.returncode == 0, proc.stderr
    assert_same(lane_arrays(killed), want)
    assert (
        read_doc(killed)["changes"]
        == read_doc(one_go)["changes"]
        == [{"step": 8, "lane": "m", "key": "start", "old": "", "new": read_doc(one_go)["changes"][0]["new"]}]
    )
