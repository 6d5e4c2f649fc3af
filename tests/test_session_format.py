"""The session format on disk (docs/SESSION_FORMAT.md), its journaled save, the lock, autosave,
resume flags, retargeting and device independence, exercised in this process."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sessionkit import PROMPT, RUN_FLAGS, cli, edit_toml, lane_arrays, read_doc, snapshot

from clipterm import runner
from clipterm import session as sess
from clipterm.engine import EVAL_COLUMNS, HISTORY_COLUMNS, Engine
from clipterm.models import file_sha256
from clipterm.presets import preset
from clipterm.runner import Autosave, Run
from clipterm.session import journal


@pytest.fixture(scope="module")
def base_session(tmp_path_factory) -> Path:
    """A valid 12-step session: evals at 5 and 10, frames at 0 and 10, autosaves every 5 steps."""
    from clipterm.cli import main

    path = tmp_path_factory.mktemp("fmt") / "s"
    assert main(["run", str(path), "--steps", "12", *RUN_FLAGS]) == 0
    return path


@pytest.fixture()
def session(base_session, tmp_path) -> Path:
    s = tmp_path / "s"
    shutil.copytree(base_session, s, symlinks=True)
    return s


# ---------------------------------------------------------------------------- the format
def test_files_dtypes_shapes_and_toml(session, shapes_a):
    doc = read_doc(session)
    assert doc["format_version"] == sess.FORMAT_VERSION == 2 and doc["clipterm_version"]
    assert doc["prompt"] == PROMPT and doc["seed"] == 0 and doc["steps"] == 12
    assert doc["eval_every"] == 5 and doc["frame_every"] == 10 and doc["changes"] == []
    assert doc["history_columns"] == list(HISTORY_COLUMNS) and doc["eval_columns"] == list(EVAL_COLUMNS)
    assert doc["created"] <= doc["updated"]
    assert doc["model"] == {
        "name": "shapes-a",
        "pretrained": "bundled",
        "image_size": 64,
        "checkpoint": "bundled",
        "sha256": file_sha256(shapes_a.checkpoint),
    }
    on_disk = {str(p.relative_to(session)) for p in session.rglob("*") if p.is_file()}
    npys = {rel for rel in on_disk if rel.endswith(".npy")}
    assert set(doc["files"]) == npys
    for rel, sha in doc["files"].items():
        assert hashlib.sha256((session / rel).read_bytes()).hexdigest() == sha
    assert not (session / ".pending").exists() and (session / ".lock").is_file()
    arrays = lane_arrays(session)  # np.load(allow_pickle=False): no file needs pickle
    for lane in "ab":
        d = f"lane-{lane}"
        table = doc["lanes"][lane]
        assert table["dir"] == d and table["preset"] == ("unconstrained" if lane == "a" else "constrained")
        for key in ("image", "param", "best", "opt_exp_avg", "opt_exp_avg_sq"):
            a = arrays[f"{d}/{key}.npy"]
            assert a.dtype == np.float32 and a.shape == (3, 64, 64) and np.isfinite(a).all(), key
        img = arrays[f"{d}/image.npy"]
        assert 0 <= img.min() and img.max() <= 1
        assert arrays[f"{d}/best_loss.npy"].shape == () and arrays[f"{d}/best_loss.npy"].dtype == np.float32
        assert arrays[f"{d}/opt_step.npy"] == np.float32(12)
        assert arrays[f"{d}/rng.npy"].dtype == np.uint8 and arrays[f"{d}/rng.npy"].ndim == 1
        hist = arrays[f"{d}/history.npy"]
        assert hist.dtype == np.float32 and hist.shape == (12, len(HISTORY_COLUMNS))
        assert table["last_similarity"] == pytest.approx(float(hist[-1, 0]))
        ev = arrays[f"{d}/evals.npy"]
        assert ev.dtype == np.float32 and ev.shape == (2, 3) and list(ev[:, 0]) == [5, 10]
        assert table["verified_similarity"] == pytest.approx(float(ev[-1, 2]))
        frames, at = arrays[f"frames/{d}.npy"], arrays[f"frames/{d}-steps.npy"]
        assert frames.dtype == np.uint8 and frames.shape == (2, 64, 64, 3)
        assert at.dtype == np.int64 and list(at) == [0, 10]
        png = np.asarray(Image.open(session / d / "final.png"))
        assert png.shape == (64, 64, 3) and np.abs(png / 255.0 - img.transpose(1, 2, 0)).max() <= 1 / 255 + 1e-6


def test_load_then_save_elsewhere_round_trips(session, tmp_path):
    s = sess.load(session)
    s.path = tmp_path / "copy"
    sess.save(s)
    again = sess.load(s.path)
    assert again.steps == 12 and again.prompt == PROMPT and again.lanes == s.lanes and again.model == s.model
    for lane in "ab":
        for key, arr in s.arrays[lane].items():
            assert np.array_equal(again.arrays[lane][key], arr, equal_nan=True), key
        assert all(np.array_equal(x, y) for x, y in zip(again.frames[lane], s.frames[lane]))
    assert set(lane_arrays(session)) == set(lane_arrays(s.path))


def test_info_text_and_json(session, capsys):
    import json

    code, out, _ = cli(capsys, "info", session)
    assert code == 0 and PROMPT in out and "shapes-a" in out and "steps    12" in out and "lane b" in out
    code, out, _ = cli(capsys, "info", session, "--json")
    data = json.loads(out)
    assert code == 0 and data["steps"] == 12 and data["frames"] == {"a": 2, "b": 2} and data["open_by_pid"] is None
    assert data["lanes"]["a"]["preset"] == "unconstrained" and "verified_similarity" in data["lanes"]["b"]


# ---------------------------------------------------------------------------- journaled saves
class Crash(BaseException):
    """Stands for the process dying: nothing in save() may catch it."""


def _advanced_copy(session: Path, steps: int) -> tuple[Run, dict[str, np.ndarray]]:
    """Resume `session` in-process, step it, and return the run with the arrays its next save will hold."""
    s = sess.load(session)
    run = Run.resume(session, runner.load_session_model(s.model, "cpu"), Autosave(0, 0))
    run.step(steps)
    return run, {f"{lane}/{k}": v for lane, a in run.to_session().arrays.items() for k, v in a.items()}


def _flat(s: sess.Session) -> dict[str, np.ndarray]:
    return {f"{lane}/{k}": v for lane, a in s.arrays.items() for k, v in a.items()}


def _loaded(path: Path) -> dict[str, np.ndarray]:
    return _flat(sess.load(path))


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def test_crash_at_every_point_of_a_save_leaves_a_complete_save(session, tmp_path, monkeypatch):
    """Kill a save after each file written to the journal and after each rename into place: the
    session always loads as exactly the old or exactly the new save, and the next writer finishes it."""
    old = _loaded(session)
    run, new = _advanced_copy(session, 3)
    run.close()
    assert not _same(old, new)
    n_files = len({rel for p in session.rglob("*") if sess.is_known_file(rel := str(p.relative_to(session)))})
    # n_files journal writes then COMPLETE, then n_files renames: crash before each of them
    points = [("write", k) for k in range(n_files + 1)] + [("replace", k) for k in range(n_files)]
    outcomes = set()
    for what, k in points:
        case = tmp_path / f"{what}-{k}"
        shutil.copytree(session, case, symlinks=True)
        calls = {"n": 0}
        real = journal.write_bytes if what == "write" else journal.os.replace

        def crash_after_k(*a, _real=real, _calls=calls, _k=k):
            if _calls["n"] == _k:
                raise Crash()
            _calls["n"] += 1
            return _real(*a)

        s = sess.load(case)
        s.arrays = {lane: {k2: new[f"{lane}/{k2}"] for k2 in s.arrays[lane]} for lane in s.arrays}
        s.steps = 15
        if what == "write":
            monkeypatch.setattr(journal, "write_bytes", crash_after_k)
        else:
            monkeypatch.setattr(journal.os, "replace", crash_after_k)
        try:
            with pytest.raises(Crash):
                sess.save(s)
        finally:
            monkeypatch.undo()
        journal_complete = (case / ".pending" / "COMPLETE").exists()
        loaded = sess.load(case)
        expect = new if journal_complete else old
        assert _same(_flat(loaded), expect), (what, k)
        assert loaded.steps == (15 if journal_complete else 12)
        outcomes.add(journal_complete)
        lock = sess.SessionLock(case).acquire()  # the next writer rolls the journal forward or drops it
        lock.release()
        assert not (case / ".pending").exists()
        assert _same(_loaded(case), expect)
    assert outcomes == {True, False}


def test_hand_made_journals(session, tmp_path):
    """A .pending/ without COMPLETE is ignored; one with COMPLETE and half its files moved is read as the
    new save by readers and finished by the next writer."""
    old = _loaded(session)
    new_dir = tmp_path / "new"
    shutil.copytree(session, new_dir, symlinks=True)
    run, new = _advanced_copy(new_dir, 2)
    run.save()
    run.close()
    names = sorted(
        rel for p in new_dir.rglob("*") if p.is_file() and sess.is_known_file(rel := str(p.relative_to(new_dir)))
    )
    names.remove(sess.TOML_NAME)
    names.append(sess.TOML_NAME)

    incomplete = tmp_path / "incomplete"
    shutil.copytree(session, incomplete, symlinks=True)
    (incomplete / ".pending").mkdir()
    for rel in names[:5]:
        shutil.copy(new_dir / rel, incomplete / ".pending" / rel.replace("/", "__"))
    before = snapshot(incomplete)
    assert _same(_loaded(incomplete), old) and snapshot(incomplete) == before  # reading changed nothing

    half = tmp_path / "half"
    shutil.copytree(session, half, symlinks=True)
    (half / ".pending").mkdir()
    for rel in names:
        shutil.copy(new_dir / rel, half / ".pending" / rel.replace("/", "__"))
    (half / ".pending" / "COMPLETE").write_text("\n".join(names))
    for rel in names[: len(names) // 2]:
        (half / ".pending" / rel.replace("/", "__")).replace(half / rel)
    before = snapshot(half)
    assert _same(_loaded(half), new) and sess.load(half).steps == 14 and snapshot(half) == before
    with sess.SessionLock(half):
        pass
    assert not (half / ".pending").exists() and _same(_loaded(half), new)
    for rel in names:
        assert (half / rel).read_bytes() == (new_dir / rel).read_bytes(), rel


def test_disk_error_during_save_is_one_line_and_keeps_the_previous_save(session, monkeypatch, capsys):
    old = _loaded(session)
    run, _ = _advanced_copy(session, 1)

    def full(*a):
        raise OSError(28, "No space left on device", str(session / ".pending" / "x"))

    monkeypatch.setattr(journal, "write_bytes", full)
    with pytest.raises(sess.SessionError, match="No space left on device"):
        run.save()
    run.close()
    monkeypatch.undo()
    assert _same(_loaded(session), old)


def test_full_disk_mid_save_removes_the_partial_journal_and_the_next_save_works(session, monkeypatch):
    """ENOSPC after two whole files and half of a third: one line, no .pending/ left, every byte of
    the previous save as it was; the same run saves fine once there is room again."""
    run, new = _advanced_copy(session, 2)
    before = snapshot(session)  # with the lock taken (it holds the writer's pid)
    real, calls = journal.write_bytes, {"n": 0}

    def fills_up(path: Path, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] < 3:
            return real(path, data)
        path.write_bytes(data[: len(data) // 2])
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(journal, "write_bytes", fills_up)
    with pytest.raises(sess.SessionError) as e:
        run.save()
    msg = str(e.value)
    assert "\n" not in msg and "No space left on device" in msg and "the previous save is kept" in msg, msg
    assert not (session / ".pending").exists()
    assert snapshot(session) == before
    monkeypatch.undo()
    run.save()  # room again: the retry writes the whole new save
    run.close()
    assert sess.load(session).steps == 14 and _same(_loaded(session), new)


def test_readers_racing_a_writer_see_whole_saves(session):
    """`info` never locks: while a writer saves again and again, every read is one whole save."""
    import threading

    a = sess.load(session)
    run, arrays_b = _advanced_copy(session, 3)
    run.close()
    b = sess.load(session)
    b.arrays = {lane: {k: arrays_b[f"{lane}/{k}"] for k in b.arrays[lane]} for lane in b.arrays}
    b.steps = 15
    states = {12: _loaded(session), 15: _flat(b)}
    stop = threading.Event()

    def writer() -> None:
        with sess.SessionLock(session):
            while not stop.is_set():
                for s in (b, a):
                    sess.save(s)
                    time.sleep(0.005)

    t = threading.Thread(target=writer)
    t.start()
    try:
        seen = set()
        for _ in range(40):
            got = sess.load(session)
            assert _same(_flat(got), states[got.steps])
            seen.add(got.steps)
    finally:
        stop.set()
        t.join()
    assert seen == {12, 15}


# ---------------------------------------------------------------------------- the lock
def test_second_writer_is_refused_while_readers_still_work(session, capsys):
    import os

    with sess.SessionLock(session):
        before = snapshot(session)
        code, _, err = cli(capsys, "run", session, "--steps", "20", "--quiet")
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert "already open in another clipterm process" in err and f"pid {os.getpid()}" in err
        assert snapshot(session) == before
        code, out, _ = cli(capsys, "info", session)
        assert code == 0 and f"open in pid {os.getpid()}" in out
    code, _, err = cli(capsys, "run", session, "--steps", "13", "--quiet")
    assert code == 0, err
    assert read_doc(session)["steps"] == 13


def test_creation_interrupted_before_the_first_save_can_start_over(tmp_path, capsys):
    s = tmp_path / "s"
    s.mkdir()
    (s / ".lock").write_text("12345")
    (s / ".pending").mkdir()
    (s / ".pending" / "lane-a__image.npy").write_bytes(b"partial")
    code, _, err = cli(capsys, "run", s, "--steps", "2", *RUN_FLAGS)
    assert code == 0, err
    assert sess.load(s).steps == 2 and not (s / ".pending").exists()


# ---------------------------------------------------------------------------- autosave
def test_autosave_every_n_steps(session):
    s = sess.load(session)
    run = Run.resume(session, runner.load_session_model(s.model, "cpu"), Autosave(every_steps=3, every_seconds=0))
    saved = []
    try:
        for _ in range(7):
            run.step()
            saved.append(read_doc(session)["steps"])
    finally:
        run.close()
    assert saved == [12, 12, 15, 15, 15, 18, 18]  # steps 13..19: saved at multiples of 3 only


class FakeClock:
    """Stands in for the `time` module inside runner: the test moves time by hand."""

    t = 1000.0

    @classmethod
    def monotonic(cls) -> float:
        return cls.t


def test_autosave_every_t_seconds(session, monkeypatch):
    monkeypatch.setattr(runner, "time", FakeClock)
    s = sess.load(session)
    run = Run.resume(session, runner.load_session_model(s.model, "cpu"), Autosave(every_steps=0, every_seconds=30))
    try:
        assert run.step() is False and read_doc(session)["steps"] == 12
        FakeClock.t += 29
        assert run.step() is False and read_doc(session)["steps"] == 12
        FakeClock.t += 2
        assert run.step() is True and read_doc(session)["steps"] == 15
        assert run.step() is False and read_doc(session)["steps"] == 15
    finally:
        run.close()


# ---------------------------------------------------------------------------- resume flags
def test_resume_flags_are_applied_and_recorded(session, capsys):
    new_prompt = "a blue square on a white background"
    flags = ["--prompt", new_prompt, "--lr", "0.1", "--apply-to", "a", "--mode-b", "self-guided", "--eval-every", "3"]
    code, _, err = cli(capsys, "run", session, "--steps", "15", "--quiet", *flags)
    assert code == 0, err
    doc = read_doc(session)
    assert doc["prompt"] == new_prompt and doc["lanes"]["a"]["optim"]["lr"] == 0.1 and doc["eval_every"] == 3
    assert doc["lanes"]["b"]["preset"] == "self-guided"
    assert doc["lanes"]["b"]["optim"]["lr"] == preset("self-guided").value("lr")
    changes = {(c["key"], c["lane"]): c for c in doc["changes"]}
    assert set(changes) == {("prompt", "*"), ("lr", "a"), ("preset", "b"), ("eval_every", "*")}
    assert all(c["step"] == 12 for c in doc["changes"])
    assert changes[("prompt", "*")]["old"] == PROMPT and changes[("prompt", "*")]["new"] == new_prompt
    assert changes[("lr", "a")]["old"] == 0.05 and changes[("lr", "a")]["new"] == 0.1
    assert list(sess.load(session).arrays["a"]["evals"][:, 0]) == [5, 10, 15]
    # The same flags again change nothing more: repeating a command resumes exactly.
    code, _, err = cli(capsys, "run", session, "--steps", "16", "--quiet", *flags)
    assert code == 0, err
    assert read_doc(session)["changes"] == doc["changes"]


def test_nothing_to_do_writes_nothing(session, capsys):
    before = snapshot(session)
    code, _, err = cli(capsys, "run", session, "--steps", "5", "--quiet")
    assert code == 0 and "already at step 12" in err
    after = snapshot(session)
    before.pop(".lock"), after.pop(".lock")  # the writer took the lock (its pid is written there)
    assert after == before


# ---------------------------------------------------------------------------- models and devices
def test_retarget_to_another_model_keeps_history(session, capsys, shapes_b):
    code, _, err = cli(capsys, "run", session, "--steps", "14", "--model", "shapes-b", "--retarget", "--quiet")
    assert code == 0, err
    doc = read_doc(session)
    assert doc["model"]["name"] == "shapes-b" and doc["steps"] == 14
    assert doc["changes"][-1] == {"step": 12, "lane": "*", "key": "model", "old": "shapes-a", "new": "shapes-b"}
    s = sess.load(session)
    assert len(s.arrays["a"]["history"]) == 14 and list(s.frames["a"][1]) == [0, 10, 12]
    code, _, err = cli(capsys, "run", session, "--steps", "15", "--quiet")  # resumes on shapes-b now
    assert code == 0 and "on shapes-b" in err


def test_changed_checkpoint_continues_only_with_retarget(session, capsys):
    edit_toml(session, lambda d: d["model"].__setitem__("sha256", "ab" * 32))
    code, _, err = cli(capsys, "run", session, "--steps", "13", "--quiet")
    assert code == 2 and "no longer matches" in err
    code, _, err = cli(capsys, "run", session, "--steps", "13", "--retarget", "--quiet")
    assert code == 0, err
    doc = read_doc(session)
    change = doc["changes"][-1]
    assert change["key"] == "model" and change["old"] == "shapes-a@abababababab"
    assert change["new"].startswith("shapes-a@") and doc["model"]["sha256"] != "ab" * 32


def test_state_is_device_free_and_loads_onto_the_engine_device(session, shapes_a):
    """A session holds plain host float32/uint8 arrays and no device name, and the loader places every
    tensor on the engine's device: so a session made on a GPU opens on a CPU and vice versa. There is no
    GPU here: the CUDA side of this is only the same `.to(engine.device)` path, not exercised."""
    text = (session / "session.toml").read_text()
    assert "cuda" not in text and "device" not in text
    s = sess.load(session)
    engine = Engine(shapes_a, s.prompt, dict(s.lanes), seed=s.seed, eval_every=s.eval_every)
    for lane, arrays in s.arrays.items():
        engine.load_lane_state(lane, arrays)
        ln = engine.lanes[lane]
        st = ln.optimizer.state[ln.image.tensors["param"]]
        assert ln.image.tensors["param"].device == ln.best.device == st["exp_avg"].device == shapes_a.device
        assert st["step"].device == torch.device("cpu")  # Adam keeps its step count on the host
        again = engine.lane_state(lane)
        for key, arr in arrays.items():
            if key in again:
                assert isinstance(again[key], np.ndarray) and again[key].dtype == arr.dtype, key
                assert np.array_equal(again[key], arr), key


def test_resume_on_a_missing_device_is_refused_untouched(session, capsys):
    before = snapshot(session.parent)
    code, _, err = cli(capsys, "run", session, "--steps", "13", "--device", "cuda", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "CUDA" in err
    assert snapshot(session.parent) == before
