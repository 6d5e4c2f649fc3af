"""What a model's name says before anything loads: the bundled shapes models, the default model and
whether a model knows only the shapes world.

Torch-free, because a new session's lanes are fixed in its recipe before torch is imported
(clipterm/recipe.py), and lane C's default preset depends on the model's world: the shapes prior
paints only that world's figures. Loading itself lives in clipterm/models.py.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

BUNDLED = ("shapes-a", "shapes-b", "shapes-c", "shapes-d")
DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "openai"
FALLBACK_MODEL = "shapes-a"
HUB_HOST = ("huggingface.co", 443)
# Where open_clip keeps DEFAULT_MODEL/DEFAULT_PRETRAINED's weights: the two keys of its pretrained
# config that `cached_tag_file` reads (tests/test_modelnames.py checks them against open_clip's).
DEFAULT_WEIGHTS = {
    "hf_hub": "timm/vit_base_patch32_clip_224.openai/",
    "url": "https://openaipublic.azureedge.net/clip/models/"
    "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
}
TRAINING_RECORD = "training.json"  # what `clipterm train-shapes` writes beside a shapes model's weights


PROBE_TTL = 60.0  # seconds a probe's answer is reused: a new session asks twice (its lanes, then its model)
_probed: dict[str, tuple[float, bool]] = {}


def hub_reachable(timeout: float = 1.5) -> bool:
    """One quick TCP probe instead of letting the hub client retry for half a minute; its answer is
    kept for a minute, so a start-up that asks twice waits once."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    seen = _probed.get("hub")
    if seen is not None and time.monotonic() - seen[0] < PROBE_TTL:
        return seen[1]
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            answer = True
    except OSError:
        answer = False
    _probed["hub"] = (time.monotonic(), answer)
    return answer


def cached_tag_file(pretrained_cfg: dict) -> str | None:
    """Path of an already-downloaded checkpoint for an open_clip pretrained tag's config, if any."""
    from huggingface_hub import try_to_load_from_cache

    hub = pretrained_cfg.get("hf_hub", "")
    if hub:
        repo_id, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for name in names:
            try:
                hit = try_to_load_from_cache(repo_id, name)
            except Exception:  # malformed cache or repo id: treat as not cached
                hit = None
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit
    url = pretrained_cfg.get("url", "")
    if url:
        legacy = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if legacy.is_file():
            return str(legacy)
    return None


def is_shapes_model(name: str) -> bool:
    """A bundled shapes model, or a `local-dir:` folder that `clipterm train-shapes` made (it holds
    training.json): models that know the shapes world's 24 base captions rather than ImageNet."""
    if name in BUNDLED:
        return True
    return name.startswith("local-dir:") and Path(name.split(":", 1)[1], TRAINING_RECORD).is_file()


def expected_default() -> str:
    """The model `models.load_default` will load: DEFAULT_MODEL when its weights are cached or the
    hub answers, else FALLBACK_MODEL. (A download that then fails still falls back; it says so.)"""
    if cached_tag_file(DEFAULT_WEIGHTS) is not None or hub_reachable():
        return DEFAULT_MODEL
    return FALLBACK_MODEL


def asks_shapes_world(model: str) -> bool:
    """Whether a model as asked (`--model`; "" = the default model) knows only the shapes world."""
    return is_shapes_model(model or expected_default())
