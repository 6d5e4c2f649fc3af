"""An independent model's verdict on an image: its ranking of the 24 base captions.

The judge is how clipterm tells an image that really shows "a red circle" from noise that only
fools the model it was optimized on (seed 004's finding, made measurable).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from clipterm.images import read_image as read_image  # the one safe reader; cli imports it from here
from clipterm.models import ModelBundle
from clipterm.shapes import base_captions

DEFAULT_JUDGE = "shapes-b"


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


class Judge:
    """Ranks the 24 base captions (plus the prompt, if it is not one of them) for an image."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.captions = base_captions()
        self._emb = bundle.encode_text(self.captions)

    @torch.no_grad()
    def rank_pixels(self, pixels: torch.Tensor, prompt: str | None = None) -> Verdict:
        """pixels: (1,3,S,S) in [0,1] at the judge's input size."""
        feat = self.bundle.encode_pixels(pixels.to(self.bundle.device))
        caps = list(self.captions)
        emb = self._emb
        if prompt is not None and prompt not in caps:
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
