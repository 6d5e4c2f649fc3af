"""What a model's name says before anything loads: the bundled shapes models, and whether a model
knows only the shapes world.

Torch-free, because a new session's recipe names its lanes before torch is imported
(clipterm/recipe.py), and lane C's default preset depends on the model's world: the shapes prior
paints only that world's figures. Loading itself lives in clipterm/models.py.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED = ("shapes-a", "shapes-b", "shapes-c", "shapes-d")
TRAINING_RECORD = "training.json"  # what `clipterm train-shapes` writes beside a shapes model's weights


def is_shapes_model(name: str) -> bool:
    """A bundled shapes model, or a `local-dir:` folder that `clipterm train-shapes` made (it holds
    training.json): models that know the shapes world's 24 base captions rather than ImageNet."""
    if name in BUNDLED:
        return True
    if not name.startswith("local-dir:"):
        return False
    try:
        return Path(name.split(":", 1)[1], TRAINING_RECORD).is_file()
    except OSError:  # a name too long or unreadable: not a folder train-shapes made (loading says why)
        return False
