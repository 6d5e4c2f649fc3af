"""Cross-model scoring (seed 004's compare script): how much do *other* CLIPs see the prompt?

An image painted on one model can score high there and mean nothing to another; scoring the same
images on several models side by side (plus a real photo as a baseline) makes that transfer gap
visible. Models load one at a time and are freed before the next, so ViT-L and friends fit.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipterm.errors import ClipTermError
from clipterm.images import read_image
from clipterm.modelnames import BUNDLED
from clipterm.models import ModelBundle, load_model
from clipterm.prompts import parse_prompt


def parse_model_spec(spec: str) -> tuple[str, str | None]:
    """`M[:PRETRAINED]` -> (name, pretrained or None); `local-dir:PATH` stays one name."""
    text = spec.strip()
    if text.startswith("local-dir:"):
        return text, None
    name, sep, pretrained = text.partition(":")
    name, pretrained = name.strip(), pretrained.strip()
    if not name or (sep and not pretrained):
        raise ClipTermError(f"bad model spec {spec!r}: use NAME or NAME:PRETRAINED, e.g. shapes-b or ViT-B-32:openai")
    if name in BUNDLED and pretrained:
        raise ClipTermError(f"bad model spec {spec!r}: the bundled {name} has no pretrained tags")
    return name, (pretrained or None)


class PromptScorer:
    """One model's weighted prompt similarity of 8-bit images (the app's live 'transfer' score).

    The similarity is the engine's: sum_i w_i cos(image, term_i) / sum of positive weights, and
    images go through the model's own preprocessing, as a saved PNG would.
    """

    def __init__(self, bundle: ModelBundle, prompt: str) -> None:
        self.bundle = bundle
        self.set_prompt(prompt)

    def set_prompt(self, prompt: str) -> None:
        terms = parse_prompt(prompt)
        self.prompt = prompt
        self._text = self.bundle.encode_text([t.text for t in terms])
        w = torch.tensor([t.weight for t in terms], device=self.bundle.device, dtype=torch.float32)
        self._weights = w / w.clamp_min(0).sum()

    @torch.no_grad()
    def score_pixels(self, pixels: torch.Tensor) -> float:
        """(1,3,S,S) pixels in [0,1] at this model's input size."""
        feats = self.bundle.encode_pixels(pixels.to(self.bundle.device))
        return float(((feats @ self._text.T) @ self._weights).mean())

    def score_image(self, image: Image.Image | np.ndarray) -> float:
        """An 8-bit image (PIL or HWC uint8) of any size."""
        return self.score_pixels(self.bundle.preprocess_uint8(image))

    def score_canvas(self, canvas: np.ndarray) -> float:
        """A float (3,H,W) canvas in [0,1], quantised to 8 bits first (what the app shows)."""
        arr = (np.clip(canvas, 0, 1).transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
        return self.score_image(arr)


@dataclass
class ScoreTable:
    """Cosine similarities: rows are images (baseline last), columns are models."""

    prompt: str
    rows: list[str]
    columns: list[str]
    values: np.ndarray  # (len(rows), len(columns)) float64
    baseline: str | None = None

    def render(self) -> str:
        """A plain text table, one line per image, fixed 4-decimal columns."""
        width = max([len("image")] + [len(r) for r in self.rows])
        cols = [max(8, len(c)) for c in self.columns]
        head = "image".ljust(width) + "  " + "  ".join(c.rjust(w) for c, w in zip(self.columns, cols))
        lines = [f"prompt: {self.prompt}", head, "-" * len(head)]
        for r, vals in zip(self.rows, self.values):
            lines.append(r.ljust(width) + "  " + "  ".join(f"{v:.4f}".rjust(w) for v, w in zip(vals, cols)))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "models": self.columns,
            "baseline": self.baseline,
            "scores": {r: dict(zip(self.columns, map(float, v))) for r, v in zip(self.rows, self.values)},
        }


def _score_on(
    name: str, pretrained: str | None, device: str | None, prompt: str, images: list[Image.Image]
) -> list[float]:
    """Load one model, score every image, and let the model go out of scope on return."""
    bundle = load_model(name, pretrained, device)
    scorer = PromptScorer(bundle, prompt)
    return [scorer.score_image(img) for img in images]


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def score_images(
    images: list[Path],
    prompt: str,
    models: list[str],
    device: str | None = "auto",
    baseline: Path | None = None,
    log=None,
) -> ScoreTable:
    """Score every image (and the baseline photo) on every model, loading one model at a time."""
    if not images:
        raise ClipTermError("no images to score")
    if not models:
        raise ClipTermError("no models to score with: pass --model NAME[:PRETRAINED]")
    parse_prompt(prompt)
    specs = [parse_model_spec(m) for m in models]
    paths = list(images) + ([baseline] if baseline is not None else [])
    loaded = [read_image(p) for p in paths]  # every file checked before any model loads
    rows = [str(p) for p in images] + ([f"baseline: {baseline}"] if baseline is not None else [])
    values = np.zeros((len(rows), len(specs)), np.float64)
    columns = []
    for j, (name, pretrained) in enumerate(specs):
        try:
            values[:, j] = _score_on(name, pretrained, device, prompt, loaded)
        finally:
            _release_memory()
        columns.append(name if pretrained is None else f"{name}:{pretrained}")
        if log is not None:
            log(f"scored {len(loaded)} images on {columns[-1]}")
    return ScoreTable(prompt, rows, columns, values, None if baseline is None else str(baseline))
