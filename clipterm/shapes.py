"""The shapes world (../shared/SHAPES.md) and the trainer for clipterm's bundled CLIP models.

The base world is rendered exactly as the spec says so any model trained on it can judge images
made with any other. Training adds caption variants ("a red circle", "a circle on a white
background", ...) so partial prompts mean something too; targets are soft: every in-batch caption
that is true of an image counts as a positive, so duplicates are never punished as negatives.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

SIZE = 64
BACKGROUNDS = {"black": (15, 15, 15), "white": (240, 240, 240)}
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 60, 220), "yellow": (230, 220, 30)}
SHAPES = ("circle", "square", "triangle")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Attributes a caption states: (colour, shape, background); None means "not said".
Attrs = tuple[str | None, str | None, str | None]

TEMPLATES: list[tuple[float, Callable[[str, str, str], tuple[str, Attrs]]]] = [
    (0.55, lambda c, s, b: (f"a {c} {s} on a {b} background", (c, s, b))),
    (0.15, lambda c, s, b: (f"a {c} {s}", (c, s, None))),
    (0.10, lambda c, s, b: (f"a {s} on a {b} background", (None, s, b))),
    (0.10, lambda c, s, b: (f"a {c} shape on a {b} background", (c, None, b))),
    (0.05, lambda c, s, b: (f"a {s}", (None, s, None))),
    (0.05, lambda c, s, b: (f"something {c}", (c, None, None))),
]


def base_caption(colour: str, shape: str, background: str) -> str:
    return f"a {colour} {shape} on a {background} background"


def base_captions() -> list[str]:
    """The 24 base captions in a fixed order (colour, shape, background)."""
    return [base_caption(c, s, b) for c in COLOURS for s in SHAPES for b in BACKGROUNDS]


def base_attrs() -> list[Attrs]:
    return [(c, s, b) for c in COLOURS for s in SHAPES for b in BACKGROUNDS]


def render(colour: str, shape: str, background: str, r: int, cx: int, cy: int) -> np.ndarray:
    """One base-world image, HWC uint8, drawn exactly as SHAPES.md says."""
    img = Image.new("RGB", (SIZE, SIZE), BACKGROUNDS[background])
    draw = ImageDraw.Draw(img)
    fill = COLOURS[colour]
    box = [cx - r, cy - r, cx + r, cy + r]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.asarray(img, dtype=np.uint8)


def sample_base(rng: np.random.Generator) -> tuple[np.ndarray, Attrs]:
    """A random base-world image and its (colour, shape, background)."""
    c = list(COLOURS)[rng.integers(len(COLOURS))]
    s = SHAPES[rng.integers(len(SHAPES))]
    b = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    r = int(rng.integers(10, 23))
    cx = int(rng.integers(r, SIZE - r))
    cy = int(rng.integers(r, SIZE - r))
    return render(c, s, b, r, cx, cy), (c, s, b)


def sample_caption(rng: np.random.Generator, attrs: Attrs) -> tuple[str, Attrs]:
    weights = np.array([w for w, _ in TEMPLATES])
    k = int(rng.choice(len(TEMPLATES), p=weights / weights.sum()))
    return TEMPLATES[k][1](*attrs)


def compatible(caption: Attrs, image: Attrs) -> bool:
    """A caption is true of an image when every attribute it states matches."""
    return all(c is None or c == i for c, i in zip(caption, image))


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 HWC list -> float (B,3,H,W) in [0,1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass
class Arch:
    """An open_clip model_cfg for a small shapes CLIP."""

    vision: dict
    embed_dim: int = 64
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 2
    context_length: int = 32

    def model_cfg(self) -> dict:
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": {"image_size": SIZE, **self.vision},
            "text_cfg": {
                "context_length": self.context_length,
                "vocab_size": 49408,
                "width": self.text_width,
                "heads": self.text_heads,
                "layers": self.text_layers,
            },
        }


ARCHS = {
    "vit": Arch(vision={"layers": 3, "width": 128, "patch_size": 8, "head_width": 32}),
    "resnet": Arch(vision={"layers": [1, 1, 1, 1], "width": 16, "head_width": 32}),
    # shapes-c, the held-out judge: another patch size (16) and width (160) than shapes-a
    "vit-p16": Arch(vision={"layers": 3, "width": 160, "patch_size": 16, "head_width": 32}),
}


def write_model_dir(out: Path, model: torch.nn.Module, model_cfg: dict, report: dict) -> None:
    """Save as an open_clip local-dir: open_clip_config.json + fp16 safetensors + a training report."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {
            "mean": list(CLIP_MEAN),
            "std": list(CLIP_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {
        k: v.detach().to(torch.float16).contiguous() if v.is_floating_point() else v.contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(state, str(out / "open_clip_model.safetensors"))
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n")


@torch.no_grad()
def zero_shot_accuracy(
    model: torch.nn.Module,
    tokenizer,
    n: int = 1000,
    seed: int = 10_000,
    device: torch.device | str = "cpu",
    batch: int = 250,
) -> float:
    """Top-1 over the 24 base captions on `n` freshly rendered images (seed not used in training)."""
    was_training = model.training
    model.eval()
    caps = base_captions()
    attrs = base_attrs()
    txt = F.normalize(model.encode_text(tokenizer(caps).to(device)).float(), dim=-1)
    rng = np.random.default_rng(seed)
    correct = 0
    for start in range(0, n, batch):
        imgs, labels = [], []
        for _ in range(min(batch, n - start)):
            img, a = sample_base(rng)
            imgs.append(img)
            labels.append(attrs.index(a))
        x = normalize(to_tensor(imgs).to(device))
        emb = F.normalize(model.encode_image(x).float(), dim=-1)
        pred = (emb @ txt.T).argmax(dim=1).cpu()
        correct += int((pred == torch.tensor(labels)).sum())
    model.train(was_training)
    return correct / n


def contrastive_loss(
    model: torch.nn.Module, img_emb: torch.Tensor, txt_emb: torch.Tensor, match: torch.Tensor
) -> torch.Tensor:
    """Symmetric CLIP loss where every caption true of an image counts as its match."""
    logits = model.logit_scale.exp().clamp(max=100) * img_emb @ txt_emb.T
    loss_i = -(match / match.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    loss_t = -(match.T / match.T.sum(1, keepdim=True) * logits.T.log_softmax(1)).sum(1).mean()
    return 0.5 * (loss_i + loss_t)


def adversarial_batch(
    model: torch.nn.Module, x: torch.Tensor, txt_emb: torch.Tensor, match: torch.Tensor, eps: float
) -> torch.Tensor:
    """x moved within an L-inf ball of radius eps to raise the loss: random start + one signed step
    of 1.25 eps (Wong et al. 2020's FGSM-RS), clipped to the ball and to [0, 1]."""
    delta = (torch.rand_like(x) * 2 - 1).mul_(eps).requires_grad_(True)
    img_emb = F.normalize(model.encode_image(normalize((x + delta).clamp(0, 1))), dim=-1)
    (grad,) = torch.autograd.grad(contrastive_loss(model, img_emb, txt_emb, match), delta)
    delta = (delta.detach() + 1.25 * eps * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1)


def train(
    arch: str,
    seed: int,
    out: Path,
    steps: int = 600,
    batch: int = 128,
    lr: float = 2e-3,
    log: Callable[[str], None] = print,
    adversarial: float = 0.0,
) -> dict:
    """Train a shapes CLIP from scratch; deterministic on CPU for a given seed and thread count.

    adversarial > 0 trains on worst-case images instead of clean ones: each batch is pushed by one
    signed-gradient step from a random start inside an L-inf ball of that radius (in [0, 1] pixel
    units; "fast" adversarial training). Robust models' gradients are said to point at what a
    picture should look like; bench/RESULTS.md (run 11) measures what that gives here.
    """
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}: choose from {', '.join(ARCHS)}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = ARCHS[arch].model_cfg()
    model = open_clip.CLIP(**cfg)
    tokenizer = SimpleTokenizer(context_length=cfg["text_cfg"]["context_length"])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warm = max(1, steps // 12)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps))
    )
    model.train()
    t0 = time.time()
    for step in range(1, steps + 1):
        imgs, img_attrs, caps, cap_attrs = [], [], [], []
        for _ in range(batch):
            img, a = sample_base(rng)
            cap, ca = sample_caption(rng, a)
            imgs.append(img)
            img_attrs.append(a)
            caps.append(cap)
            cap_attrs.append(ca)
        match = torch.tensor([[compatible(ca, ia) for ca in cap_attrs] for ia in img_attrs], dtype=torch.float32)
        x = to_tensor(imgs)
        txt_emb = F.normalize(model.encode_text(tokenizer(caps)), dim=-1)
        if adversarial > 0:
            x = adversarial_batch(model, x, txt_emb.detach(), match, adversarial)
        img_emb = F.normalize(model.encode_image(normalize(x)), dim=-1)
        loss = contrastive_loss(model, img_emb, txt_emb, match)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps:
            log(f"step {step}/{steps}  loss {loss.item():.4f}  {time.time() - t0:.0f}s")
    model.eval()
    acc = zero_shot_accuracy(model, tokenizer)
    report = {
        "arch": arch,
        "seed": seed,
        "steps": steps,
        "batch": batch,
        "lr": lr,
        "adversarial": adversarial,
        "zero_shot_top1": acc,
        "train_seconds": round(time.time() - t0, 1),
        "params": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
    }
    write_model_dir(out, model, cfg, report)
    log(f"zero-shot top-1 over the 24 base captions on 1000 fresh images: {acc:.1%}")
    return report
