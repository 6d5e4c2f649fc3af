"""Lane parameters and the presets that reproduce the two seed repos' algorithms.

Values come from the seeds: `unconstrained`/`constrained` are seed 004's scripts, `self-guided` is
seed 000's exp/temperature loss with L1 TV and a memory term. Every live-editable parameter has a
range here, so the CLI, the app and session loading all validate the same way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from clipterm.errors import ClipTermError


class ParamError(ClipTermError):
    """A parameter value outside its allowed range or of the wrong type."""


@dataclass(frozen=True)
class LaneParams:
    preset: str
    optimizer: str = "adam"  # adam | adamw
    lr: float = 0.05
    weight_decay: float = 0.0
    init_mean: float = 0.5
    init_std: float = 0.1
    clamp: bool = True
    normalize: bool = True  # apply CLIP mean/std before the model
    loss: str = "cosine"  # cosine: 1 - s ; exp-temp: -log(exp(s / T))
    temperature: float = 5.0
    tv_weight: float = 0.0
    tv_kind: str = "l2"  # l2: sum of squared neighbour differences ; l1: sum of absolute ones
    memory_weight: float = 0.0
    augment: bool = False
    views: int = 1
    degrees: float = 10.0
    translate: float = 0.1
    scale_min: float = 0.9
    scale_max: float = 1.1
    flip_p: float = 0.3
    display: str = "clip"  # clip: clamp to [0,1] ; minmax: min-max normalize for display

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, LaneParams] = {
    "unconstrained": LaneParams(preset="unconstrained"),
    "constrained": LaneParams(preset="constrained", augment=True, tv_weight=1e-4, tv_kind="l2"),
    "self-guided": LaneParams(
        preset="self-guided",
        optimizer="adamw",
        lr=1.5,
        weight_decay=0.01,
        init_mean=0.0,
        init_std=0.01,
        clamp=False,
        normalize=False,
        loss="exp-temp",
        temperature=5.0,
        tv_weight=1e-5,
        tv_kind="l1",
        memory_weight=0.01,
        display="minmax",
    ),
}

# name -> (type, low, high); ranges are inclusive. Only these may change while a run is live.
EDITABLE: dict[str, tuple[type, float, float]] = {
    "lr": (float, 1e-6, 100.0),
    "weight_decay": (float, 0.0, 10.0),
    "views": (int, 1, 256),
    "tv_weight": (float, 0.0, 10.0),
    "memory_weight": (float, 0.0, 100.0),
    "temperature": (float, 1e-3, 1000.0),
    "degrees": (float, 0.0, 180.0),
    "translate": (float, 0.0, 0.5),
    "scale_min": (float, 0.1, 4.0),
    "scale_max": (float, 0.1, 4.0),
    "flip_p": (float, 0.0, 1.0),
    "augment": (bool, 0, 1),
    "clamp": (bool, 0, 1),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("adam", "adamw"),
    "loss": ("cosine", "exp-temp"),
    "tv_kind": ("l1", "l2"),
    "display": ("clip", "minmax"),
}


def preset(name: str) -> LaneParams:
    if name not in PRESETS:
        raise ParamError(f"unknown preset {name!r}: choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def parse_value(name: str, value: object) -> object:
    """Convert and range-check one editable parameter; raise ParamError with the reason."""
    if name not in EDITABLE:
        raise ParamError(f"{name!r} is not an editable parameter (editable: {', '.join(EDITABLE)})")
    kind, low, high = EDITABLE[name]
    try:
        if kind is bool:
            if isinstance(value, bool):
                v: object = value
            elif str(value).strip().lower() in ("1", "true", "yes", "on"):
                v = True
            elif str(value).strip().lower() in ("0", "false", "no", "off"):
                v = False
            else:
                raise ValueError
            return v
        if kind is int:
            f = float(value)  # type: ignore[arg-type]
            if f != int(f):
                raise ValueError
            v = int(f)
        else:
            v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise ParamError(f"{name} must be {'on/off' if kind is bool else kind.__name__}, got {value!r}") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise ParamError(f"{name} must be finite, got {value!r}")
    if not low <= v <= high:  # type: ignore[operator]
        raise ParamError(f"{name} must be within [{low:g}, {high:g}], got {v}")
    return v


def with_value(params: LaneParams, name: str, value: object) -> LaneParams:
    """A copy of `params` with one validated change (keeps scale_min <= scale_max)."""
    v = parse_value(name, value)
    new = replace(params, **{name: v})
    if new.scale_min > new.scale_max:
        raise ParamError(f"scale_min ({new.scale_min}) must not exceed scale_max ({new.scale_max})")
    return new


def from_dict(data: dict) -> LaneParams:
    """Rebuild LaneParams from a session's TOML table, validating every field."""
    if not isinstance(data, dict):
        raise ParamError("lane parameters must be a table")
    known = {f.name: f for f in fields(LaneParams)}
    unknown = set(data) - set(known)
    if unknown:
        raise ParamError(f"unknown lane parameter(s): {', '.join(sorted(unknown))}")
    base = preset(data.get("preset", ""))
    out = base
    for key, value in data.items():
        if key == "preset":
            continue
        if key in EDITABLE:
            out = replace(out, **{key: parse_value(key, value)})
        elif key in CHOICES:
            if value not in CHOICES[key]:
                raise ParamError(f"{key} must be one of {', '.join(CHOICES[key])}, got {value!r}")
            out = replace(out, **{key: value})
        elif key in ("init_mean", "init_std"):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ParamError(f"{key} must be a finite number, got {value!r}")
            out = replace(out, **{key: float(value)})
        elif key == "normalize":
            if not isinstance(value, bool):
                raise ParamError(f"normalize must be true or false, got {value!r}")
            out = replace(out, normalize=value)
    if out.scale_min > out.scale_max:
        raise ParamError(f"scale_min ({out.scale_min}) must not exceed scale_max ({out.scale_max})")
    return out
