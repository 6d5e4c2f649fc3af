"""Golden trajectories recorded on main at c9dc5a8, before the engine became pluggable lane parts.

The three seed presets must stay bit-identical: same image.npy and history.npy after 30 steps on
both bundled models (a fixed seed, one thread, in a child process so no other test's thread settings
leak in). A session written by that commit (tests/fixtures/v1-session, format 1) must open and
resume to exactly what that commit's one-go run produced.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from sessionkit import clipterm

PROMPT = "a red circle on a black background"
GOLDEN = {
    ("shapes-a", "unconstrained"): ("d09ca06c508eef7e", "635e89067167bb68"),
    ("shapes-a", "constrained"): ("da372f6079dc66ea", "f7c8c7f98b677d7b"),
    ("shapes-a", "self-guided"): ("6ae21a0a971f1056", "964e5552d37276cd"),
    ("shapes-b", "unconstrained"): ("81df33f4db705b7e", "6ddc29669843b9ec"),
    ("shapes-b", "constrained"): ("818ac9da76278236", "def16e0051eefa9f"),
    ("shapes-b", "self-guided"): ("0c064098972e30bd", "986a05894a32daa1"),
}
FIXTURE = Path(__file__).parent / "fixtures" / "v1-session"
# lane -> (image.npy, history.npy) sha256 prefixes of the one-go 40-step run at c9dc5a8
RESUMED = {"a": ("0dd578391424719899a5", "7c22449aff29eefd3158"), "b": ("4e88fdfaaf4369f996b4", "f5887b26682d85efd6f3")}
FIXTURE_ARGS = [
    "--prompt",
    "a blue square on a white background",
    "--model",
    "shapes-a",
    "--device",
    "cpu",
    "--seed",
    "3",
    "--views",
    "2",
    "--apply-to",
    "b",
    "--eval-every",
    "10",
    "--quiet",
]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("model,preset", sorted(GOLDEN))
def test_seed_presets_are_bit_identical_to_the_recorded_trajectories(tmp_path, model, preset):
    out = tmp_path / "s"
    argv = ["run", out, "--prompt", PROMPT, "--steps", "30", "--model", model, "--device", "cpu", "--seed", "7"]
    argv += ["--lanes", "a", "--mode-a", preset, "--quiet", "--eval-every", "10"]
    if preset == "constrained":
        argv += ["--views", "4"]
    r = clipterm(*argv)
    assert r.returncode == 0, r.stderr
    image, history = GOLDEN[(model, preset)]
    assert sha(out / "lane-a" / "image.npy").startswith(image)
    assert sha(out / "lane-a" / "history.npy").startswith(history)


def test_bundled_weights_are_the_recorded_files():
    weights = Path(__file__).parent.parent / "clipterm" / "weights"
    assert sha(weights / "shapes-a" / "open_clip_model.safetensors").startswith("cbfd08b6bd41898d12b9")
    assert sha(weights / "shapes-b" / "open_clip_model.safetensors").startswith("994fd29e5756a9a39802")


def test_a_format_1_session_resumes_to_the_one_go_result(tmp_path):
    work = tmp_path / "v1"
    shutil.copytree(FIXTURE, work)
    r = clipterm("run", work, "--steps", "40", *FIXTURE_ARGS)
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stderr
    for lane, (image, history) in RESUMED.items():
        assert sha(work / f"lane-{lane}" / "image.npy").startswith(image), lane
        assert sha(work / f"lane-{lane}" / "history.npy").startswith(history), lane
