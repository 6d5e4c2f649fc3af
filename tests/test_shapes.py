"""The bundled shapes models: world rendering, accuracy, packaging, the judge, and seed 004's finding."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sessionkit import clipterm, offline_env

from clipterm import shapes
from clipterm.engine import Engine
from clipterm.judge import Judge
from clipterm.models import BUNDLED, bundled_dir
from clipterm.presets import preset


def test_base_world_is_rendered_as_specified():
    caps = shapes.base_captions()
    assert len(caps) == 24 and len(set(caps)) == 24 and caps[0] == "a red circle on a black background"
    img = shapes.render("blue", "square", "white", 12, 30, 33)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert tuple(img[33, 30]) == (30, 60, 220) and tuple(img[0, 0]) == (240, 240, 240)
    tri = shapes.render("yellow", "triangle", "black", 20, 32, 32)
    assert tuple(tri[48, 32]) == (230, 220, 30) and tuple(tri[14, 14]) == (15, 15, 15)
    rng = np.random.default_rng(0)
    for _ in range(200):
        im, (c, s, b) = shapes.sample_base(rng)
        assert tuple(im[0, 0]) in shapes.BACKGROUNDS.values() or s == "square"


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_reaches_98_percent(name, request):
    bundle = request.getfixturevalue(name.replace("-", "_"))
    acc = shapes.zero_shot_accuracy(bundle.model, bundle.tokenizer, n=1000, seed=424242)
    assert acc >= 0.98, f"{name}: {acc:.1%}"


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_files(name):
    d = bundled_dir(name)
    weights = d / "open_clip_model.safetensors"
    assert weights.stat().st_size < 16 * 1024 * 1024
    assert not list(d.glob("*.pt")) and not list(d.glob("*.bin"))


def test_models_differ_in_architecture(shapes_a, shapes_b, shapes_c):
    assert type(shapes_a.model.visual).__name__ == "VisionTransformer"
    assert type(shapes_b.model.visual).__name__ == "ModifiedResNet"
    assert type(shapes_c.model.visual).__name__ == "VisionTransformer"
    patch = {b.name: b.model.visual.patch_size for b in (shapes_a, shapes_c)}
    width = {b.name: b.model.visual.transformer.width for b in (shapes_a, shapes_c)}
    assert patch == {"shapes-a": (8, 8), "shapes-c": (16, 16)} and width == {"shapes-a": 128, "shapes-c": 160}


def test_each_bundled_model_has_its_training_record(request):
    import json

    seeds = set()
    for name in BUNDLED:
        record = json.loads((bundled_dir(name) / "training.json").read_text())
        assert record["zero_shot_top1"] >= 0.98 and record["arch"] in shapes.ARCHS
        seeds.add(record["seed"])
    assert len(seeds) == len(BUNDLED)  # each trained from its own seed


def _save_png(path: Path, img: np.ndarray) -> Path:
    Image.fromarray(img).save(path)
    return path


def test_judge_cli_ranks_real_shapes(tmp_path):
    red = _save_png(tmp_path / "red.png", shapes.render("red", "circle", "black", 15, 30, 30))
    blue = _save_png(tmp_path / "blue.png", shapes.render("blue", "square", "white", 18, 40, 25))
    prompt = "a blue square on a white background"
    proc = clipterm("judge", str(red), str(blue), "--prompt", prompt, "--device", "cpu", timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if not ln.startswith(" ")]
    assert "'a red circle on a black background'" in lines[0] and "prompt rank" in lines[0]
    assert "prompt rank 1/24" not in lines[0]
    assert "'a blue square on a white background'" in lines[1] and "prompt rank 1/24" in lines[1]


def test_judge_ranks_a_free_prompt_among_the_captions(shapes_b):
    v = Judge(shapes_b).rank_image(shapes.render("green", "circle", "white", 20, 32, 32), "a golden retriever")
    assert len(v.captions) == 25 and v.top == "a green circle on a white background"
    assert 1 <= v.prompt_rank <= 25 and v.prompt_rank > 1


def test_offline_default_falls_back_to_shapes_a(tmp_path):
    env = offline_env(tmp_path)
    out = tmp_path / "s"
    argv = ["run", str(out), "--prompt", "a red circle", "--steps", "2", "--device", "cpu", "--lanes", "ab"]
    proc = clipterm(*argv, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "falling back to the bundled shapes-a" in proc.stderr and "ViT-B-32/openai" in proc.stderr
    assert tomllib.loads((out / "session.toml").read_text())["model"]["name"] == "shapes-a"


def test_named_model_offline_is_one_clear_line(tmp_path):
    env = offline_env(tmp_path)
    proc = clipterm(
        "run",
        str(tmp_path / "s"),
        "--prompt",
        "a dog",
        "--steps",
        "2",
        "--model",
        "ViT-B-32",
        "--pretrained",
        "openai",
        "--device",
        "cpu",
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "not cached" in proc.stderr and "--model shapes-a" in proc.stderr


def test_trainer_is_deterministic(tmp_path):
    reports = []
    for name, seed in (("x", 5), ("y", 5), ("z", 6)):
        rep = shapes.train("vit", seed, tmp_path / name, steps=3, batch=8, log=lambda m: None)
        reports.append(rep)
    a, b, c = ((tmp_path / n / "open_clip_model.safetensors").read_bytes() for n in "xyz")
    assert a == b and a != c
    assert 0.0 <= reports[0]["zero_shot_top1"] <= 1.0


def test_adversarial_examples_stay_in_the_ball_and_raise_the_loss(shapes_a):
    """What `train-shapes --adversarial` trains on: images within eps of the clean ones, in [0, 1],
    on which the trained shapes-a does worse than on the clean ones."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(3)
    imgs, attrs = zip(*(shapes.sample_base(rng) for _ in range(32)))
    caps = [shapes.base_caption(*a) for a in attrs]  # as in training: each caption is true of its image
    match = torch.tensor([[shapes.compatible(c, a) for c in attrs] for a in attrs], dtype=torch.float32)
    model = shapes_a.model
    with torch.no_grad():
        txt = F.normalize(model.encode_text(shapes_a.tokenizer(caps)), dim=-1)
    x = shapes.to_tensor(list(imgs))
    eps = 0.05
    torch.manual_seed(0)
    adv = shapes.adversarial_batch(model, x, txt, match, eps)
    assert adv.shape == x.shape and float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert float((adv - x).abs().max()) <= eps + 1e-6
    assert float((adv - x).abs().mean()) > eps / 4  # moved, not left clean

    def loss(images: torch.Tensor) -> float:
        with torch.no_grad():
            emb = F.normalize(model.encode_image(shapes.normalize(images)), dim=-1)
            return float(shapes.contrastive_loss(model, emb, txt, match))

    assert loss(adv) > loss(x) + 0.5  # measured: 0.71 clean, 2.40 attacked, 0.71 under random noise of the same size


def test_train_shapes_records_its_adversarial_radius(tmp_path, capsys):
    """Plumbing only (4 steps, the model is not meant to be good): the radius reaches the trainer
    and its record, and a radius outside 0-0.5 is refused in one line."""
    import json

    from clipterm.cli import main

    out = tmp_path / "r"
    code = main(["train-shapes", "--out", str(out), "--steps", "4", "--batch", "8", "--adversarial", "0.03"])
    assert code == 0
    record = json.loads((out / "training.json").read_text())
    assert record["adversarial"] == 0.03 and record["steps"] == 4
    capsys.readouterr()
    for bad in ("0.7", "-0.1", "nan"):
        code = main(["train-shapes", "--out", str(tmp_path / "x"), "--steps", "1", "--adversarial", bad])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "--adversarial" in err, err
    assert not (tmp_path / "x").exists()


FINDING_PROMPTS = [
    "a red circle on a black background",
    "a green square on a white background",
    "a blue triangle on a black background",
    "a yellow circle on a white background",
    "a red square on a white background",
    "a blue circle on a black background",
]


def test_seed_004_finding(shapes_a, shapes_b):
    """Unconstrained wins on its own model; constrained transfers better to an independent judge."""
    judge = Judge(shapes_b)
    lanes = {
        "a": preset("unconstrained"),
        "b": preset("constrained").with_value("views", 8).with_value("tv_weight", 1e-3),
    }
    own = {"a": [], "b": []}
    judged = {"a": [], "b": []}
    for prompt in FINDING_PROMPTS:
        e = Engine(shapes_a, prompt, lanes, seed=0, eval_every=0)
        e.step(200)
        e.flush()
        for lane in "ab":
            own[lane].append(float(e.lanes[lane].history[-1, 0]))
            judged[lane].append(judge.rank_canvas(e.shown(lane), prompt).prompt_score)
    assert np.mean(own["a"]) > np.mean(own["b"])
    assert np.mean(judged["b"]) > np.mean(judged["a"])
