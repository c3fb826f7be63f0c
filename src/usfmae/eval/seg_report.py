"""Segmentation results in the report: overlays, Table 2-style tables and Dice vs label-fraction curves.

Results are the ``usfmae segment`` JSON files (``protocol.task == "segmentation"``).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Class colours (RGB) for overlays: class 1 red, 2 green, 3 blue, ... (background left as is).
PALETTE = np.array([(0, 0, 0), (230, 50, 50), (40, 200, 80), (50, 110, 240), (240, 200, 40), (200, 60, 220),
                    (40, 210, 220), (250, 140, 30), (150, 90, 60)], dtype=np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The image with each class tinted in its colour and outlined.

    Args:
        image: (H, W) or (H, W, C) uint8.
        mask: (H, W) label indices (0 = background), the same size.
        alpha: tint strength inside the classes.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    import cv2

    rgb = np.repeat(image[..., :1], 3, axis=2) if image.ndim == 3 and image.shape[2] == 1 else image
    rgb = np.repeat(rgb[..., None], 3, axis=2) if rgb.ndim == 2 else rgb[..., :3]
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"image {rgb.shape[:2]} and mask {mask.shape} differ in size")
    colours = PALETTE[np.minimum(mask, len(PALETTE) - 1)]
    inside = (mask > 0)[..., None]
    out = np.where(inside, (1 - alpha) * rgb + alpha * colours, rgb).astype(np.uint8)
    for c in np.unique(mask[mask > 0]):
        contours, _ = cv2.findContours((mask == c).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, tuple(int(v) for v in PALETTE[min(int(c), len(PALETTE) - 1)]), 1)
    return out


SEG_COLUMNS = (("dice", "Dice"), ("iou", "IoU"), ("hd95", "HD95 px"))


def _stat(values: list[float], pooled: list[float] | None, scale: float, n_boot: int, seed: int) -> dict:
    from usfmae.eval.seg_metrics import mean_ci

    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "runs": 0, "ci": None}
    arr = np.asarray(finite) * scale
    ci = None
    if pooled:
        low, high = mean_ci(pooled, n_boot, seed)
        ci = [low * scale, high * scale]
    # one run has no spread: None (shown as "n/a"), not a 0.0 that reads as a perfectly stable result
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else None, "runs": len(finite),
            "ci": ci}


def seg_table(results: Sequence[dict], label_fraction: float | None = None, n_boot: int = 1000,
              seed: int = 0, models: Sequence[str] = ()) -> dict:
    """Segmentation results as data: rows models, per dataset Dice / IoU (%) and HD95 (pixels).

    Each cell is mean ± sample std over its folds and seeds, with a 95% bootstrap interval of the
    mean over all of the cell's test images pooled. ``label_fraction`` picks the fraction (default:
    the largest present); ``models`` come first in the row order, the others after.

    Returns:
        ``{"label_fraction", "datasets", "rows": [{"model", "cells": {ds: {metric: stat}}}]}``.
    """
    fractions = sorted({float(r["protocol"].get("label_fraction", 1.0)) for r in results})
    chosen_fraction = label_fraction if label_fraction is not None else (fractions[-1] if fractions else 1.0)
    chosen = [r for r in results if abs(float(r["protocol"].get("label_fraction", 1.0)) - chosen_fraction) < 1e-9]
    datasets = list(dict.fromkeys(r["dataset"] for r in chosen))
    rows = []
    present = list(dict.fromkeys(r["model"] for r in chosen))
    for model in [m for m in models if m in present] + [m for m in present if m not in models]:
        cells = {}
        for ds in datasets:
            cell = [r for r in chosen if r["model"] == model and r["dataset"] == ds]
            if not cell:
                continue
            cells[ds] = {}
            for key, _ in SEG_COLUMNS:
                scale = 1.0 if key.startswith("hd95") else 100.0
                pooled = [v for r in cell for v in r["metrics"].get("per_image", {}).get(key, [])]
                cells[ds][key] = _stat([r["metrics"].get(key) for r in cell], pooled, scale, n_boot, seed)
        rows.append({"model": model, "cells": cells})
    return {"label_fraction": chosen_fraction, "datasets": datasets, "rows": rows}


def _fmt(stat: dict | None, digits: int = 1) -> str:
    if not stat or stat["mean"] is None:
        return "-"
    spread = "n/a" if stat["std"] is None else f"{stat['std']:.{digits}f}"
    text = f"{stat['mean']:.{digits}f} ± {spread}"
    if stat.get("ci"):
        text += f" [{stat['ci'][0]:.{digits}f}, {stat['ci'][1]:.{digits}f}]"
    return text


def seg_markdown(table: dict) -> str:
    """The table in Markdown: Dice and IoU in %, HD95 in pixels; mean ± std over runs [95% CI]."""
    head = ["Model"] + [f"{ds} {title}" for ds in table["datasets"] for _, title in SEG_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table["rows"]:
        cells = [_fmt(row["cells"].get(ds, {}).get(key)) for ds in table["datasets"] for key, _ in SEG_COLUMNS]
        lines.append("| " + " | ".join([row["model"], *cells]) + " |")
    lines.append("")
    lines.append(f"Label fraction {table['label_fraction']:g}. Mean ± sample std over folds and seeds; "
                 "[95% bootstrap interval of the mean over the pooled test images]. Dice and IoU: "
                 "mean-foreground per image, in %; HD95 in pixels at the original image size.")
    return "\n".join(lines) + "\n"


def _case_figure(result: dict, path: Path) -> Path | None:
    """image | truth | prediction overlays for the best, median and worst test image by Dice."""
    from matplotlib.figure import Figure

    from usfmae.imaging import read_image

    preds = result.get("predictions", {})
    dice = np.asarray([math.nan if v is None else v for v in preds.get("dice", [])], dtype=np.float64)
    if not preds.get("mask_pred") or not np.isfinite(dice).any():
        return None
    order = [i for i in np.argsort(np.where(np.isfinite(dice), dice, np.inf)) if np.isfinite(dice[i])]
    picks = [("best", order[-1]), ("median", order[len(order) // 2]), ("worst", order[0])]
    import cv2

    fig = Figure(figsize=(9, 3 * len(picks)))
    for r, (label, i) in enumerate(picks):
        try:
            image = read_image(preds["id"][i])
            truth, pred = (cv2.imread(preds[k][i], cv2.IMREAD_UNCHANGED) for k in ("mask_true", "mask_pred"))
        except Exception:  # noqa: BLE001 - a moved results folder: no figure, not a failed report
            return None
        if truth is None or pred is None:
            return None
        truth = (truth > 0).astype(np.uint8) if truth.ndim == 2 and truth.max() == 255 else truth
        if truth.ndim == 3:  # a colour-coded mask: show it as foreground
            truth = truth.any(axis=2).astype(np.uint8)
        for c, (title, panel) in enumerate((("image", np.repeat(image[..., :1], 3, 2) if image.shape[2] == 1
                                             else image), ("truth", overlay(image, truth)),
                                            ("prediction", overlay(image, pred)))):
            ax = fig.add_subplot(len(picks), 3, 3 * r + c + 1)
            ax.imshow(panel)
            ax.set_axis_off()
            ax.set_title(f"{label} (Dice {100 * dice[i]:.1f})" if c == 2 else (title if r == 0 else ""),
                         fontsize=9)
    fig.suptitle(f"{result['model']} on {result['dataset']}, fold {result['fold']} seed {result['seed']}",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def write_seg_report(results: Sequence[dict], out: Path, label_fraction: float | None = None,
                     n_boot: int = 1000, seed: int = 0, models: Sequence[str] = ()) -> dict[str, list[Path]]:
    """Write seg_table.md / seg_table.csv, best/median/worst overlay figures per model and dataset,
    and Dice vs label-fraction curves (where several fractions were run) into ``out``."""
    from usfmae.eval.plots import plot_label_efficiency
    from usfmae.fileio import atomic_open

    table = seg_table(results, label_fraction, n_boot, seed, models)
    written: dict[str, list[Path]] = {"seg_tables": [], "seg_cases": [], "seg_label_efficiency": []}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "dataset", "metric", "mean", "std", "runs", "ci_low", "ci_high"])
    for row in table["rows"]:
        for ds, stats in row["cells"].items():
            for key, stat in stats.items():
                ci = stat["ci"] or [None, None]
                writer.writerow([row["model"], ds, key, stat["mean"], stat["std"], stat["runs"], *ci])
    for name, text in (("seg_table.md", seg_markdown(table)), ("seg_table.csv", buffer.getvalue())):
        with atomic_open(out / name, "w", encoding="utf-8") as handle:
            handle.write(text)
        written["seg_tables"].append(out / name)
    chosen = [r for r in results if abs(float(r["protocol"].get("label_fraction", 1.0)) - table["label_fraction"]) < 1e-9]
    for row in table["rows"]:
        for ds in row["cells"]:
            first = min((r for r in chosen if r["model"] == row["model"] and r["dataset"] == ds),
                        key=lambda r: (r["fold"], r["seed"]))
            figure = _case_figure(first, out / "seg_cases" / f"{_slug(ds)}__{_slug(row['model'])}.png")
            if figure is not None:
                written["seg_cases"].append(figure)
    for ds in dict.fromkeys(r["dataset"] for r in results):
        curves: dict[str, list[tuple[float, float, float]]] = {}
        for model in dict.fromkeys(r["model"] for r in results if r["dataset"] == ds):
            by_fraction: dict[float, list[float]] = {}
            for r in results:
                if r["dataset"] == ds and r["model"] == model and r["metrics"].get("dice") is not None:
                    by_fraction.setdefault(float(r["protocol"].get("label_fraction", 1.0)), []).append(
                        100 * r["metrics"]["dice"])
            curves[model] = [(f, float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
                             for f, v in sorted(by_fraction.items())]
        if any(len(points) > 1 for points in curves.values()):
            written["seg_label_efficiency"].append(plot_label_efficiency(
                curves, out / f"seg_label_efficiency_{_slug(ds)}.png", ylabel="Dice (%)", title=ds))
    return written


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")
