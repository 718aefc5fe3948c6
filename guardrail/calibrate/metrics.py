"""Detection metrics: AUROC with a bootstrap interval, ROC curves, quality at a threshold.

A hallucination (a wrong answer) is the positive class; a score is oriented so that higher
means more likely hallucinated. Point values and curves come from scikit-learn; the bootstrap
interval is vectorized here (scikit-learn has none) and tested against scikit-learn's AUROC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as _sklearn_roc_curve

from guardrail.errors import InvalidInputError

__all__ = [
    "AurocResult",
    "ThresholdMetrics",
    "auroc",
    "bootstrap_auroc",
    "roc_curve",
    "threshold_metrics",
    "weighted_aurocs",
]


@dataclass(frozen=True)
class AurocResult:
    """AUROC (hallucination = positive) with its bootstrap 95% interval."""

    value: float
    low: float
    high: float
    n: int
    n_hallucinated: int

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _labels(labels: Sequence[bool] | np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(labels, dtype=bool)
    if y.shape != (n,):
        raise InvalidInputError(f"`labels` must have shape ({n},) like `scores`, got {y.shape}")
    positives = int(y.sum())
    if positives == 0 or positives == n:
        kind = "correct" if positives == 0 else "wrong"
        raise InvalidInputError(
            f"AUROC is undefined: all {n} answers are {kind}; it needs both correct and wrong answers "
            "(use more or harder questions)"
        )
    return y


def _check_scores(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.shape[0] < 2:
        raise InvalidInputError(f"`scores` must be a 1-d array of at least 2 values, got shape {s.shape}")
    if np.isnan(s).any():
        raise InvalidInputError(f"`scores` holds NaN at positions {np.flatnonzero(np.isnan(s)).tolist()[:10]}")
    return s


def auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve; ``labels`` true = hallucinated; ties count one half."""
    s = _check_scores(scores)
    y = _labels(labels, s.shape[0])
    return float(roc_auc_score(y, s))


def bootstrap_auroc(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> AurocResult:
    """AUROC with a percentile bootstrap 95% interval (items resampled with replacement).

    Each resample draws item multiplicities; resamples with only one class are dropped.
    """
    s = _check_scores(scores)
    y = _labels(labels, s.shape[0])
    n = s.shape[0]
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples)
    values = weighted_aurocs(s, y, counts)
    values = values[np.isfinite(values)]
    low, high = np.percentile(values, [2.5, 97.5]) if values.size else (np.nan, np.nan)
    return AurocResult(auroc(s, y), float(low), float(high), int(n), int(y.sum()))


def weighted_aurocs(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC under each row of item ``weights`` (shape ``(k, n)``), vectorized; NaN where a row
    weighs only one class.

    With ``M[i, j] = [s_i > s_j] + ½[s_i = s_j]`` over positive ``i`` and negative ``j``, a row's
    AUROC is ``w_pos · M · w_neg / (Σ w_pos · Σ w_neg)`` (scikit-learn's ``roc_auc_score`` with
    ``sample_weight`` is the oracle in the tests).
    """
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])  # (n1, n0)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    w_pos, w_neg = w[:, y], w[:, ~y]
    denominator = w_pos.sum(1) * w_neg.sum(1)
    numerator = ((w_pos @ wins) * w_neg).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False-flag rate and recall over all thresholds, from (0, 0) to (1, 1)."""
    fpr, tpr, _ = _sklearn_roc_curve(np.asarray(labels, dtype=bool), np.asarray(scores, dtype=np.float64))
    return fpr, tpr


@dataclass(frozen=True)
class ThresholdMetrics:
    """Detection quality at one threshold (flagged iff score > threshold)."""

    threshold: float
    precision: float
    recall: float
    f1: float
    flag_rate: float
    false_flag_rate: float


def threshold_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> ThresholdMetrics:
    """Precision, recall, F1, flag rate and false-flag rate (correct answers flagged)."""
    flagged = np.asarray(scores) > threshold
    y = np.asarray(labels, dtype=bool)
    tp = float((flagged & y).sum())
    precision = tp / flagged.sum() if flagged.any() else 0.0
    recall = tp / y.sum() if y.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    false_flag = float((flagged & ~y).sum() / (~y).sum()) if (~y).any() else 0.0
    flag_rate = float(flagged.mean())
    return ThresholdMetrics(float(threshold), float(precision), float(recall), float(f1), flag_rate, false_flag)
