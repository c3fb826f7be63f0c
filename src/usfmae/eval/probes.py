"""What is fit on frozen features: logistic-regression and cosine k-NN probes.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def _full_proba(proba: np.ndarray, seen: np.ndarray, num_classes: int) -> np.ndarray:
    """Spread sklearn's ``(N, len(seen))`` probabilities into ``(N, num_classes)`` columns."""
    out = np.zeros((proba.shape[0], num_classes), dtype=np.float64)
    out[:, seen] = proba
    return out


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int,
                 seed: int = 0, c: float = 1.0, max_iter: int = 2000) -> np.ndarray:
    """Logistic regression on standardised frozen features.

    Args:
        train_x: ``(N, D)`` features; train_y: ``(N,)`` class indices; test_x: ``(M, D)``.

    Returns:
        ``(M, num_classes)`` class probabilities (0 for classes absent from ``train_y``).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

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
    from sklearn.neighbors import KNeighborsClassifier

    seen = np.unique(train_y)
    knn = KNeighborsClassifier(n_neighbors=min(k, len(train_y)), metric="cosine", algorithm="brute")
    knn.fit(train_x, train_y)
    return _full_proba(knn.predict_proba(test_x), seen, num_classes)
