"""Headless `clipterm run`: outputs, and every bad-argument path ends in one line and exit code 2."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sessionkit import cli as run_main
from sessionkit import clipterm

from clipterm.cli import main

PROMPT = "a green triangle on a white background"


def test_run_writes_the_documented_outputs(tmp_path, capsys):
    out = tmp_path / "s"
    code, _, err = run_main(
        capsys,
        "run",
        str(out),
        "--prompt",
        PROMPT,
        "--steps",
        "30",
        "--model",
        "shapes-a",
        "--device",
        "cpu",
        "--views",
        "2",
        "--eval-every",
        "10",
        "--lanes",
        "ab",  # the outputs of every lane are alike: two are enough
    )
    assert code == 0, err
    meta = tomllib.loads((out / "session.toml").read_text())
    assert meta["prompt"] == PROMPT and meta["steps"] == 30 and meta["model"]["name"] == "shapes-a"
    assert meta["lanes"]["a"]["preset"] == "unconstrained" and meta["lanes"]["b"]["preset"] == "constrained"
    assert meta["lanes"]["b"]["views"]["views"] == 2
    for lane in "ab":
        d = out / f"lane-{lane}"
        img = np.load(d / "image.npy", allow_pickle=False)
        assert img.dtype == np.float32 and img.shape == (3, 64, 64) and 0 <= img.min() and img.max() <= 1
        hist = np.load(d / "history.npy", allow_pickle=False)
        assert hist.shape == (30, 6)
        assert meta["lanes"][lane]["last_similarity"] == pytest.approx(float(hist[-1, 0]))
        assert meta["lanes"][lane]["best_similarity"] == pytest.approx(float(hist[:, 0].max()))
        png = Image.open(d / "final.png")
        assert png.size == (64, 64)
        assert np.abs(np.asarray(png) / 255.0 - img.transpose(1, 2, 0)).max() <= 1 / 255 + 1e-6
    assert "lane a (unconstrained)" in err


def test_progress_is_plain_lines_when_not_a_terminal(tmp_path):
    out = tmp_path / "s"
    proc = clipterm(
        "run",
        str(out),
        "--prompt",
        PROMPT,
        "--steps",
        "20",
        "--model",
        "shapes-a",
        "--device",
        "cpu",
        "--lanes",
        "a",
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("step ")]
    assert lines and "\r" not in proc.stderr and "steps/s" in lines[-1] and lines[-1].startswith("step 20/20")


BAD_ARGS = [
    (["run", "{out}", "--prompt", PROMPT], "--steps"),
    (["run", "{out}", "--prompt", PROMPT, "--steps", "-3"], "--steps"),
    (["run", "{out}", "--prompt", PROMPT, "--steps", "ten"], "--steps"),
    (["run", "{out}", "--steps", "5", "--model", "shapes-a"], "--prompt is required"),
    (["run", "{out}", "--prompt", "   ", "--steps", "5", "--model", "shapes-a"], "prompt is empty"),
    (["run", "{out}", "--prompt", "a red circle | ", "--steps", "5", "--model", "shapes-a"], "empty prompt term"),
    (["run", "{out}", "--prompt", "a red circle:0", "--steps", "5", "--model", "shapes-a"], "weight 0"),
    (["run", "{out}", "--prompt", "a red circle:-1", "--steps", "5", "--model", "shapes-a"], "positive weight"),
    (["run", "{out}", "--prompt", PROMPT, "--steps", "5", "--mode-a", "fancy"], "unknown preset"),
    (["run", "{out}", "--prompt", PROMPT, "--steps", "5", "--lr", "-1"], "lr must be within"),
    (["run", "{out}", "--prompt", PROMPT, "--steps", "5", "--lr", "nan"], "lr must be finite"),
    (["run", "{out}", "--prompt", PROMPT, "--steps", "5", "--views", "0"], "views must be within"),
    (["run", "{out}", "--prompt", PROMPT, "--steps", "5", "--views", "2.5"], "views must be a whole number"),
    (["run", "{out}", "--prompt", PROMPT, "--steps", "5", "--scale-min", "1.5"], "scale_min"),
    (["run", "{out}", "--prompt", PROMPT, "--steps", "5", "--lanes", "cb"], "--lanes"),
    (["run", "{out}", "--prompt", PROMPT, "--steps", "5", "--seed", "-1"], "seed"),
    (["run", "{out}", "--prompt", PROMPT, "--steps", "5", "--model", "shapes-a", "--device", "tpu"], "device"),
    (["run", "{out}", "--prompt", PROMPT, "--steps", "5", "--model", "shapes-a", "--device", "cuda"], "CUDA"),
    (["run", "{out}", "--prompt", PROMPT, "--steps", "5", "--model", "NoSuchNet-7"], "unknown model"),
    (
        ["run", "{out}", "--prompt", PROMPT, "--steps", "5", "--model", "ViT-B-32", "--pretrained", "/no/such.pt"],
        "does not exist",
    ),
    (
        ["run", "{out}", "--prompt", PROMPT, "--steps", "5", "--model", "ViT-B-32", "--pretrained", "bogus"],
        "unknown pretrained tag",
    ),
    (["run", "{out}", "--prompt", PROMPT, "--steps", "5", "--pretrained", "openai"], "--pretrained needs --model"),
    (
        ["run", "{out}", "--prompt", PROMPT, "--steps", "5", "--model", "shapes-a", "--pretrained", "openai"],
        "comes with its own weights",
    ),
    (
        ["run", "{out}", "--prompts-file", "{out}", "--steps", "5", "--pretrained", "openai"],
        "--pretrained needs --model",
    ),
    (["run", "{out}", "--prompt", PROMPT, "--steps", "5", "--bogus-flag"], "unrecognized"),
    (["run", "{out}", "--prompt", PROMPT, "--steps", "5", "--autosave-seconds", "-1"], "autosave"),
    (["info", "{out}"], "not"),
    (["judge", "{out}"], "no such image"),
    (["info"], "required"),
    (["--no-such-option"], "unrecognized"),
]


@pytest.mark.parametrize("argv,needle", BAD_ARGS, ids=[" ".join(a[0][:1] + a[0][3:6]) for a in BAD_ARGS])
def test_bad_arguments_one_line_exit_2(tmp_path, capsys, argv, needle):
    out = tmp_path / "never"
    argv = [a.replace("{out}", str(out)) for a in argv]
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(argv))
    err = capsys.readouterr().err
    assert exc.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    if needle:
        assert needle in lines[0]
    assert not (out / "session.toml").exists()


def test_output_that_is_a_file_or_foreign_dir_is_refused(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("keep me")
    code, _, err = run_main(capsys, "run", str(f), "--prompt", PROMPT, "--steps", "3", "--model", "shapes-a")
    assert code == 2 and "not an empty directory" in err and f.read_text() == "keep me"
    d = tmp_path / "photos"
    d.mkdir()
    (d / "cat.jpg").write_bytes(b"x")
    code, _, err = run_main(capsys, "run", str(d), "--prompt", PROMPT, "--steps", "3", "--model", "shapes-a")
    assert code == 2 and sorted(p.name for p in d.iterdir()) == ["cat.jpg"]


def run_rn50_with(capsys, tmp_path: Path, checkpoint: str) -> tuple[int, str]:
    """`clipterm run` on RN50 with --pretrained CHECKPOINT: (exit code, stderr)."""
    argv = ["run", tmp_path / "s", "--prompt", PROMPT, "--steps", "2", "--model", "RN50", "--device", "cpu"]
    code, _, err = run_main(capsys, *argv, "--pretrained", checkpoint)
    return code, err


def test_checkpoint_file_loading_without_pickle(tmp_path, capsys):
    """--pretrained PATH loads safetensors; a pickle-bearing .pt is refused (weights_only), one line."""
    import torch
    from safetensors.torch import save_file

    from clipterm.models import load_model

    tiny = load_model("RN50", "none", "cpu")  # untrained: a plumbing test of the loading path only
    state = {k: v.contiguous() for k, v in tiny.model.state_dict().items()}
    save_file(state, str(tmp_path / "rn50.safetensors"))
    again = load_model("RN50", str(tmp_path / "rn50.safetensors"), "cpu")
    k = "visual.conv1.weight"
    assert torch.equal(again.model.state_dict()[k], state[k])
    assert again.checkpoint == tmp_path / "rn50.safetensors" and len(again.sha256) == 64

    class Evil:
        def __reduce__(self):
            return (Path(tmp_path / "pwned").touch, ())

    torch.save({"state_dict": Evil()}, tmp_path / "evil.pt")
    code, err = run_rn50_with(capsys, tmp_path, str(tmp_path / "evil.pt"))
    assert code == 2 and "cannot load checkpoint" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "pwned").exists()


def test_mismatched_checkpoint_names_what_does_not_fit(tmp_path, capsys):
    """A checkpoint for another architecture: one line that counts the missing and unexpected keys and
    names one of each, not just torch's header line "Error(s) in loading state_dict for CLIP:"."""
    import torch
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    code, err = run_rn50_with(capsys, tmp_path, str(tmp_path / "other.safetensors"))
    line = err.strip().splitlines()
    assert code == 2 and len(line) == 1, err
    assert re.search(r"\d+ missing keys \(e\.g\. '[a-z_.0-9]+'\)", line[0]), line[0]
    assert "1 unexpected keys (e.g. 'x')" in line[0]
    assert not (tmp_path / "s").exists()
