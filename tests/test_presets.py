"""Every shipped preset builds, paints and stays off the held-out judge."""

from __future__ import annotations

import numpy as np
import pytest

from clipterm.engine import Engine
from clipterm.presets import SHIPPED, available
from clipterm.runner import extra_models

HELD_OUT = "shapes-c"  # the judge that nothing is optimized, tuned or selected on
TUNING = "shapes-d"  # the tuning judge of ensembles: a judge in an objective could not judge it


def test_the_shipped_presets_are_the_documented_ones():
    names = {p.stem for p in SHIPPED.glob("*.toml")}
    assert {"unconstrained", "constrained", "self-guided", "lucid", "pyramid", "cutouts", "ensemble"} <= names
    tuned = {"pyramid-shift", "pyramid-zoomout", "pyramid-ensemble", "pyramid-ground", "vae-ground", "vae-grey"}
    assert tuned | {"vae-base"} <= names
    for name in names:
        p = available()[name]
        assert p.origin == "shipped" and p.about and p.source, name


@pytest.mark.parametrize("name", sorted(p.stem for p in SHIPPED.glob("*.toml")))
def test_every_preset_paints_a_picture_in_range(shapes_a, name):
    spec = available()[name].spec
    assert HELD_OUT not in spec.models()  # the held-out judge is never part of an objective
    assert TUNING not in spec.models()
    e = Engine(shapes_a, "a blue square on a white background", {"x": spec}, seed=1, eval_every=0,
               models=extra_models({"x": spec}, shapes_a))  # fmt: skip
    e.step(3)
    e.flush()
    shown = e.shown("x")
    assert shown.shape == (3, 64, 64) and 0.0 <= shown.min() <= shown.max() <= 1.0
    assert np.isfinite(e.lanes["x"].history).all() and len(e.lanes["x"].history) == 3
    assert not np.array_equal(shown, Engine(shapes_a, "a blue square", {"x": spec}, seed=1,
                                            models=extra_models({"x": spec}, shapes_a)).shown("x"))  # fmt: skip
