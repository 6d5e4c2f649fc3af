"""An independent model's verdict on an image: its ranking of the prompt among its labels.

The judge is how clipterm tells an image that really shows "a red circle" from noise that only
fools the model it was optimized on (seed 004's finding, made measurable). Any CLIP can judge
(`--judge MODEL[:PRETRAINED]`); what it ranks the prompt among is a label set (`labels.py`): the 24
base captions for a shapes model, ImageNet's classes for any other, or the labels of a file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from clipterm.errors import ClipTermError
from clipterm.images import read_image as read_image  # the one safe reader; cli imports it from here
from clipterm.labels import LabelSet, label_set
from clipterm.models import ModelBundle
from clipterm.score import parse_model_spec
from clipterm.text import printable

DEFAULT_JUDGE = "shapes-b"
TEXT_BATCH = 512  # prompts per text-tower pass while labels are encoded (bounds memory, not results)


@dataclass
class Verdict:
    captions: list[str]  # sorted best first
    scores: list[float]
    prompt: str | None = None
    prompt_rank: int | None = None  # 1-based rank of the prompt among the candidates
    prompt_score: float | None = None

    @property
    def top(self) -> str:
        return self.captions[0]

    @property
    def top_score(self) -> float:
        return self.scores[0]

    def line(self, judge: str) -> str:
        """`judge NAME: prompt ranked #k of N; top: LABEL (sim)`, escaped for a terminal (labels may
        come from a file)."""
        head = f"judge {printable(judge)}: "
        if self.prompt_rank is not None:
            head += f"prompt ranked #{self.prompt_rank} of {len(self.captions)}; "
        return head + f"top: {printable(self.top)} ({self.top_score:.4f})"


@torch.no_grad()
def encode_labels(bundle: ModelBundle, labels: LabelSet) -> torch.Tensor:
    """Unit-norm text embeddings, one row per label: with templates, the mean of the label's templated
    prompts' embeddings, renormalised (CLIP's zero-shot classifier), in batches of TEXT_BATCH prompts."""
    per = max(1, len(labels.templates))
    step = max(1, TEXT_BATCH // per)
    rows = []
    for i in range(0, len(labels.labels), step):
        chunk = labels.labels[i : i + step]
        emb = bundle.encode_text([t for label in chunk for t in labels.texts(label)])
        if per > 1:
            emb = torch.nn.functional.normalize(emb.view(len(chunk), per, -1).mean(1), dim=-1)
        rows.append(emb)
    return torch.cat(rows)


class Judge:
    """Ranks its labels, plus the prompt if it is not one of them, for an image.

    The labels' embeddings are computed on first use and kept: ImageNet's 1,000 classes are 7,000
    text-tower passes, paid once per judge, not once per image.
    """

    def __init__(self, bundle: ModelBundle, labels: LabelSet | None = None, name: str | None = None) -> None:
        self.bundle = bundle
        self.labels = labels if labels is not None else label_set(None, bundle.name)
        self.name = name or bundle.name
        self.captions = list(self.labels.labels)
        self._known = set(self.captions)
        self._emb: torch.Tensor | None = None

    def label_embeddings(self) -> torch.Tensor:
        """(len(labels), D), computed once."""
        if self._emb is None:
            self._emb = encode_labels(self.bundle, self.labels)
        return self._emb

    def describe(self) -> str:
        return f"{printable(self.name)} ranks {self.labels.describe()} and the prompt"

    @torch.no_grad()
    def rank_pixels(self, pixels: torch.Tensor, prompt: str | None = None) -> Verdict:
        """pixels: (1,3,S,S) in [0,1] at the judge's input size.

        A prompt that is one of the labels (exactly) is ranked as that label; any other prompt is
        encoded as given and ranked among the labels plus itself (N = labels + 1).
        """
        feat = self.bundle.encode_pixels(pixels.to(self.bundle.device))
        caps = list(self.captions)
        emb = self.label_embeddings()
        if prompt is not None and prompt not in self._known:
            caps.append(prompt)
            emb = torch.cat([emb, self.bundle.encode_text([prompt])])
        sims = (feat @ emb.T)[0].cpu().numpy()
        order = np.argsort(-sims, kind="stable")
        v = Verdict([caps[i] for i in order], [float(sims[i]) for i in order], prompt)
        if prompt is not None:
            v.prompt_rank = v.captions.index(prompt) + 1
            v.prompt_score = float(sims[caps.index(prompt)])
        return v

    def rank_image(self, image: np.ndarray | Image.Image, prompt: str | None = None) -> Verdict:
        """An 8-bit image of any size, put through the judge's own preprocessing."""
        return self.rank_pixels(self.bundle.preprocess_uint8(image), prompt)

    def rank_canvas(self, canvas: np.ndarray, prompt: str | None = None) -> Verdict:
        """A float (3,H,W) canvas in [0,1], quantised to 8 bits as a saved PNG would be."""
        arr = (np.clip(canvas, 0, 1).transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
        return self.rank_image(arr, prompt)


def load_judge(spec: str, labels: str | None, device: str | None, pretrained: str | None = None) -> Judge:
    """`--judge MODEL[:PRETRAINED]` and `--labels` as a Judge: the labels are checked first (a bad file
    costs no model load), then the model loads; every refusal is one ClipTermError line.

    `pretrained`: the judge command's older `--pretrained` flag, the same as `:PRETRAINED`."""
    from clipterm.models import load_model  # looked up at call time (tests substitute loaded models)

    name, tag = parse_model_spec(spec)
    if pretrained is not None and tag is not None and pretrained != tag:
        raise ClipTermError(f"--judge {printable(spec)} and --pretrained {printable(pretrained)} disagree; give one")
    chosen = label_set(labels, name)
    return Judge(load_model(name, tag or pretrained, device), chosen, name=spec.strip())


def judge_from_flags(spec: str | None, labels: str | None, device: str | None) -> Judge | None:
    """The judge that `--judge`/`--labels` of run, prompt batches and the app ask for; None when off
    (`--judge none`). Loaded before a session is touched, so a bad judge or labels file writes nothing."""
    if spec is None or spec.strip() == "none":
        if labels is not None:
            raise ClipTermError("--labels needs a judge (--judge none turns judging off)")
        return None
    return load_judge(spec, labels, device)
