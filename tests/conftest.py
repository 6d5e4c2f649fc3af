"""Shared fixtures: the bundled, trained shapes models (what every test uses)."""

from __future__ import annotations

import pytest
import torch

from clipterm.models import load_model

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def shapes_a():
    """The default offline model (a small ViT trained on the shapes world)."""
    return load_model("shapes-a", device="cpu")


@pytest.fixture(scope="session")
def shapes_b():
    """The judge (a small ResNet trained from another seed)."""
    return load_model("shapes-b", device="cpu")


@pytest.fixture(scope="session")
def shapes_c():
    """The held-out judge (a ViT with 16-pixel patches, seed 3): nothing is optimized against it."""
    return load_model("shapes-c", device="cpu")


@pytest.fixture(scope="session")
def shapes_d():
    """The tuning judge of ensembles that contain shapes-b (shapes-a's architecture, seed 4)."""
    return load_model("shapes-d", device="cpu")


@pytest.fixture
def shared_shapes_a(monkeypatch, shapes_a):
    """Make app code reuse the session-scoped shapes-a bundle instead of reloading it for each app."""
    import clipterm.models
    import clipterm.runner

    real = clipterm.models.load_model

    def load(name, pretrained=None, device="auto"):
        return shapes_a if name == "shapes-a" and str(device) == "cpu" else real(name, pretrained, device)

    monkeypatch.setattr(clipterm.models, "load_model", load)
    monkeypatch.setattr(clipterm.runner, "load_model", load)
