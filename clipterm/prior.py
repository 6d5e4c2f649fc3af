"""A learned shape prior to paint through: a small VAE over figure masks, the offline stand-in
for the generator that VQGAN+CLIP paints through.

The `vae` parameterization draws a lane's picture as one figure on a ground: two flat colours
blended by a mask that this decoder draws from a 16-number code. The decoder is trained on masks
of a *richer* world than the judges' base world (../shared/SHAPES.md): the base circle, square and
triangle drawn exactly as there, plus eight other figures (ellipses, rectangles, diamonds,
pentagons, hexagons, stars, crosses, upside-down triangles) at any size from 6 to 26 px. It knows
what a figure looks like, not which caption it belongs to: it never sees a caption or a model, so
what a lane shows is still what the optimizing CLIP picks, among single figures.

Torch is imported inside the functions: `parts.load_all()` reads `latent_size()` to validate lane
tables without it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from clipterm.errors import ClipTermError

PRIOR_DIR = Path(__file__).parent / "weights" / "prior-masks"
# the bundled priors by the world they learned: `rich` adds eight figures to the base three,
# `base` knows only the base world's circle, square and triangle (at the rich world's sizes)
PRIORS = {"rich": PRIOR_DIR, "base": PRIOR_DIR.parent / "prior-base"}
CONFIG = "prior.json"
WEIGHTS = "prior.safetensors"
EXTRA = ("ellipse", "rectangle", "diamond", "pentagon", "hexagon", "star", "cross", "down-triangle")
SIZE = 64  # the shapes world's canvas (clipterm.shapes.SIZE; that module imports torch)
DEFAULT_CONFIG = {"latent": 16, "channels": 16, "size": SIZE}


def _polygon(cx: float, cy: float, r: float, corners: int, turn: float, inner: float = 0.0) -> list[tuple]:
    """A regular polygon (or, with `inner`, a star whose inner corners sit at inner * r)."""
    n = corners * (2 if inner else 1)
    pts = []
    for i in range(n):
        rr = r * inner if inner and i % 2 else r
        a = turn + 2 * math.pi * i / n
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def render_mask(rng: np.random.Generator, figures: str = "rich") -> np.ndarray:
    """One figure mask, (H,W) uint8 0/255: half the time a base-world shape (drawn by
    `shapes.render`), else one of EXTRA (`figures="base"`: always a base shape); 3 % of masks are
    empty (a plain ground)."""
    from PIL import Image, ImageDraw

    from clipterm.shapes import SHAPES, render

    if rng.random() < 0.03:
        return np.zeros((SIZE, SIZE), np.uint8)
    base = rng.random() < 0.5 or figures == "base"
    shape = SHAPES[rng.integers(len(SHAPES))] if base else EXTRA[rng.integers(len(EXTRA))]
    r = int(rng.integers(6, 27))
    cx, cy = int(rng.integers(r, SIZE - r + 1)), int(rng.integers(r, SIZE - r + 1))
    if base:
        return np.where(render("red", shape, "black", r, cx, cy)[..., 0] > 100, 255, 0).astype(np.uint8)
    img = Image.new("L", (SIZE, SIZE), 0)
    draw = ImageDraw.Draw(img)
    if shape in ("ellipse", "rectangle"):
        rx, ry = r, int(rng.integers(max(3, r // 3), r + 1))
        if rng.random() < 0.5:
            rx, ry = ry, rx
        box = [cx - rx, cy - ry, cx + rx, cy + ry]
        (draw.ellipse if shape == "ellipse" else draw.rectangle)(box, fill=255)
    elif shape == "cross":
        w = max(2, r // 3)
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=255)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=255)
    elif shape == "down-triangle":
        draw.polygon([(cx, cy + r), (cx - r, cy - r), (cx + r, cy - r)], fill=255)
    else:
        corners, turn, inner = {"diamond": (4, -math.pi / 2, 0.0), "pentagon": (5, -math.pi / 2, 0.0),
                                "hexagon": (6, 0.0, 0.0), "star": (5, -math.pi / 2, 0.45)}[shape]  # fmt: skip
        draw.polygon(_polygon(cx, cy, r, corners, turn, inner), fill=255)
    return np.asarray(img, dtype=np.uint8)


def build(config: dict) -> Any:
    """The VAE (torch module with `encoder`, `project`, `decoder`) for a config's latent and width."""
    import torch

    nn = torch.nn
    z, c, side = int(config["latent"]), int(config["channels"]), int(config["size"]) // 16

    class MaskVAE(nn.Module):
        """Encoder: 4 stride-2 convolutions to a (mean, log-variance) code. Decoder: a linear map to
        a 4x4 grid, 4 stride-2 transposed convolutions, mask logits (1,H,W)."""

        def __init__(self) -> None:
            super().__init__()
            self.latent = z
            down = [nn.Conv2d(1, c, 4, 2, 1), nn.ReLU()]
            for k in (1, 2, 4):
                down += [nn.Conv2d(k * c, 2 * k * c, 4, 2, 1), nn.ReLU()]
            self.encoder = nn.Sequential(*down, nn.Flatten(), nn.Linear(8 * c * side * side, 2 * z))
            self.project = nn.Linear(z, 8 * c * side * side)
            up: list = [nn.ReLU()]
            for k in (8, 4, 2):
                up += [nn.ConvTranspose2d(k * c, k * c // 2, 4, 2, 1), nn.ReLU()]
            self.decoder = nn.Sequential(*up, nn.ConvTranspose2d(c, c, 4, 2, 1), nn.ReLU(), nn.Conv2d(c, 1, 3, 1, 1))

        def encode(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(B,1,H,W) in [0,1] -> code mean, log-variance (B,z) each."""
            mean, logvar = self.encoder(mask * 2 - 1).chunk(2, dim=1)
            return mean, logvar

        def logits(self, code: torch.Tensor) -> torch.Tensor:
            """(B,z) -> mask logits (B,1,H,W)."""
            return self.decoder(self.project(code).view(-1, 8 * c, side, side))

    return MaskVAE()


@lru_cache(maxsize=4)
def latent_size(folder: Path = PRIOR_DIR) -> int:
    """The code length of a prior folder (torch-free: lane tables are validated without torch).
    Cached: every lane's `shapes()` and `init()` ask, and the file does not change under a run."""
    return int(read_config(folder)["latent"])


def read_config(folder: Path) -> dict:
    try:
        data = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        config = data["config"]
        for key in DEFAULT_CONFIG:
            if not isinstance(config[key], int) or config[key] < 1:
                raise ValueError(key)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ClipTermError(f"no usable shape prior in {folder}: {type(e).__name__} {e}") from None
    return config


@lru_cache(maxsize=4)
def load(device: str = "cpu", folder: Path = PRIOR_DIR) -> Any:
    """The frozen prior on a device (cached: every lane of every engine shares one copy)."""
    from safetensors.torch import load_file

    model = build(read_config(folder))
    try:
        state = load_file(str(folder / WEIGHTS))
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except (OSError, RuntimeError) as e:
        raise ClipTermError(f"cannot load the shape prior in {folder}: {e}") from None
    model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def masks(n: int, rng: np.random.Generator, figures: str = "rich") -> Any:
    """n masks of a prior's world (`rich` or `base`) as a float tensor (n,1,H,W) in [0,1]."""
    import torch

    return torch.from_numpy(np.stack([render_mask(rng, figures) for _ in range(n)]))[:, None].float() / 255.0


def train(
    out: Path,
    seed: int = 0,
    steps: int = 5000,
    batch: int = 64,
    lr: float = 2e-3,
    figures: str = "rich",
    log: Callable[[str], None] = print,
) -> dict:
    """Train the mask VAE from scratch (binary cross-entropy + KL to N(0, I)) and write it, with
    its training record, to `out`. Deterministic on the CPU for a seed and thread count."""
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = masks(min(40_000, steps * batch), rng, figures)
    model = build(DEFAULT_CONFIG)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.05)
    t0 = time.time()
    for step in range(1, steps + 1):
        x = data[torch.randint(len(data), (batch,))]
        mean, logvar = model.encode(x)
        code = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        rec = F.binary_cross_entropy_with_logits(model.logits(code), x, reduction="none").sum((1, 2, 3)).mean()
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(1).mean()
        loss = rec + kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == steps:
            log(f"step {step}/{steps}  reconstruction {rec.item():.1f}  kl {kl.item():.1f}  {time.time() - t0:.0f}s")
    model.eval()
    held = masks(1000, np.random.default_rng(seed + 10_000), figures)
    with torch.no_grad():
        error = float((torch.sigmoid(model.logits(model.encode(held)[0])) - held).abs().mean())
    report = {
        "config": DEFAULT_CONFIG,
        "figures": figures,
        "seed": seed,
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "heldout_mean_abs_error": round(error, 5),
        "train_seconds": round(time.time() - t0, 1),
        "params": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS))
    (out / CONFIG).write_text(json.dumps(report, indent=2) + "\n")
    log(f"mean abs error on 1000 held-out masks: {error:.4f}")
    return report
