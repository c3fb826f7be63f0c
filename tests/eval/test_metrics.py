"""Metrics equal scikit-learn; bootstrap intervals are reproducible and sensible; aggregation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from usfmae.eval.metrics import (
    CM_METRICS,
    _bootstrap_auroc,
    _resample_indices,
    aggregate,
    bootstrap_ci,
    bootstrap_cis,
    classification_metrics,
    metrics_from_confusion,
)

Y_TRUE = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 0, 1])
Y_PRED = np.array([0, 1, 0, 1, 1, 2, 2, 2, 0, 2, 0, 0])


def _scores(y_true: np.ndarray, n_classes: int, seed: int = 0) -> np.ndarray:
    """(N,C) probabilities that favour the true class."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(y_true), n_classes))
    logits[np.arange(len(y_true)), y_true] += 1.0
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("average", ["macro", "weighted", "micro"])
def test_multiclass_equals_sklearn(average: str) -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, classes=["a", "b", "c"])
    assert m["precision_" + average] == skm.precision_score(Y_TRUE, Y_PRED, average=average, zero_division=0)
    assert m["recall_" + average] == skm.recall_score(Y_TRUE, Y_PRED, average=average, zero_division=0)
    assert m["f1_" + average] == skm.f1_score(Y_TRUE, Y_PRED, average=average, zero_division=0)


def test_known_values_and_other_fields() -> None:
    scores = _scores(Y_TRUE, 3)
    m = classification_metrics(Y_TRUE, Y_PRED, scores, classes=["a", "b", "c"])
    assert m["n"] == 12 and m["classes"] == ["a", "b", "c"]
    assert m["accuracy"] == 8 / 12 == skm.accuracy_score(Y_TRUE, Y_PRED)
    assert m["balanced_accuracy"] == skm.balanced_accuracy_score(Y_TRUE, Y_PRED)
    assert m["confusion_matrix"] == [[3, 1, 0], [1, 2, 1], [1, 0, 3]]
    assert m["per_class"]["support"] == [4, 4, 4]
    assert m["per_class"]["f1"] == skm.f1_score(Y_TRUE, Y_PRED, average=None).tolist()
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(Y_TRUE, scores, multi_class="ovr"), abs=1e-15)
    assert "f1_binary" not in m


def test_binary_positive_class_and_auroc() -> None:
    y_true = np.array([0, 0, 1, 1, 1, 0, 1, 0])
    y_pred = np.array([0, 1, 1, 1, 0, 0, 1, 0])
    proba = np.array([0.1, 0.6, 0.8, 0.7, 0.4, 0.2, 0.9, 0.3])
    m = classification_metrics(y_true, y_pred, np.stack([1 - proba, proba], 1), classes=["benign", "malignant"])
    assert (m["precision_binary"], m["recall_binary"], m["f1_binary"]) == (0.75, 0.75, 0.75)
    assert m["auroc"] == skm.roc_auc_score(y_true, proba) == 0.9375
    assert classification_metrics(y_true, y_pred, proba)["auroc"] == 0.9375  # (N,) scores accepted


def test_undefined_cases_are_zero_or_none() -> None:
    # class 2 never occurs: zero_division -> 0 in macro, AUROC undefined.
    m = classification_metrics([0, 1, 1], [0, 1, 0], _scores(np.array([0, 1, 1]), 3), classes=3)
    assert m["per_class"]["precision"][2] == 0.0
    assert m["precision_macro"] == skm.precision_score([0, 1, 1], [0, 1, 0], labels=[0, 1, 2],
                                                       average="macro", zero_division=0)
    assert m["auroc"] is None


@pytest.mark.parametrize("name", CM_METRICS)
def test_confusion_metrics_match_sklearn(name: str) -> None:
    y_true = np.array([0, 1, 1, 0, 1, 1, 0, 0, 1])
    y_pred = np.array([0, 1, 0, 0, 1, 1, 1, 0, 1])
    m = classification_metrics(y_true, y_pred)
    cm = np.array(m["confusion_matrix"])
    assert metrics_from_confusion(cm, name) == pytest.approx(m[name], abs=1e-12)


def test_bootstrap_deterministic_and_contains_point() -> None:
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 2, 300)
    y_pred = np.where(rng.random(300) < 0.8, y_true, 1 - y_true)
    scores = np.clip(y_pred * 0.6 + rng.random(300) * 0.4, 0, 1)
    point = classification_metrics(y_true, y_pred, scores)
    a = bootstrap_cis(y_true, y_pred, scores, ["f1_macro", "accuracy", "auroc"], n_boot=300, seed=7)
    assert a == bootstrap_cis(y_true, y_pred, scores, ["f1_macro", "accuracy", "auroc"], n_boot=300, seed=7)
    assert a != bootstrap_cis(y_true, y_pred, scores, ["f1_macro", "accuracy", "auroc"], n_boot=300, seed=8)
    for name, (low, high) in a.items():
        assert low < point[name] < high, name
        assert high - low < 0.2
    assert bootstrap_ci(y_true, y_pred, scores, "f1_macro", n_boot=300, seed=7) == a["f1_macro"]


@pytest.mark.parametrize(("n", "n_classes"), [(120, 2), (60, 4), (20, 5)])
def test_vectorised_bootstrap_auroc_equals_sklearn_per_resample(n: int, n_classes: int) -> None:
    rng = np.random.default_rng(n)
    y_true = rng.integers(0, n_classes, n)
    scores = np.round(_scores(y_true, n_classes, seed=n), 1)  # rounding makes ties
    idx = _resample_indices(n, 100, seed=0)
    fast = _bootstrap_auroc(y_true, scores, idx, n_classes)
    slow = []
    for i in idx:  # resamples missing a class are undefined in both
        defined = len(np.unique(y_true[i])) == n_classes
        if not defined:
            slow.append(np.nan)
        elif n_classes == 2:
            slow.append(skm.roc_auc_score(y_true[i], scores[i, 1]))
        else:
            # sklearn's "ovr" macro is this mean (it refuses rounded scores that do not sum to one)
            slow.append(np.mean([skm.roc_auc_score(y_true[i] == c, scores[i, c]) for c in range(n_classes)]))
    np.testing.assert_allclose(fast, np.array(slow), rtol=0, atol=1e-12)


def test_bootstrap_callable_matches_named() -> None:
    y_true = np.array([0, 1, 1, 0, 1, 1, 0, 0, 1, 0] * 3)
    y_pred = np.array([0, 1, 0, 0, 1, 1, 1, 0, 1, 1] * 3)
    named = bootstrap_ci(y_true, y_pred, metric="f1_macro", n_boot=200, seed=3)

    def f1(t, p, _s):
        return skm.f1_score(t, p, labels=[0, 1], average="macro", zero_division=0)

    low, high = bootstrap_ci(y_true, y_pred, metric=f1, n_boot=200, seed=3)
    assert (low, high) == pytest.approx(named, abs=1e-12)


def test_aggregate_mean_std_and_confusion_sum() -> None:
    runs = [classification_metrics([0, 1, 1, 0], p) for p in ([0, 1, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0])]
    agg = aggregate(runs)
    f1 = [r["f1_macro"] for r in runs]
    assert agg["runs"] == 3 and agg["count"]["f1_macro"] == 3
    assert agg["mean"]["f1_macro"] == pytest.approx(np.mean(f1), abs=1e-15)
    assert agg["std"]["f1_macro"] == pytest.approx(np.std(f1, ddof=1), abs=1e-15)
    assert agg["confusion_matrix"] == [[5, 1], [2, 4]]
    assert "auroc" not in agg["mean"]  # None everywhere: left out, not averaged as 0
    assert aggregate(runs[:1])["std"]["accuracy"] == 0.0
