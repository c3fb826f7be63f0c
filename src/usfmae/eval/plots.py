"""Report figures: confusion matrices and label-efficiency curves (matplotlib, Agg, no pyplot state).

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas directly, so plotting
never touches a display, a global backend, or pyplot's figure registry (safe in workers and tests).
Files are written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from usfmae.fileio import atomic_path


def _save(fig: Figure, path: str | Path) -> Path:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    return Path(path)


def plot_confusion_matrix(cm: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path,
                          title: str = "", normalize: bool = True) -> Path:
    """Write a confusion-matrix heat map (rows true class, columns predicted) to ``path`` (PNG).

    Args:
        cm: (C, C) counts.
        classes: C class names.
        path: output PNG.
        title: figure title.
        normalize: colour by row fraction (recall per class); cells always show the counts.

    Returns:
        ``path``.
    """
    counts = np.asarray(cm, dtype=np.float64)
    c = counts.shape[0]
    rows = counts.sum(axis=1, keepdims=True)
    shade = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0) if normalize else counts
    side = 2.5 + 0.55 * c
    fig = Figure(figsize=(side + 1.0, side))
    ax = fig.add_subplot()
    image = ax.imshow(shade, cmap="Blues", vmin=0, vmax=1 if normalize else max(1.0, shade.max()))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="row fraction" if normalize else "count")
    for i in range(c):
        for j in range(c):
            text = f"{int(counts[i, j])}" + (f"\n{shade[i, j]:.0%}" if normalize and counts[i, j] else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if shade[i, j] > 0.5 * (shade.max() or 1) else "black")
    ax.set_xticks(range(c), labels=list(classes), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(c), labels=list(classes), fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_label_efficiency(curves: Mapping[str, Sequence[tuple[float, float, float]]], path: str | Path,
                          ylabel: str = "F1 (%)", title: str = "") -> Path:
    """Write a label-efficiency plot: metric vs fraction of training labels, one line per model.

    Args:
        curves: model -> [(label_fraction in (0, 1], mean %, std %), ...].
        path: output PNG.
        ylabel: y-axis label.
        title: figure title.

    Returns:
        ``path``.
    """
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    fractions: set[float] = set()
    for model, points in curves.items():
        pts = sorted(points)
        x = [100 * p[0] for p in pts]
        fractions.update(x)
        ax.errorbar(x, [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3, label=model)
    ax.set_xscale("log")
    ticks = sorted(fractions)
    ax.set_xticks(ticks, labels=[f"{t:g}%" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("training labels used")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)
