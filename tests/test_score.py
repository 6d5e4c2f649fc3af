"""`clipterm score`: the table equals similarities computed directly; models load one at a time."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from PIL import Image
from sessionkit import cli as run_main
from sessionkit import clipterm, offline_env

from clipterm import score as sc
from clipterm.errors import ClipTermError
from clipterm.shapes import render

PROMPT = "a red circle on a white background"


@pytest.fixture()
def images(tmp_path):
    """Two shapes-world images (one matching the prompt) and a 'photo' of another size."""
    paths = []
    for name, args in [
        ("red.png", ("red", "circle", "white", 18, 32, 30)),
        ("blue.png", ("blue", "square", "black", 14, 28, 36)),
    ]:
        Image.fromarray(render(*args)).save(tmp_path / name)
        paths.append(tmp_path / name)
    photo = Image.fromarray(render("red", "circle", "white", 20, 32, 32)).resize((150, 100), Image.BICUBIC)
    photo.save(tmp_path / "photo.jpg", quality=95)
    return paths, tmp_path / "photo.jpg"


def direct(bundle, path, prompt=PROMPT) -> float:
    """The similarity as a reader would compute it by hand: preprocess, encode, cosine."""
    with torch.no_grad():
        img = bundle.encode_pixels(bundle.preprocess_uint8(Image.open(path).convert("RGB")))
        return float(img[0] @ bundle.encode_text([prompt])[0])


def test_table_matches_direct_scores(images, shapes_a, shapes_b):
    paths, photo = images
    table = sc.score_images(paths, PROMPT, ["shapes-a", "shapes-b"], "cpu", baseline=photo)
    assert table.columns == ["shapes-a", "shapes-b"]
    assert table.rows == [str(p) for p in paths] + [f"baseline: {photo}"]
    for i, p in enumerate(paths + [photo]):
        for j, bundle in enumerate((shapes_a, shapes_b)):
            assert table.values[i, j] == pytest.approx(direct(bundle, p), abs=1e-5)
    assert table.values[0].min() > table.values[1].max()  # the red circle beats the blue square on both


def test_cli_prints_images_as_rows_models_as_columns(images, shapes_a, shapes_b, capsys):
    paths, photo = images
    code, out, err = run_main(
        capsys,
        "score",
        *paths,
        "--prompt",
        PROMPT,
        "--model",
        "shapes-a",
        "--model",
        "shapes-b",
        "--baseline",
        photo,
        "--device",
        "cpu",
    )
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == f"prompt: {PROMPT}"
    assert lines[1].split() == ["image", "shapes-a", "shapes-b"]
    rows = {ln.rsplit(None, 2)[0].strip(): [float(v) for v in ln.split()[-2:]] for ln in lines[3:]}
    assert list(rows) == [str(paths[0]), str(paths[1]), f"baseline: {photo}"]
    for key, p in zip(rows, paths + [photo]):
        assert rows[key] == pytest.approx([direct(shapes_a, p), direct(shapes_b, p)], abs=6e-5)


def test_json_output_and_weighted_prompt(images, shapes_a, capsys):
    paths, _ = images
    prompt = "a red circle:2 | a blue square:-1"
    code, out, err = run_main(
        capsys, "score", paths[0], "--prompt", prompt, "--model", "shapes-a", "--device", "cpu", "--json"
    )
    assert code == 0, err
    import json

    data = json.loads(out)
    want = (2 * direct(shapes_a, paths[0], "a red circle") - direct(shapes_a, paths[0], "a blue square")) / 2
    assert data["scores"][str(paths[0])]["shapes-a"] == pytest.approx(want, abs=1e-5)


def test_models_load_one_at_a_time(images, monkeypatch):
    paths, _ = images
    live: list[weakref.ref] = []
    real = sc.load_model

    def tracking(name, pretrained=None, device="auto"):
        assert all(r() is None for r in live), "the previous model is still alive"
        bundle = real(name, pretrained, device)
        live.append(weakref.ref(bundle.model))
        return bundle

    monkeypatch.setattr(sc, "load_model", tracking)
    table = sc.score_images(paths, PROMPT, ["shapes-a", "shapes-b", "shapes-a"], "cpu")
    assert len(live) == 3 and table.values.shape == (2, 3)
    assert table.values[:, 0] == pytest.approx(table.values[:, 2])


def test_prompt_scorer_for_the_app(shapes_b):
    scorer = sc.PromptScorer(shapes_b, PROMPT)
    canvas = render("red", "circle", "white", 18, 32, 30).transpose(2, 0, 1).astype(np.float32) / 255
    assert scorer.score_canvas(canvas) == pytest.approx(
        scorer.score_image(render("red", "circle", "white", 18, 32, 30)), abs=1e-6
    )
    before = scorer.score_canvas(canvas)
    scorer.set_prompt("a green triangle on a black background")
    assert scorer.score_canvas(canvas) < before


def test_model_specs():
    assert sc.parse_model_spec("shapes-b") == ("shapes-b", None)
    assert sc.parse_model_spec("ViT-B-32:openai") == ("ViT-B-32", "openai")
    assert sc.parse_model_spec("ViT-B-32:/ckpt/x.pt") == ("ViT-B-32", "/ckpt/x.pt")
    assert sc.parse_model_spec("local-dir:/m") == ("local-dir:/m", None)
    for bad in (":openai", "ViT-B-32:", "shapes-a:openai", ""):
        with pytest.raises(ClipTermError):
            sc.parse_model_spec(bad)


def test_bad_inputs_one_line_exit_2(images, tmp_path, capsys):
    paths, _ = images
    (tmp_path / "notes.txt").write_text("not an image")
    cases = [
        ([tmp_path / "nope.png", "--prompt", PROMPT, "--model", "shapes-a"], "no such image"),
        ([tmp_path / "notes.txt", "--prompt", PROMPT, "--model", "shapes-a"], "not a readable image"),
        ([paths[0], "--prompt", PROMPT, "--model", "shapes-a", "--baseline", tmp_path / "nope.jpg"], "no such image"),
        ([paths[0], "--prompt", PROMPT, "--model", "no-such-model"], "unknown model"),
        ([paths[0], "--prompt", PROMPT, "--model", "ViT-B-32:no-such-tag"], "unknown pretrained tag"),
        ([paths[0], "--prompt", PROMPT, "--model", ":x"], "bad model spec"),
        ([paths[0], "--prompt", " ", "--model", "shapes-a"], "prompt is empty"),
        ([paths[0], "--model", "shapes-a"], "--prompt"),
    ]
    for argv, needle in cases:
        code, out, err = run_main(capsys, "score", *argv, "--device", "cpu")
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert out == ""


def test_unavailable_weights_are_one_line(images, tmp_path):
    paths, _ = images
    env = offline_env(tmp_path)
    proc = clipterm(
        "score",
        str(paths[0]),
        "--prompt",
        PROMPT,
        "--model",
        "shapes-a",
        "--model",
        "ViT-B-32:openai",
        "--device",
        "cpu",
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("clipterm: error")]
    assert len(err) == 1 and "not cached" in err[0] and "Traceback" not in proc.stderr
