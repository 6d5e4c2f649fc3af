"""Dataset examples (issue 14, item 3): `render-shapes` and `examples`, their ranking, their sheet and
CSV, the progress they report, and their refusals (one line, exit 2, nothing written)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
from PIL import Image
from sessionkit import cli, snapshot, write_png

from clipterm import shapes
from clipterm.launch import Progress
from clipterm.units import block_activations, channel_means


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    """40 base-world renders with their captions (made once for the module)."""
    folder = tmp_path_factory.mktemp("renders") / "shapes"
    from clipterm.cli import main

    assert main(["render-shapes", "40", str(folder), "--seed", "5"]) == 0
    return folder


def read_csv(path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_render_shapes_writes_base_world_pngs_and_their_captions(renders, shapes_a):
    rows = read_csv(renders / "captions.csv")
    assert len(rows) == 40 and sorted(p.name for p in renders.glob("*.png")) == [r["file"] for r in rows]
    assert {r["caption"] for r in rows} <= set(shapes.base_captions()) and len({r["caption"] for r in rows}) > 10
    for r in rows[:8]:
        img = np.asarray(Image.open(renders / r["file"]))
        assert img.shape == (64, 64, 3)
        assert tuple(img[0, 0]) in shapes.BACKGROUNDS.values() and r["caption"].endswith(
            f"{r['background']} background"
        )
        assert tuple(img[0, 0]) == shapes.BACKGROUNDS[r["background"]]
        assert (img == shapes.COLOURS[r["colour"]]).all(-1).sum() > 50  # the object, in its colour
    # the bundled model reads the captions off the renders (they are the world it was trained on)
    caps = shapes.base_captions()
    text = shapes_a.encode_text(caps)
    pixels = torch.cat([shapes_a.preprocess_uint8(Image.open(renders / r["file"])) for r in rows])
    with torch.no_grad():
        guess = (shapes_a.encode_pixels(pixels) @ text.T).argmax(1).tolist()
    assert sum(caps[g] == r["caption"] for g, r in zip(guess, rows)) >= 38


def test_examples_ranks_a_folder_by_the_channel_and_draws_top_and_bottom(renders, tmp_path, capsys, shapes_a):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for p in sorted(renders.glob("*.png")):
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "notes.txt").write_text("not an image")
    sheet = tmp_path / "out" / "sheet.png"
    argv = ["examples", folder, "--model", "shapes-a", "--block", "2", "--channel", "5", "--out", sheet]
    code, out, err = cli(capsys, *argv, "--device", "cpu", "--batch", "16")
    assert code == 0, err
    assert out.split() == [str(sheet), str(sheet.with_suffix(".csv"))]
    assert "skipped 2 unreadable files of 42" in err
    progress = [line for line in err.splitlines() if line.startswith("image ")]
    assert progress and progress[-1].startswith("image 42/42") and "images/s" in progress[-1]
    rows = read_csv(sheet.with_suffix(".csv"))
    assert [r["rank"] for r in rows] == [str(k) for k in range(1, 41)]
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    # the scores are the channel's mean activation on each file, as an independent forward measures it
    for r in (rows[0], rows[17], rows[-1]):
        px = shapes_a.preprocess_uint8(Image.open(folder / r["file"]))
        want = float(channel_means(block_activations(shapes_a, px, 2))[0, 5])
        assert float(r["score"]) == pytest.approx(want, abs=1e-4)
    img = Image.open(sheet)
    assert img.mode == "RGB" and img.width > 8 * 96 and img.height > 4 * 96  # two halves of 2 rows of 8


def test_examples_of_a_resnet_stage(renders, tmp_path, capsys):
    """Plumbing on the bundled ModifiedResNet shapes-b: its last stage (layer4), its last channel."""
    sheet = tmp_path / "rn.png"
    argv = ["examples", renders, "--model", "shapes-b", "--block", "3", "--channel", "511", "--out", sheet]
    code, _, err = cli(capsys, *argv, "--device", "cpu", "--quiet")
    assert code == 0, err
    assert len(read_csv(sheet.with_suffix(".csv"))) == 40 and "image " not in err


@pytest.mark.parametrize(
    "make,extra,needle",
    [
        ("empty", [], "holds no files"),
        ("junk", [], "none of its 2 files is a readable image"),
        ("missing", [], "no such folder"),
        ("file", [], "is not a folder"),
        ("bomb", [], "none of its 2 files is a readable image"),
        ("renders", ["--block", "3"], "block 3 is out of range: shapes-a has blocks 0-2"),
        ("renders", ["--channel", "128"], "has channels 0-127"),
    ],
)
def test_examples_refuses_bad_input_in_one_line_and_writes_nothing(renders, tmp_path, capsys, make, extra, needle):
    folder = {"renders": renders}.get(make, tmp_path / "in")
    if make == "empty":
        folder.mkdir()
    elif make == "junk":
        folder.mkdir()
        (folder / "a.png").write_bytes(b"nope")
        (folder / "b.jpg").write_bytes(b"")
    elif make == "file":
        folder.write_text("x")
    elif make == "bomb":  # a 60000 x 60000 header, and one claiming more pixels than clipterm decodes
        folder.mkdir()
        write_png(folder / "bomb.png", 60000, 60000, rows=False)
        write_png(folder / "big.png", 12000, 12000, rows=False)
    out = tmp_path / "made" / "sheet.png"
    flags = {"--block": "2", "--channel": "5"}
    for k, v in zip(extra[::2], extra[1::2]):
        flags[k] = v
    before = snapshot(tmp_path)
    argv = ["examples", folder, "--model", "shapes-a", "--out", out, "--device", "cpu", "--quiet"]
    code, text, err = cli(capsys, *argv, *[x for kv in flags.items() for x in kv])
    assert code == 2 and text == "" and len(err.strip().splitlines()) == 1 and needle in err, err
    assert snapshot(tmp_path) == before


def test_render_shapes_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    code, _, err = cli(capsys, "render-shapes", "3", tmp_path)
    assert code == 2 and "is not empty" in err and [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_progress_counts_images_as_plain_lines_off_a_terminal():
    stream = io.StringIO()
    bar = Progress(100, 0, quiet=False, stream=stream, tty=False, noun="image")
    for n in (10, 50, 100):
        bar.update(n, {})
    lines = stream.getvalue().splitlines()
    assert [ln.split()[1] for ln in lines] == ["10/100", "50/100", "100/100"]
    assert all(ln.startswith("image ") and ln.endswith("images/s") for ln in lines)
    tty = io.StringIO()
    bar = Progress(100, 0, quiet=False, stream=tty, tty=True, noun="image")
    bar.update(100, {})
    assert "100/100" in tty.getvalue() and "images/s" in tty.getvalue()


def test_a_large_folder_is_streamed_in_batches(renders, shapes_a, monkeypatch):
    from clipterm import examples, units

    seen = []
    orig = units.block_activations
    monkeypatch.setattr(units, "block_activations", lambda b, px, k: seen.append(len(px)) or orig(b, px, k))
    files = sorted(renders.glob("*.png"))
    done = []
    scored, skipped = examples.score_folder(shapes_a, 2, 5, files, batch=16, progress=done.append)
    assert seen == [16, 16, 8] and done == [16, 32, 40] and skipped == 0 and len(scored) == 40
