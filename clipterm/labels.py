"""The labels a judge ranks a prompt among: `--labels shapes|imagenet|FILE`.

A judge only says something when it compares: "the prompt ranks #1 of 24" means the picture looks
more like the prompt than like any other caption the judge knows. Which captions those are depends
on the judge: a shapes model knows the 24 base captions of its world, an ImageNet-trained CLIP
knows ImageNet's 1,000 classes. This module names those sets and reads a user's own from a file.

Reading a labels file needs no torch, so a bad one is refused before any model loads; the named
sets come from the shapes world and open_clip, imported when asked for.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clipterm.errors import ClipTermError
from clipterm.images import regular_input
from clipterm.modelnames import is_shapes_model
from clipterm.text import content_lines, first_control, printable

NAMED = ("shapes", "imagenet")
MAX_FILE_BYTES = 1 << 20
MAX_LABELS = 10_000
MAX_LABEL_CHARS = 300


class LabelsError(ClipTermError):
    """A --labels value that names no label set, or a labels file that cannot be used."""


@dataclass(frozen=True)
class LabelSet:
    """Labels in a fixed order, and the prompt templates each label is put through (none: as is).

    With templates, a label's text embedding is the mean of its templated prompts' embeddings, as
    CLIP's zero-shot classification does.
    """

    name: str  # "shapes", "imagenet", or the file as given
    labels: tuple[str, ...]
    templates: tuple[Callable[[str], str], ...] = field(default=(), compare=False)

    def texts(self, label: str) -> list[str]:
        """The prompts that stand for `label` (the label itself when there are no templates)."""
        return [t(label) for t in self.templates] if self.templates else [label]

    def describe(self) -> str:
        """What the judge ranks, for a log line (file names escaped: they reach terminals)."""
        if self.name == "shapes":
            return f"the {len(self.labels)} base captions"
        if self.name == "imagenet":
            return f"the {len(self.labels)} ImageNet classes ({len(self.templates)} templates each)"
        return f"the {len(self.labels)} labels of {printable(self.name)}"


def shapes_labels() -> LabelSet:
    from clipterm.shapes import base_captions

    return LabelSet("shapes", tuple(base_captions()))


def imagenet_labels() -> LabelSet:
    """open_clip's ImageNet-1k class names and its short list of zero-shot templates.

    open_clip ships OPENAI_IMAGENET_TEMPLATES (80) and SIMPLE_IMAGENET_TEMPLATES (7, a subset it
    offers for the same purpose); the 7 are used because every label costs one text-tower pass per
    template: 7,000 prompts instead of 80,000, which decides whether a CPU can do it at all.
    """
    import open_clip

    return LabelSet("imagenet", tuple(open_clip.IMAGENET_CLASSNAMES), tuple(open_clip.SIMPLE_IMAGENET_TEMPLATES))


def default_labels(model_name: str) -> str:
    """The label set a judge uses when --labels is not given."""
    return "shapes" if is_shapes_model(model_name) else "imagenet"


def label_set(value: str | None, model_name: str) -> LabelSet:
    """`--labels` (None: the judge's default) as a LabelSet; a LabelsError says what is wrong."""
    value = default_labels(model_name) if value is None else value
    if value == "shapes":
        return shapes_labels()
    if value == "imagenet":
        return imagenet_labels()
    if not value.strip() or not os.path.lexists(value):
        raise LabelsError(f"--labels {printable(value)!r}: not 'shapes', 'imagenet' or an existing labels file")
    return read_labels(Path(value))


def read_labels(path: Path) -> LabelSet:
    """A labels file: UTF-8 text, one label per line; blank lines and lines starting with # skipped.

    Refused in one line: not a regular file, over 1 MiB, binary (NUL bytes), not UTF-8, a label
    with a control character (labels are printed on terminals), no labels at all, too many.
    """
    p = regular_input(path, "labels file")
    shown = printable(str(p))
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise LabelsError(f"{shown}: cannot read ({e.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise LabelsError(f"{shown}: larger than {MAX_FILE_BYTES >> 20} MiB; a labels file is one label per line")
    if b"\x00" in data:
        raise LabelsError(f"{shown}: a binary file, not text (one label per line)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LabelsError(f"{shown}: not UTF-8 text") from None
    labels = []
    for n, line in content_lines(text):
        bad = first_control(line)
        if bad is not None:
            raise LabelsError(f"{shown}:{n}: the label holds a control character ({bad}); plain text only")
        if len(line) > MAX_LABEL_CHARS:
            raise LabelsError(f"{shown}:{n}: a label of {len(line)} characters; at most {MAX_LABEL_CHARS}")
        labels.append(line)
    if not labels:
        raise LabelsError(f"{shown}: has no labels (one per line; blank lines and # comments are skipped)")
    if len(labels) > MAX_LABELS:
        raise LabelsError(f"{shown}: {len(labels)} labels; at most {MAX_LABELS}")
    return LabelSet(str(path), tuple(labels))
