"""`clipterm analyze`: plots of a saved session (seed 000's numpy analysis, made first-class).

Uses matplotlib's Agg canvas directly (never pyplot), so it needs no display, leaves the global
backend alone for anything else in the process, and writes figures of fixed pixel sizes.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from clipterm import session as sess
from clipterm.errors import ClipTermError
from clipterm.outputs import check_output, write_file
from clipterm.probes import STAT_COLUMNS, generic_layer_names
from clipterm.text import printable

DPI = 100
PROBE_FIGSIZE = (12.0, 7.0)  # -> 1200 x 700 px
SIM_FIGSIZE = (10.0, 5.0)  # -> 1000 x 500 px
LANE_COLOURS = ("tab:orange", "tab:blue", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")
COL = {name: i for i, name in enumerate(STAT_COLUMNS)}


def plain(text: object) -> str:
    """Session text (prompt, presets, change values) as matplotlib should draw it: literally.

    Controls are escaped and '$' too, or a prompt such as 'a $\\frac$ bill' would be parsed as
    mathtext and fail the whole plot.
    """
    return printable(str(text)).replace("$", r"\$")


def _figure(figsize: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    """Render in memory, then write whole or not at all (outputs.write_file)."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, format="png")
    write_file(path, buf.getvalue())


def change_marks(changes: list[dict], lane: str | None = None) -> list[tuple[int, str, bool]]:
    """(step, label, major) for each recorded change a plot of `lane` (None: every lane) should mark.

    Prompt, model and preset changes are major (they explain jumps in every curve); parameter
    edits are minor. Several changes at one step share one mark.
    """
    marks: dict[int, tuple[list[str], bool]] = {}
    for c in changes:
        who = str(c.get("lane", "*"))
        if lane is not None and who not in ("*", lane):
            continue
        key, new = str(c.get("key", "?")), c.get("new")
        if key == "prompt":
            label, major = f"prompt: {plain(str(new)[:24])}", True
        elif key == "init":  # the picture a session started from: its name, not its sha256
            label, major = f"init: {plain(str(new).rpartition(' sha256:')[0][:24])}", True
        elif key in ("model", "preset"):
            label, major = f"{plain(key)}: {plain(new)}", True
        else:
            label, major = f"{plain(key)} {new:g}" if isinstance(new, float) else f"{plain(key)} {plain(new)}", False
        if lane is None and who != "*":
            label = f"{who.upper()} {label}"
        labels, was_major = marks.setdefault(int(c.get("step", 0)), ([], False))
        labels.append(label)
        marks[int(c.get("step", 0))] = (labels, was_major or major)
    return [(step, ", ".join(labels), major) for step, (labels, major) in sorted(marks.items())]


def _draw_marks(ax, changes: list[dict], lane: str | None) -> None:
    """Vertical lines at recorded changes, labelled at the top of the axes."""
    for step, label, major in change_marks(changes, lane):
        ax.axvline(step, color="0.35" if major else "0.7", linestyle="--" if major else ":", linewidth=0.9)
        ax.annotate(
            label[:48],
            (step, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -2),
            textcoords="offset points",
            rotation=90,
            va="top",
            ha="left",
            fontsize=7,
            color="0.3",
        )


def _title(s: sess.Session) -> str:
    return f"{plain(s.prompt[:100])}  —  {plain(s.model.get('name', '?'))}"


def _probe_lanes(s: sess.Session) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for lane, arr in s.arrays.items():
        if "probes" in arr and len(arr["probes"]):
            out[lane] = (arr["probes"], arr["probe_steps"])
    return out


def _layer_colours(n: int):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(1, n - 1)) for i in range(n)]


def plot_activations(s: sess.Session, path: Path) -> Path:
    """Per lane: each block's mean activation (top) and mean L2 norm (bottom) over the steps."""
    probes = _probe_lanes(s)
    fig = _figure(PROBE_FIGSIZE)
    axes = fig.subplots(2, len(probes), squeeze=False)
    for j, (lane, (stats, steps)) in enumerate(probes.items()):
        names = generic_layer_names(stats.shape[1])
        colours = _layer_colours(stats.shape[1] - 1)
        for i in range(1, stats.shape[1]):  # row 0 is the canvas (pixels), not an activation
            axes[0, j].plot(steps, stats[:, i, COL["act_mean"]], color=colours[i - 1], label=names[i])
            axes[1, j].plot(steps, stats[:, i, COL["act_norm"]], color=colours[i - 1], label=names[i])
        axes[0, j].set_title(f"lane {lane.upper()} ({plain(s.lanes[lane].preset)}): mean activation per layer")
        axes[1, j].set_title(f"lane {lane.upper()}: activation L2 norm per layer (mean over views)")
        axes[1, j].set_xlabel("step")
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
            _draw_marks(ax, s.changes, lane)
        if stats.shape[1] > 1:
            axes[0, j].legend(fontsize=7, ncol=2 if stats.shape[1] > 8 else 1)
    fig.suptitle(_title(s))
    _save(fig, path)
    return path


def plot_gradients(s: sess.Session, path: Path) -> Path:
    """Per lane: gradient norm reaching each block's output (top, log) and the image gradient (bottom)."""
    probes = _probe_lanes(s)
    fig = _figure(PROBE_FIGSIZE)
    axes = fig.subplots(2, len(probes), squeeze=False)
    for j, (lane, (stats, steps)) in enumerate(probes.items()):
        names = generic_layer_names(stats.shape[1])
        colours = _layer_colours(stats.shape[1])
        top, bottom = axes[0, j], axes[1, j]
        for i in range(stats.shape[1]):
            top.plot(
                steps,
                stats[:, i, COL["grad_norm"]],
                color=colours[i],
                label=names[i],
                linestyle="--" if i == 0 else "-",
            )
        top.set_yscale("log", nonpositive="mask")
        top.set_title(f"lane {lane.upper()} ({plain(s.lanes[lane].preset)}): gradient L2 norm per layer")
        top.legend(fontsize=7, ncol=2 if stats.shape[1] > 8 else 1)
        canvas = stats[:, 0]
        bottom.plot(steps, canvas[:, COL["grad_std"]], color="tab:red", label="std")
        bottom.plot(steps, np.abs(canvas[:, COL["grad_mean"]]), color="tab:purple", label="|mean|")
        bottom.set_yscale("log", nonpositive="mask")
        bottom.set_title(f"lane {lane.upper()}: image (canvas) gradient per pixel")
        bottom.set_xlabel("step")
        bottom.legend(fontsize=8)
        for ax in (top, bottom):
            ax.grid(alpha=0.3, which="both")
            _draw_marks(ax, s.changes, lane)
    fig.suptitle(_title(s))
    _save(fig, path)
    return path


def plot_similarity(s: sess.Session, path: Path) -> Path:
    """Both lanes' raw similarity per step, with robust and verified measurements as markers."""
    fig = _figure(SIM_FIGSIZE)
    ax = fig.subplots()
    for i, (lane, arr) in enumerate(s.arrays.items()):
        c = LANE_COLOURS[i % len(LANE_COLOURS)]
        h, ev = arr["history"], arr["evals"]
        label = f"lane {lane.upper()} ({plain(s.lanes[lane].preset)})"
        if len(h):
            ax.plot(np.arange(1, len(h) + 1), h[:, 0], color=c, label=f"{label} own")
        if len(ev):
            ax.plot(ev[:, 0], ev[:, 1], "o--", color=c, alpha=0.7, label=f"{label} robust")
            ax.plot(ev[:, 0], ev[:, 2], "s:", color=c, alpha=0.7, label=f"{label} verified")
    _draw_marks(ax, s.changes, None)
    ax.set_xlabel("step")
    ax.set_ylabel("cosine similarity to the prompt")
    ax.set_title(
        _title(s) + ("  (dashed: prompt/preset changes)" if any(m[2] for m in change_marks(s.changes)) else "")
    )
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    _save(fig, path)
    return path


def analyze(session: Path, out: Path, log=None) -> list[Path]:
    """Write activations.png, gradients.png (when the session has probe records) and similarity.png."""
    s = sess.load(Path(session))
    out = check_output(Path(out), "plots")  # a session (or a directory inside one) is never written into
    if out.exists() and not out.is_dir():
        raise ClipTermError(f"{out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ClipTermError(f"{out}: cannot create output directory ({e.strerror})") from None
    written = []
    if _probe_lanes(s):
        written.append(plot_activations(s, out / "activations.png"))
        written.append(plot_gradients(s, out / "gradients.png"))
    elif log is not None:
        log(
            f"{session}: no layer probe records (probes off, or an older session); "
            f"skipping activations.png and gradients.png"
        )
    written.append(plot_similarity(s, out / "similarity.png"))
    return written
