"""A judge for any model (issue 14, item 4): `--judge MODEL[:PRETRAINED]` and `--labels shapes|imagenet|FILE`.

The judge ranks the prompt among its labels; a prompt that is not one of them is ranked among the
labels plus itself (N = labels + 1). Bad labels are one line and exit 2, before any model loads.
"""

from __future__ import annotations

import re
from pathlib import Path

import open_clip
import pytest
import torch
from PIL import Image
from sessionkit import cli

from clipterm import shapes
from clipterm.judge import Judge, encode_labels
from clipterm.labels import LabelsError, LabelSet, default_labels, label_set, read_labels
from clipterm.launch import DEFAULT_LANES

RED = "a red circle on a black background"
VERDICT = re.compile(r"judge (\S+): prompt ranked #(\d+) of (\d+); top: (.+) \((-?\d\.\d{4})\)$")


def red_png(tmp_path: Path) -> Path:
    path = tmp_path / "red.png"
    Image.fromarray(shapes.render("red", "circle", "black", 15, 30, 30)).save(path)
    return path


def labels_file(tmp_path: Path, text: str | bytes, name: str = "labels.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def verdicts(out: str) -> list[tuple[str, int, int, str, float]]:
    found = [VERDICT.search(line.strip()) for line in out.splitlines()]
    return [(m[1], int(m[2]), int(m[3]), m[4], float(m[5])) for m in found if m]


def test_labels_file_skips_blank_lines_and_comments(tmp_path):
    f = labels_file(tmp_path, "\ufeff# colours\r\n\r\n  a red circle  \r\n#a blue square\na dog\n\n")
    got = read_labels(f)
    assert got.labels == ("a red circle", "a dog") and got.texts("a dog") == ["a dog"]
    assert "2 labels of" in got.describe()


def test_default_labels_follow_the_judge(tmp_path):
    assert default_labels("shapes-b") == default_labels("shapes-c") == "shapes"
    assert default_labels("ViT-B-32") == default_labels("RN50") == "imagenet"
    trained = tmp_path / "mine"
    trained.mkdir()
    assert default_labels(f"local-dir:{trained}") == "imagenet"
    (trained / "training.json").write_text("{}")  # what `clipterm train-shapes` leaves
    assert default_labels(f"local-dir:{trained}") == "shapes"
    assert label_set(None, "shapes-b").labels == tuple(shapes.base_captions())


@pytest.mark.parametrize(
    "content,needle",
    [
        ("", "has no labels"),
        ("# just a comment\n\n   \n", "has no labels"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
        (b"a red circle\n\xff\xfe broken\n", "not UTF-8"),
        ("ok\na \x1b[31mred\x1b[0m circle\n", "labels.txt:2: the label holds a control character (\\x1b)"),
        ("ok\na\tcircle\n", "control character (\\x09)"),
        ("x" * 301 + "\n", "at most 300"),
        (None, "not 'shapes', 'imagenet' or an existing labels file"),
        ("imagnet", "not 'shapes', 'imagenet' or an existing labels file"),
        ("DIR", "is a directory"),
    ],
    ids=["empty", "comments", "binary", "latin1", "escape", "tab", "long", "missing", "unknown-name", "directory"],
)
def test_bad_labels_are_one_line_and_exit_2(tmp_path, capsys, content, needle):
    """Refused before any model loads: one line, the file's bytes never reach the terminal raw."""
    img = red_png(tmp_path)
    if content is None:
        value = str(tmp_path / "missing.txt")
    elif content == "imagnet":
        value = "imagnet"
    elif content == "DIR":
        value = str(tmp_path)
    else:
        value = str(labels_file(tmp_path, content))
    code, out, err = cli(capsys, "judge", img, "--labels", value, "--device", "cpu")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert out == "" and "\x1b" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--judge", "NoSuchNet-7"], "unknown model"),
        (["--judge", "shapes-b:openai"], "has no pretrained tags"),
        (["--judge", "ViT-B-32:"], "bad model spec"),
        (["--judge", "ViT-B-32:none", "--pretrained", "openai"], "disagree"),
    ],
)
def test_unknown_judge_is_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    code, out, err = cli(capsys, "judge", red_png(tmp_path), *argv, "--device", "cpu")
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err and out == "", err


def test_judge_with_a_labels_file_ranks_the_prompt_among_labels_plus_itself(tmp_path, capsys):
    """A prompt that is a label keeps N = labels; any other prompt joins them (N = labels + 1)."""
    img = red_png(tmp_path)
    f = labels_file(tmp_path, f"# three\n{RED}\na blue square on a white background\na yellow triangle\n")
    code, out, err = cli(capsys, "judge", img, "--labels", f, "--prompt", RED, "--device", "cpu")
    assert code == 0, err
    assert verdicts(out) == [("shapes-b", 1, 3, RED, pytest.approx(verdicts(out)[0][4]))]
    code, out, err = cli(capsys, "judge", img, "--judge", "shapes-c", "--labels", f, "--prompt", "a golden retriever")
    assert code == 0, err
    ((name, rank, n, top, _),) = verdicts(out)
    assert (name, n, top) == ("shapes-c", 4, RED) and 2 <= rank <= 4
    assert "prompt rank" in out.splitlines()[0]  # the per-image line scripts read is kept


def test_default_judge_keeps_the_24_base_captions(tmp_path, capsys):
    code, out, err = cli(capsys, "judge", red_png(tmp_path), "--prompt", RED, "--device", "cpu")
    assert code == 0, err
    assert out.splitlines()[0].endswith(f"| prompt rank 1/24 ({verdicts(out)[0][4]:.4f})")
    assert verdicts(out)[0][:4] == ("shapes-b", 1, 24, RED)


def test_imagenet_labels_are_open_clips_class_names(tmp_path, shapes_b):
    """`--labels imagenet`: open_clip's 1,000 class names, each the mean over its templates; a free prompt
    makes N = 1001, a class name keeps N = 1000. (A shapes judge is the cheapest real text tower.)"""
    labels = label_set("imagenet", "shapes-b")
    assert labels.labels == tuple(open_clip.IMAGENET_CLASSNAMES) and len(labels.labels) == 1000
    assert [t("dog") for t in labels.templates] == [t("dog") for t in open_clip.SIMPLE_IMAGENET_TEMPLATES]
    judge = Judge(shapes_b, labels, name="shapes-b")
    img = shapes.render("red", "circle", "black", 15, 30, 30)
    free = judge.rank_image(img, "a golden retriever")
    assert len(free.captions) == 1001 and 1 <= free.prompt_rank <= 1001
    assert set(free.captions) == set(open_clip.IMAGENET_CLASSNAMES) | {"a golden retriever"}
    emb = judge.label_embeddings()
    assert judge.label_embeddings() is emb and emb.shape[0] == 1000  # computed once, then kept
    named = judge.rank_image(img, "goldfish")
    assert len(named.captions) == 1000  # "goldfish" is class 1: ranked as that class, not added
    assert named.prompt_score == pytest.approx(
        float(shapes_b.encode_pixels(shapes_b.preprocess_uint8(img)) @ emb[1]), abs=1e-5
    )


def test_template_embedding_is_the_normalised_mean_of_its_prompts(shapes_b):
    labels = LabelSet("t", ("circle", "square", "triangle"), (lambda c: f"a {c}", lambda c: f"a photo of a {c}"))
    got = encode_labels(shapes_b, labels)
    for i, label in enumerate(labels.labels):
        mean = shapes_b.encode_text(labels.texts(label)).mean(0)
        assert torch.allclose(got[i], mean / mean.norm(), atol=1e-5)
    assert torch.allclose(got.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_untrained_vit_b_32_judge_plumbing(tmp_path, capsys):
    """Plumbing only: an untrained ViT-B-32 (`--judge ViT-B-32:none`) loads as a judge, ranks a labels
    file plus the prompt and prints the verdict line. Its ranks mean nothing; nothing here checks them."""
    f = labels_file(tmp_path, "a dog\na cat\na car\n")
    code, out, err = cli(
        capsys, "judge", red_png(tmp_path), "--judge", "ViT-B-32:none", "--labels", f, "--prompt", "a golden retriever"
    )
    assert code == 0, err
    ((name, rank, n, top, score),) = verdicts(out)
    assert (
        name == "ViT-B-32:none"
        and n == 4
        and 1 <= rank <= 4
        and top in {"a dog", "a cat", "a car", "a golden retriever"}
    )
    assert -1.0 <= score <= 1.0


def test_c1_controls_in_a_labels_file_are_refused_and_shown_escaped(tmp_path):
    """C1 controls (U+0080-U+009F: some terminals obey U+009B as CSI) are refused like C0 ones."""
    f = labels_file(tmp_path, "a red circle\na \u009b31m circle\n")
    with pytest.raises(LabelsError, match=r"labels.txt:2: .*\(\\x9b\)") as e:
        read_labels(f)
    assert "\u009b" not in str(e.value)


def test_run_reports_the_judges_verdict_for_every_lane(tmp_path, capsys):
    """`clipterm run --judge M --labels FILE`: one verdict line per lane at the end, N = labels + 1."""
    f = labels_file(tmp_path, "a red square\na blue circle\n")
    s = tmp_path / "s"
    code, _, err = cli(
        capsys, "run", s, "--prompt", RED, "--steps", "2", "--model", "shapes-a", "--device", "cpu", "--quiet",
        "--judge", "shapes-c", "--labels", f,
    )  # fmt: skip
    assert code == 0, err
    lanes = re.findall(r"lane (\w+): judge shapes-c: prompt ranked #([1-3]) of 3; top: ", err)
    assert [lane for lane, _ in lanes] == list(DEFAULT_LANES)


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--judge", "NoSuchNet-7"], "unknown model"),
        (["--labels", "LABELS"], "has no labels"),
        (["--judge", "none", "--labels", "imagenet"], "--labels needs a judge"),
    ],
)
@pytest.mark.parametrize("batch", [False, True], ids=["run", "batch"])
def test_bad_judge_for_a_run_or_batch_writes_nothing(tmp_path, capsys, flags, needle, batch):
    empty = labels_file(tmp_path, "# nothing\n", "empty.txt")
    out = tmp_path / "out"
    head = ["--prompts-file", labels_file(tmp_path, RED + "\n", "p.txt")] if batch else ["--prompt", RED]
    flags = [str(empty) if x == "LABELS" else x for x in flags]
    code, _, err = cli(capsys, "run", out, *head, "--steps", "2", "--model", "shapes-a", "--device", "cpu", *flags)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not out.exists()


def test_batch_judges_with_the_chosen_labels(tmp_path, capsys):
    f = labels_file(tmp_path, f"{RED}\na blue square on a white background\na dog\n")
    prompts = labels_file(tmp_path, f"{RED}\na yellow triangle on a black background\n", "p.txt")
    out = tmp_path / "batch"
    code, stdout, err = cli(
        capsys, "run", out, "--prompts-file", prompts, "--steps", "2", "--model", "shapes-a", "--device", "cpu",
        "--quiet", "--lanes", "b", "--judge", "shapes-c", "--labels", f,
    )  # fmt: skip
    assert code == 0, err
    rows = [line.split(",") for line in (out / "summary.csv").read_text().splitlines()[1:]]
    candidates = {r[0]: int(r[10]) for r in rows}
    assert candidates == {RED: 3, "a yellow triangle on a black background": 4}  # a label, and not one
    assert all(r[11] in {RED, "a blue square on a white background", "a dog", r[0]} for r in rows)
    assert "shapes-c's similarity" in stdout and "the 3 labels of" in stdout
