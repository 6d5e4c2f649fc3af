"""What a model's name says before it loads: whether it is a shapes model.

Lane C's default preset hangs on this (a shapes prior paints only the shapes world's figures), and a
new session's recipe names its lanes before torch loads, so the answer must come from the name.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

from sessionkit import open_world_copy

from clipterm import modelnames
from clipterm.models import bundled_dir


def test_shapes_models_are_the_bundled_ones_and_folders_train_shapes_made(tmp_path):
    assert all(modelnames.is_shapes_model(n) for n in modelnames.BUNDLED)
    shutil.copytree(bundled_dir("shapes-a"), tmp_path / "trained")
    assert modelnames.is_shapes_model(f"local-dir:{tmp_path / 'trained'}")
    assert not modelnames.is_shapes_model(open_world_copy(tmp_path / "open"))
    too_long = "local-dir:/" + "x" * 5000  # the file system refuses the name: not a shapes model, no traceback
    for name in ("ViT-B-32", "RN50", "shapes-e", "local-dir:/no/such/folder", "", too_long):
        assert not modelnames.is_shapes_model(name), name[:40]


def test_telling_a_names_world_imports_no_torch():
    """The recipe is written before torch loads: this module must not import it."""
    code = "import sys; from clipterm.modelnames import is_shapes_model; is_shapes_model('local-dir:/x'); "
    code += "print('torch' in sys.modules, 'open_clip' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "False"], out.stderr
