"""Segmentation metrics: Dice, IoU and HD95 per image and per class, aggregates and bootstrap CIs.

Conventions (the same as MONAI's ``compute_dice`` / ``compute_iou`` / ``compute_hausdorff_distance``
with ``percentile=95``, tested against them on known masks):

- Dice = 2 TP / (2 TP + FP + FN) and IoU = TP / (TP + FP + FN), per image and class, from
  label-index masks. A class absent from both the truth and the prediction is undefined (NaN, as
  nnU-Net reports it) and left out of every mean; absent from the truth but predicted scores 0.
- HD95 is the larger of the two directed 95th-percentile distances between the mask edges (a
  foreground pixel with a background 4-neighbour, the outside of the image counting as
  background), in pixels, or in mm when the pixel spacing is known. Both empty: NaN; one empty:
  MONAI returns infinity, which :func:`segmentation_metrics` replaces by the image diagonal (the
  largest possible distance, as the BraTS challenge does) so that a missed lesion is penalised and
  the mean stays finite.
- "mean foreground" averages the classes 1..C-1 of an image (NaN classes left out).

Metric names in the results JSON: ``dice``, ``iou``, ``hd95`` (mean over images of the
mean-foreground value), ``dice_per_class`` ..., and ``hd95_mm`` where a spacing is given.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import binary_erosion
from scipy.spatial import KDTree

from usfmae.eval.metrics import bootstrap_ci

SEG_METRICS = ("dice", "iou", "hd95")


def _check_pair(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"prediction and truth must be (H, W) masks of one size, got {pred.shape} and {true.shape}")
    return pred.astype(np.int64, copy=False), true.astype(np.int64, copy=False)


def overlap_counts(pred: np.ndarray, true: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class (TP, FP, FN) pixel counts of one image.

    Args:
        pred, true: (H, W) label-index masks with values in 0..num_classes-1.
        num_classes: C, background included.

    Returns:
        (C, 3) int64: true positives, false positives, false negatives per class.
    """
    pred, true = _check_pair(pred, true)
    cm = np.bincount(true.ravel() * num_classes + pred.ravel(), minlength=num_classes**2)
    cm = cm[: num_classes**2].reshape(num_classes, num_classes)  # rows truth, columns prediction
    tp = np.diag(cm)
    return np.stack([tp, cm.sum(0) - tp, cm.sum(1) - tp], axis=1)


def dice_iou_from_counts(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU from (..., 3) TP/FP/FN counts; NaN where TP + FP + FN = 0."""
    counts = np.asarray(counts, dtype=np.float64)
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(union > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        iou = np.where(union > 0, tp / union, np.nan)
    return dice, iou


def _edges(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels with a background 4-neighbour (outside the image is background)."""
    return mask & ~binary_erosion(mask)


def hausdorff95(pred: np.ndarray, true: np.ndarray, spacing: float | Sequence[float] | None = None) -> float:
    """Symmetric 95th-percentile Hausdorff distance between two binary masks (MONAI's definition).

    Args:
        pred, true: (H, W) bool masks.
        spacing: pixel size (one value, or (row, column)); None = pixels.

    Returns:
        The distance; NaN when both masks are empty, infinity when exactly one is.
    """
    pred, true = np.asarray(pred, dtype=bool), np.asarray(true, dtype=bool)
    if not pred.any() and not true.any():
        return math.nan
    if not pred.any() or not true.any():
        return math.inf
    scale = np.ones(2) if spacing is None else np.broadcast_to(np.asarray(spacing, dtype=np.float64), (2,))
    ep, et = np.argwhere(_edges(pred)) * scale, np.argwhere(_edges(true)) * scale
    # MONAI keeps distances in float32 and takes torch.quantile's linear percentile; so do we.
    d_pt = KDTree(et).query(ep, k=1)[0].astype(np.float32)
    d_tp = KDTree(ep).query(et, k=1)[0].astype(np.float32)
    return float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)))


def image_metrics(pred: np.ndarray, true: np.ndarray, num_classes: int,
                  spacing: float | Sequence[float] | None = None) -> dict:
    """Every metric of one image.

    Args:
        pred, true: (H, W) label-index masks.
        num_classes: C, background included.
        spacing: pixel size in mm, (row, column) or one value; adds ``hd95_mm``.

    Returns:
        ``{"dice", "iou", "hd95"[, "hd95_mm"]}`` mean-foreground values (NaN when undefined) and
        ``"<metric>_per_class"`` lists over the foreground classes 1..C-1; HD95 with infinity
        replaced by the image diagonal (see the module docstring); ``"counts"`` (C, 3) TP/FP/FN.
    """
    pred, true = _check_pair(pred, true)
    counts = overlap_counts(pred, true, num_classes)
    dice, iou = dice_iou_from_counts(counts)
    out: dict = {"counts": counts.tolist()}
    units = [("hd95", None)] + ([("hd95_mm", spacing)] if spacing is not None else [])
    for name, sp in units:
        scale = np.ones(2) if sp is None else np.broadcast_to(np.asarray(sp, dtype=np.float64), (2,))
        diagonal = float(np.hypot(*(np.asarray(pred.shape) * scale)))
        values = [hausdorff95(pred == c, true == c, sp) for c in range(1, num_classes)]
        out[f"{name}_per_class"] = [diagonal if math.isinf(v) else v for v in values]
    out["dice_per_class"], out["iou_per_class"] = dice[1:].tolist(), iou[1:].tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN image: NaN is the answer
        for name in ("dice", "iou", "hd95", "hd95_mm"):
            if f"{name}_per_class" in out:
                out[name] = float(np.nanmean(np.asarray(out[f"{name}_per_class"], dtype=np.float64)))
    return out


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def segmentation_metrics(preds: Sequence[np.ndarray], trues: Sequence[np.ndarray], num_classes: int,
                         classes: Sequence[str] | None = None,
                         spacings: Sequence[float | Sequence[float] | None] | None = None,
                         n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Metrics of a test set: means over images, pooled per-class values, per-image values, CIs.

    Args:
        preds, trues: N label-index masks (H_i, W_i) each (sizes may differ between images).
        num_classes: C, background included.
        classes: C class names (default "0".."C-1").
        spacings: per-image pixel spacing in mm (None entries: unknown); adds ``hd95_mm``.
        n_boot: bootstrap resamples of the images for the 95% CIs of the means (0 = none).
        seed, level: bootstrap seed and coverage.

    Returns:
        ``{"n", "classes", "dice", "iou", "hd95"[, "hd95_mm"], "per_class": {metric: [C-1]},
        "pooled": {"dice": [C-1], "iou": [C-1]}, "per_image": {metric: [N]}, "ci": {metric: [lo, hi]}}``.
        ``pooled`` sums TP/FP/FN over all images first (the mmsegmentation convention for mIoU).
    """
    if len(preds) != len(trues):
        raise ValueError(f"{len(preds)} predictions for {len(trues)} truths")
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(num_classes)]
    spacings = list(spacings) if spacings is not None else [None] * len(preds)
    with_mm = any(s is not None for s in spacings)
    rows = [image_metrics(p, t, num_classes, s) for p, t, s in zip(preds, trues, spacings, strict=True)]
    metric_names = list(SEG_METRICS) + (["hd95_mm"] if with_mm else [])
    out: dict = {"n": len(rows), "classes": names}
    per_image = {m: [r.get(m, math.nan) for r in rows] for m in metric_names}
    for m in metric_names:
        out[m] = _nanmean(np.asarray(per_image[m]))
    out["per_class"] = {}
    for m in metric_names:
        table = np.array([r.get(f"{m}_per_class", [math.nan] * (num_classes - 1)) for r in rows],
                         dtype=np.float64).reshape(len(rows), num_classes - 1)
        out["per_class"][m] = [_nanmean(table[:, c]) for c in range(num_classes - 1)]
    total = np.sum([r["counts"] for r in rows], axis=0) if rows else np.zeros((num_classes, 3))
    pooled_dice, pooled_iou = dice_iou_from_counts(total)
    out["pooled"] = {"dice": pooled_dice[1:].tolist(), "iou": pooled_iou[1:].tolist()}
    out["per_image"] = per_image
    if n_boot and rows:
        out["ci"] = {m: list(mean_ci(per_image[m], n_boot, seed, level)) for m in metric_names}
    return out


def mean_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-image values (NaN values left out).

    Resamples images with :func:`usfmae.eval.metrics.bootstrap_ci` (the same resampling as the
    classification intervals).
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return math.nan, math.nan
    return bootstrap_ci(values, values, None, metric=lambda t, _p, _s: float(t.mean()),
                        n_boot=n_boot, seed=seed, level=level)
