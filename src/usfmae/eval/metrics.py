"""Classification metrics with bootstrap confidence intervals, and their mean/std over folds and seeds.

Point estimates come straight from scikit-learn (so they equal what a reader computes themselves);
the bootstrap recomputes the confusion-matrix metrics from resampled confusion matrices in one
vectorised pass, which makes 1,000 resamples of a few thousand predictions take milliseconds.

Metric names (the keys of :func:`classification_metrics`, used by :func:`bootstrap_ci`, the results
JSON and the report): ``accuracy``, ``balanced_accuracy``, ``{precision,recall,f1}_{macro,weighted,
micro}``, ``{precision,recall,f1}_binary`` (two classes only; positive class index 1) and ``auroc``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

CM_METRICS = tuple(f"{m}_{a}" for a in ("macro", "weighted", "micro", "binary")
                   for m in ("precision", "recall", "f1")) + ("accuracy", "balanced_accuracy")

ScoreFn = Callable[[np.ndarray, np.ndarray, "np.ndarray | None"], float]


def _class_names(classes: Sequence[str] | int | None, *arrays: np.ndarray | None) -> list[str]:
    if isinstance(classes, int):
        return [str(i) for i in range(classes)]
    if classes is not None:
        return [str(c) for c in classes]
    n = max(int(a.max()) + 1 if a.ndim == 1 else a.shape[1] for a in arrays if a is not None and a.size)
    return [str(i) for i in range(n)]


def _positive_scores(y_score: np.ndarray) -> np.ndarray:
    """(N,) score of class 1 from (N,) or (N,2) scores."""
    return y_score if y_score.ndim == 1 else y_score[:, 1]


def auroc(y_true: np.ndarray, y_score: np.ndarray, n_classes: int) -> float | None:
    """Binary AUROC, or the unweighted mean of one-vs-rest AUROCs (sklearn's ``ovr`` macro).

    Args:
        y_true: (N,) class indices.
        y_score: (N,C) class scores/probabilities, or (N,) positive-class scores when C == 2.
        n_classes: C.

    Returns:
        The AUROC, or None when undefined (a class absent from ``y_true``).
    """
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y_true)) < n_classes or n_classes < 2:
        return None
    if n_classes == 2:
        return float(roc_auc_score(y_true, _positive_scores(y_score)))
    # Per-class binary AUROC averaged: the same number as roc_auc_score(multi_class="ovr"), but it
    # also accepts raw logits (sklearn insists multiclass scores sum to one).
    return float(np.mean([roc_auc_score(y_true == c, y_score[:, c]) for c in range(n_classes)]))


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], y_score: np.ndarray | None = None,
                           classes: Sequence[str] | int | None = None) -> dict:
    """Every metric of the report for one set of predictions.

    Args:
        y_true: (N,) true class indices.
        y_pred: (N,) predicted class indices.
        y_score: optional (N,C) class probabilities (or (N,) positive-class scores for C == 2).
        classes: class names (or their count); inferred from the data when omitted.

    Returns:
        ``{"n", "classes", "accuracy", "balanced_accuracy", "<metric>_<average>"..., "auroc",
        "per_class": {"precision", "recall", "f1", "support"}, "confusion_matrix"}``; values are
        fractions (0-1), ``auroc`` is None when undefined. Classes absent from both ``y_true`` and
        ``y_pred`` count as zero in macro averages (``zero_division=0``), as scikit-learn does when
        given ``labels``.
    """
    from sklearn import metrics as skm

    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    scores = None if y_score is None else np.asarray(y_score, dtype=np.float64)
    names = _class_names(classes, y_true, y_pred, scores)
    labels = list(range(len(names)))
    out: dict = {"n": int(len(y_true)), "classes": names,
                 "accuracy": float(skm.accuracy_score(y_true, y_pred))}
    recall_per = skm.recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    present = np.isin(labels, y_true)
    # sklearn's balanced accuracy: mean recall over the classes present in y_true.
    out["balanced_accuracy"] = float(recall_per[present].mean()) if present.any() else 0.0
    averages = ["macro", "weighted", "micro"] + (["binary"] if len(names) == 2 else [])
    for average in averages:
        kwargs = {"pos_label": 1} if average == "binary" else {"labels": labels}
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0,
                                                         **kwargs)
        out.update({f"precision_{average}": float(p), f"recall_{average}": float(r), f"f1_{average}": float(f)})
    out["auroc"] = None if scores is None else auroc(y_true, scores, len(names))
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None, zero_division=0)
    out["per_class"] = {"precision": p.tolist(), "recall": r.tolist(), "f1": f.tolist(),
                        "support": s.astype(int).tolist()}
    out["confusion_matrix"] = skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return out


def metrics_from_confusion(cm: np.ndarray, name: str) -> np.ndarray:
    """A confusion-matrix metric for a stack of matrices.

    Args:
        cm: (..., C, C) counts, rows true class, columns predicted class.
        name: one of :data:`CM_METRICS`.

    Returns:
        (...) metric values, with the same zero-division convention as scikit-learn (0).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support, predicted = cm.sum(axis=-1), cm.sum(axis=-2)
    total = support.sum(axis=-1)
    if name == "accuracy" or name.endswith("_micro"):
        return np.divide(tp.sum(axis=-1), total, out=np.zeros_like(total), where=total > 0)
    if name == "balanced_accuracy":
        recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
        present = support > 0
        return np.divide((recall * present).sum(-1), present.sum(-1), out=np.zeros_like(total),
                         where=present.sum(-1) > 0)
    metric, _, average = name.rpartition("_")
    denominator = {"precision": predicted, "recall": support, "f1": predicted + support}.get(metric)
    if denominator is None or average not in ("macro", "weighted", "binary"):
        raise ValueError(f"unknown confusion-matrix metric {name!r}; known: {', '.join(CM_METRICS)}")
    numerator = 2 * tp if metric == "f1" else tp
    per_class = np.divide(numerator, denominator, out=np.zeros_like(tp), where=denominator > 0)
    if average == "binary":
        if cm.shape[-1] != 2:
            raise ValueError(f"{name} needs two classes, got {cm.shape[-1]}")
        return per_class[..., 1]
    if average == "macro":
        return per_class.mean(axis=-1)
    return np.divide((per_class * support).sum(-1), total, out=np.zeros_like(total), where=total > 0)


def _weighted_auroc(weights: np.ndarray, positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Binary AUROC of many reweighted copies of one data set (Mann-Whitney, ties count half).

    Args:
        weights: (B, N) multiplicity of each sample in each bootstrap resample.
        positive: (N,) bool, the positive class.
        scores: (N,) positive-class scores.

    Returns:
        (B,) AUROC per resample; nan where a resample lacks positives or negatives.
    """
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])  # tie groups
    w = weights[:, order]
    pos = np.add.reduceat(w * positive[order], starts, axis=1)  # (B, U) positive weight per score value
    neg = np.add.reduceat(w * ~positive[order], starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negatives with a strictly lower score
    numerator = (pos * (below + 0.5 * neg)).sum(axis=1)
    denominator = pos.sum(axis=1) * neg.sum(axis=1)
    return np.divide(numerator, denominator, out=np.full(len(w), np.nan), where=denominator > 0)


def _bootstrap_auroc(y_true: np.ndarray, scores: np.ndarray, idx: np.ndarray, n_classes: int) -> np.ndarray:
    """(B,) AUROC (binary, or one-vs-rest macro) of each resample ``idx`` (B, N); nan where undefined."""
    n_boot, n = idx.shape
    weights = np.bincount((np.arange(n_boot)[:, None] * n + idx).ravel(), minlength=n_boot * n)
    weights = weights.reshape(n_boot, n).astype(np.float64)
    if n_classes == 2:
        return _weighted_auroc(weights, y_true == 1, _positive_scores(scores))
    # Undefined (nan) when a class is missing from a resample, as auroc() returns None then.
    per_class = [_weighted_auroc(weights, y_true == c, scores[:, c]) for c in range(n_classes)]
    return np.mean(per_class, axis=0)


def _resample_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) indices drawn with replacement; fixed by ``seed``."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_cis(y_true: Sequence[int], y_pred: Sequence[int], y_score: np.ndarray | None = None,
                  metrics: Sequence[str] = ("precision_macro", "recall_macro", "f1_macro"),
                  n_boot: int = 1000, seed: int = 0, n_classes: int | None = None,
                  level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals for several metrics from the same resamples.

    Args:
        y_true, y_pred: (N,) class indices. y_score: (N,C) scores, needed for ``auroc`` only.
        metrics: names from :data:`CM_METRICS` and/or ``"auroc"``.
        n_boot: resamples (with replacement, same size as the data).
        seed: makes the intervals reproducible.
        n_classes: C; inferred from the data when omitted.
        level: coverage (0.95 -> 2.5th and 97.5th percentiles).

    Returns:
        ``{metric: (low, high)}``; (nan, nan) when no resample defines the metric.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    scores = None if y_score is None else np.asarray(y_score, dtype=np.float64)
    c = n_classes or len(_class_names(None, y_true, y_pred, scores))
    idx = _resample_indices(len(y_true), n_boot, seed)
    # One bincount builds all n_boot confusion matrices: cell id = boot * C*C + true * C + pred.
    cell = (np.arange(n_boot)[:, None] * c * c + y_true[idx] * c + y_pred[idx]).ravel()
    cms = np.bincount(cell, minlength=n_boot * c * c).reshape(n_boot, c, c)
    tails = (100 * (1 - level) / 2, 100 * (1 + level) / 2)
    out = {}
    for name in metrics:
        if name == "auroc":
            if scores is None:
                raise ValueError("auroc needs y_score")
            values = _bootstrap_auroc(y_true, scores, idx, c)
        else:
            values = metrics_from_confusion(cms, name)
        finite = values[np.isfinite(values)]
        low, high = np.percentile(finite, tails) if finite.size else (math.nan, math.nan)
        out[name] = (float(low), float(high))
    return out


def bootstrap_ci(y_true: Sequence[int], y_pred: Sequence[int], y_score: np.ndarray | None = None,
                 metric: str | ScoreFn = "f1_macro", n_boot: int = 1000, seed: int = 0,
                 n_classes: int | None = None, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval (95% by default) of one metric.

    Args:
        metric: a metric name (see :func:`bootstrap_cis`) or a function
            ``f(y_true, y_pred, y_score) -> float`` evaluated on every resample.
        Other arguments as in :func:`bootstrap_cis`.

    Returns:
        (low, high).
    """
    if isinstance(metric, str):
        return bootstrap_cis(y_true, y_pred, y_score, [metric], n_boot, seed, n_classes, level)[metric]
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    scores = None if y_score is None else np.asarray(y_score)
    values = np.array([metric(y_true[i], y_pred[i], None if scores is None else scores[i])
                       for i in _resample_indices(len(y_true), n_boot, seed)], dtype=np.float64)
    finite = values[np.isfinite(values)]
    if not finite.size:
        return math.nan, math.nan
    low, high = np.percentile(finite, (100 * (1 - level) / 2, 100 * (1 + level) / 2))
    return float(low), float(high)


def aggregate(runs: Sequence[dict]) -> dict:
    """Mean and sample standard deviation (ddof=1; 0 for one run) of every scalar metric.

    Args:
        runs: metric dicts from :func:`classification_metrics` (one per fold and seed).

    Returns:
        ``{"runs": R, "mean": {name: v}, "std": {name: v}, "count": {name: k},
        "confusion_matrix": summed counts or None}``. A metric that is None in some runs (e.g. an
        undefined AUROC) is averaged over the runs that define it; ``count`` says how many.
    """
    names = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and k != "n"] if runs else []
    mean, std, count = {}, {}, {}
    for name in dict.fromkeys(names + [k for r in runs for k in r if k == "auroc"]):
        values = np.array([r[name] for r in runs if isinstance(r.get(name), (int, float))], dtype=np.float64)
        if not values.size:
            continue
        mean[name] = float(values.mean())
        std[name] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        count[name] = int(values.size)
    cms = [np.asarray(r["confusion_matrix"]) for r in runs if r.get("confusion_matrix") is not None]
    summed = np.sum(cms, axis=0).tolist() if cms and len({m.shape for m in cms}) == 1 else None
    return {"runs": len(runs), "mean": mean, "std": std, "count": count, "confusion_matrix": summed}
