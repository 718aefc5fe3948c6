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

from guardrail.errors import CalibrationError, InvalidInputError

__all__ = [
    "AurocResult",
    "RiskCoverage",
    "ThresholdMetrics",
    "auroc",
    "bootstrap_auroc",
    "choose_threshold",
    "risk_coverage",
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


def choose_threshold(scores: np.ndarray, labels: np.ndarray, limit: float | None) -> ThresholdMetrics:
    """The threshold (flag iff score > threshold) for a goal, over every cut between scores.

    ``limit=None``: maximize F1 of flagging wrong answers (ties: the lower flag rate). Otherwise
    flag as many wrong answers as possible while flagging at most a fraction ``limit`` of the
    correct ones; raises :class:`~guardrail.errors.CalibrationError` when no such threshold
    flags any wrong answer (the rate is below what the scores can reach).
    """
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    values = np.unique(s)
    cuts = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2.0, [values[-1] + 1.0]])
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    tp = len(pos) - np.searchsorted(pos, cuts, side="right")
    fp = len(neg) - np.searchsorted(neg, cuts, side="right")
    recall = tp / max(len(pos), 1)
    false_flag = fp / max(len(neg), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    if limit is None:
        best = int(np.lexsort(((tp + fp), -f1))[0])  # max F1, then fewest flags
    else:
        allowed = np.flatnonzero(false_flag <= limit + 1e-12)
        best = int(allowed[np.argmax(recall[allowed] - 1e-9 * (tp + fp)[allowed])])
        if recall[best] == 0.0:
            reach = false_flag[recall > 0]
            lowest = float(reach.min()) if reach.size else float("nan")
            raise CalibrationError(
                f"no threshold flags any wrong answer while flagging at most {limit:g} of the correct ones "
                f"(the lowest false-flag rate that flags one is {lowest:.3f}): ask for a higher rate or use goal f1"
            )
    return threshold_metrics(s, y, float(cuts[best]))


@dataclass(frozen=True)
class RiskCoverage:
    """What abstaining on flagged answers gives: the share let through and their accuracy.

    Attributes:
        coverage: fraction of answers let through (not flagged) at the threshold.
        selective_accuracy: accuracy of the answers let through (``nan`` if none).
        accuracy: accuracy of all answers (coverage 1).
        aurc: area under the risk–coverage curve (risk = error rate of the answers let through,
            answers let through in order of increasing score); lower is better; a perfect ranking
            gives ``(1 - accuracy) + accuracy · ln(accuracy)``, a random one ``1 - accuracy``.
        curve_coverage: coverage at each cut (ascending).
        curve_risk: risk at each cut.
    """

    coverage: float
    selective_accuracy: float
    accuracy: float
    aurc: float
    curve_coverage: np.ndarray
    curve_risk: np.ndarray


def risk_coverage(scores: np.ndarray, labels: np.ndarray, threshold: float) -> RiskCoverage:
    """Risk–coverage of letting answers through in order of increasing score (labels: true = wrong)."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    if s.shape != y.shape or s.ndim != 1 or not s.size:
        raise InvalidInputError(f"`scores` and `labels` must be 1-d of one length, got {s.shape} and {y.shape}")
    order = np.argsort(s, kind="stable")
    errors = np.cumsum(y[order])
    kept = np.arange(1, len(s) + 1)
    coverage, risk = kept / len(s), errors / kept
    passed = ~(s > threshold)
    selective = float(1 - y[passed].mean()) if passed.any() else float("nan")
    return RiskCoverage(float(passed.mean()), selective, float(1 - y.mean()), float(risk.mean()), coverage, risk)
