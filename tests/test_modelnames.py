"""What a model's name says before it loads: which world it knows, and which model the default is.

Lane C's default preset hangs on this (a shapes prior paints only the shapes world's figures), and it
is decided before torch loads, so these facts are checked here against the loaders that use them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import open_clip
import pytest
from sessionkit import open_world_copy

from clipterm import modelnames
from clipterm.models import bundled_dir


def test_the_default_weights_are_where_open_clip_keeps_them():
    """The torch-free copy of the default model's config must name open_clip's own cache entries."""
    cfg = open_clip.get_pretrained_cfg(modelnames.DEFAULT_MODEL, modelnames.DEFAULT_PRETRAINED)
    assert {k: cfg[k] for k in modelnames.DEFAULT_WEIGHTS} == modelnames.DEFAULT_WEIGHTS


def test_shapes_models_are_the_bundled_ones_and_folders_train_shapes_made(tmp_path):
    assert all(modelnames.is_shapes_model(n) for n in modelnames.BUNDLED)
    shutil.copytree(bundled_dir("shapes-a"), tmp_path / "trained")
    assert modelnames.is_shapes_model(f"local-dir:{tmp_path / 'trained'}")
    assert not modelnames.is_shapes_model(open_world_copy(tmp_path / "open"))
    for name in ("ViT-B-32", "RN50", "shapes-e", "local-dir:/no/such/folder", ""):
        assert not modelnames.is_shapes_model(name), name


def test_the_expected_default_follows_the_cached_weights(tmp_path, monkeypatch):
    """Offline and uncached: the bundled fallback. With the default's weights in open_clip's legacy
    cache (~/.cache/clip): the default model, whose world is not the shapes world."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # a developer's own cache aside
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert modelnames.expected_default() == modelnames.FALLBACK_MODEL
    assert modelnames.asks_shapes_world("")
    legacy = tmp_path / ".cache" / "clip" / Path(modelnames.DEFAULT_WEIGHTS["url"]).name
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"weights")
    assert modelnames.cached_tag_file(modelnames.DEFAULT_WEIGHTS) == str(legacy)
    assert modelnames.expected_default() == modelnames.DEFAULT_MODEL
    assert not modelnames.asks_shapes_world("")
    assert modelnames.asks_shapes_world("shapes-b") and not modelnames.asks_shapes_world("RN50")
    legacy.unlink()  # the same through the Hugging Face cache, where open_clip downloads to now
    assert modelnames.expected_default() == modelnames.FALLBACK_MODEL
    repo = modelnames.DEFAULT_WEIGHTS["hf_hub"].strip("/")
    entry = tmp_path / "hub" / ("models--" + repo.replace("/", "--"))
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text("abc")
    (entry / "snapshots" / "abc").mkdir(parents=True)
    (entry / "snapshots" / "abc" / "open_clip_model.safetensors").write_bytes(b"weights")
    assert modelnames.expected_default() == modelnames.DEFAULT_MODEL


@pytest.mark.parametrize("name", ["ViT-B-32", "shapes-a"])
def test_a_name_says_its_world_without_torch(name):
    """The recipe is written before torch loads: telling a name's world must not import it."""
    import subprocess
    import sys

    code = f"import sys; from clipterm.modelnames import asks_shapes_world; asks_shapes_world({name!r}); "
    code += "print('torch' in sys.modules, 'open_clip' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_the_hub_is_probed_once_a_minute(monkeypatch):
    """A new session on the default model asks twice (for its lanes, then to load it): on a network
    that drops packets that would be two 1.5 s waits, so an answer is kept for PROBE_TTL seconds."""
    calls = []

    def unreachable(address, timeout):
        calls.append((address, timeout))
        raise OSError("no route")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(modelnames.socket, "create_connection", unreachable)
    monkeypatch.setattr(modelnames, "PROBE_TTL", 0.0)
    assert not modelnames.hub_reachable() and calls == [(modelnames.HUB_HOST, 1.5)]
    monkeypatch.setattr(modelnames, "PROBE_TTL", 60.0)
    assert not modelnames.hub_reachable() and not modelnames.hub_reachable() and len(calls) == 1
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline by the environment: no probe at all
    monkeypatch.setattr(modelnames, "PROBE_TTL", 0.0)
    assert not modelnames.hub_reachable() and len(calls) == 1
