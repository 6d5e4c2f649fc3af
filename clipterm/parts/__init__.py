"""Lane parts: image parameterizations, view transforms, objective terms and optimizers.

Each part is one module here that registers itself (see `base.register`); `load_all()` imports
every module of the package once, so a new part needs no edit anywhere else.
"""

from __future__ import annotations

import importlib
import pkgutil

_loaded = False


def load_all() -> None:
    """Import every part module (idempotent) so the registry is complete."""
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")
    _loaded = True
