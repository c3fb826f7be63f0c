"""What is fit on frozen features: logistic-regression and cosine k-NN probes, behind one entry
point (:func:`fit_probe`) and one recipe record (:func:`probe_recipe`), so ``usfmae finetune
--mode linear|knn`` and the label-fraction curves of ``usfmae probe`` fit and record a probe the
same way.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from usfmae.errors import ConfigError

log = logging.getLogger(__name__)

PROBES = ("linear", "knn")
_LINEAR_C = 1.0
_LINEAR_MAX_ITER = 2000


def _full_proba(proba: np.ndarray, seen: np.ndarray, num_classes: int) -> np.ndarray:
    """Spread sklearn's ``(N, len(seen))`` probabilities into ``(N, num_classes)`` columns."""
    out = np.zeros((proba.shape[0], num_classes), dtype=np.float64)
    out[:, seen] = proba
    return out


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int,
                 seed: int = 0, c: float = _LINEAR_C, max_iter: int = _LINEAR_MAX_ITER) -> np.ndarray:
    """Logistic regression on standardised frozen features.

    Args:
        train_x: ``(N, D)`` features; train_y: ``(N,)`` class indices; test_x: ``(M, D)``.

    Returns:
        ``(M, num_classes)`` class probabilities (0 for classes absent from ``train_y``).
    """
    seen = np.unique(train_y)
    if len(seen) == 1:  # a 1%-label subset may hold one class: predict it with certainty
        return _full_proba(np.ones((len(test_x), 1)), seen, num_classes)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
    probe.fit(train_x, train_y)
    return _full_proba(probe.predict_proba(test_x), seen, num_classes)


def knn_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int,
              k: int = 20) -> np.ndarray:
    """k-nearest-neighbour vote under cosine distance (``k`` capped at the training set size).

    Returns:
        ``(M, num_classes)`` vote fractions.
    """
    seen = np.unique(train_y)
    knn = KNeighborsClassifier(n_neighbors=min(k, len(train_y)), metric="cosine", algorithm="brute")
    knn.fit(train_x, train_y)
    return _full_proba(knn.predict_proba(test_x), seen, num_classes)


def fit_probe(method: str, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int, *,
              seed: int = 0, knn_k: int = 20) -> np.ndarray:
    """Fit probe ``method`` ("linear" or "knn") on ``(N, D)`` features; ``(M, num_classes)`` scores."""
    if method == "linear":
        return linear_probe(train_x, train_y, test_x, num_classes, seed=seed)
    if method == "knn":
        return knn_probe(train_x, train_y, test_x, num_classes, k=knn_k)
    raise ConfigError(f"unknown probe {method!r}; choose one of: {', '.join(PROBES)}")


def probe_recipe(method: str, knn_k: int = 20) -> dict[str, Any]:
    """What a results file records about probe ``method`` (its ``protocol.recipe``)."""
    if method == "linear":
        return {"probe": f"StandardScaler + LogisticRegression(C={_LINEAR_C:g}, max_iter={_LINEAR_MAX_ITER})"}
    return {"probe": "k-NN, cosine distance, vote fractions", "knn_k": knn_k}
