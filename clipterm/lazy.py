"""Heavy modules (torch) imported on first use, so commands that never compute stay fast.

`clipterm info`, `clipterm presets` and `--help` validate lane tables with the parts' Settings
dataclasses, which live in the same modules as the parts' tensor code. Those modules say
`from clipterm.lazy import torch, F` instead of `import torch`: the name is a stand-in module whose
first attribute lookup imports the real one (2-3 s, ~500 MB) and forwards to it from then on.

Why not `importlib.util.LazyLoader`: it must put a placeholder under `sys.modules["torch"]`, so
`"torch" in sys.modules` turns true before torch is loaded and any library that probes for torch
that way loads it; and it cannot defer `torch.nn.functional`, whose spec lookup imports `torch`.
The stand-in here is invisible to `sys.modules` until the real import happens.
"""

from __future__ import annotations

import functools
import importlib
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

_T = TypeVar("_T", bound=Callable[..., Any])


class LazyModule(types.ModuleType):
    """Stands in for module `name`; the first attribute lookup imports it, later ones are plain lookups."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        object.__setattr__(self, "_lazy_target", None)

    def _lazy_load(self) -> types.ModuleType:
        target = self.__dict__["_lazy_target"]
        if target is None:
            target = importlib.import_module(self.__name__)
            object.__setattr__(self, "_lazy_target", target)
        return target

    def __getattr__(self, attr: str) -> Any:  # only called for names not cached here yet
        value = getattr(self._lazy_load(), attr)
        if not isinstance(value, (int, float, bool, str)):  # scalars may be reassigned in the real module
            object.__setattr__(self, attr, value)  # cache: the next lookup costs a dict hit
        return value

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(self._lazy_load(), attr, value)

    def __dir__(self) -> list[str]:
        return dir(self._lazy_load())

    def __repr__(self) -> str:
        loaded = self.__dict__["_lazy_target"] is not None
        return f"<lazy module {self.__name__!r} ({'loaded' if loaded else 'not loaded yet'})>"


def lazy_module(name: str) -> Any:
    """A stand-in for module `name` that imports it on first attribute use."""
    return LazyModule(name)


def no_grad(fn: _T) -> _T:
    """`@torch.no_grad()` without importing torch when the decorated class is defined."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return fn(*args, **kwargs)

    return run  # type: ignore[return-value]


if TYPE_CHECKING:  # type checkers see the real modules
    import torch
    import torch.nn.functional as F
else:
    torch = lazy_module("torch")
    F = lazy_module("torch.nn.functional")

__all__ = ["F", "LazyModule", "lazy_module", "no_grad", "torch"]
