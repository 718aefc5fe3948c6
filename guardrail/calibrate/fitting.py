"""Fitting a calibration: choose the scorer by validation AUROC, set the threshold for a goal.

Candidates, all measured on the validation split only:

- one pooled metric (by default the energy family: spilled energy, scaled spilled energy,
  marginal energy) × pooling × direction × localizer, scored by its AUROC;
- ``combined``: per localizer, a small L2-regularized logistic regression (scikit-learn) of
  ΔE (min, mean) with token log-prob features (min, mean), scored by its stratified k-fold
  cross-validated AUROC so it does not win by overfitting, then refitted on the whole split.

The best candidate's threshold is set on the same split for the goal: ``f1`` (maximize F1 of
flagging wrong answers) or ``false-flag-rate=X`` (flag as many wrong answers as possible while
flagging at most a fraction X of correct ones).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from guardrail.calibrate.metrics import AurocResult, ThresholdMetrics, bootstrap_auroc
from guardrail.calibrate.metrics import choose_threshold as threshold_for
from guardrail.calibrate.scoring import Scored
from guardrail.calibration import Calibration, Feature, ModelFingerprint, Report
from guardrail.energy import METRICS, POOLINGS
from guardrail.errors import CalibrationError, InvalidInputError

__all__ = [
    "COMBINED_FEATURES",
    "DEFAULT_METRICS",
    "Candidate",
    "choose_threshold",
    "fit",
    "fit_logistic",
    "parse_goal",
    "rank_candidates",
]

DEFAULT_METRICS: tuple[str, ...] = ("spilled_energy", "scaled_spilled_energy", "marginal_energy", "combined")
COMBINED_FEATURES: tuple[tuple[str, str], ...] = (
    ("spilled_energy", "min"),
    ("spilled_energy", "mean"),
    ("logprob", "min"),
    ("logprob", "mean"),
)
_GOAL = re.compile(r"^(?:f1|false-flag-rate=(0(?:\.\d+)?|1(?:\.0*)?))$")


@dataclass(frozen=True, eq=False)
class Candidate:
    """One way of scoring, with its validation AUROC and validation scores.

    Attributes:
        name: e.g. ``-spilled_energy[min]@heuristic`` or ``combined@heuristic``.
        localizer: the span the features pool over.
        features: the calibration features.
        bias: the calibration bias.
        auroc: validation AUROC (cross-validated for ``combined``) with its interval.
        scores: the candidate's validation scores (higher = more hallucinated).
    """

    name: str
    localizer: str
    features: tuple[Feature, ...]
    bias: float
    auroc: AurocResult
    scores: np.ndarray


def parse_goal(goal: str) -> float | None:
    """``"f1"`` -> ``None``; ``"false-flag-rate=0.1"`` -> ``0.1``."""
    match = _GOAL.match(goal.strip()) if isinstance(goal, str) else None
    if match is None:
        raise InvalidInputError(f"`goal` must be 'f1' or 'false-flag-rate=X' with 0 <= X <= 1, got {goal!r}")
    return float(match.group(1)) if match.group(1) is not None else None


def choose_threshold(scores: np.ndarray, labels: np.ndarray, goal: str) -> ThresholdMetrics:
    """The threshold (flag iff score > threshold) that meets ``goal`` on these scores."""
    return threshold_for(scores, labels, parse_goal(goal))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> tuple[np.ndarray, float]:
    """L2-regularized logistic regression (scikit-learn) on already standardized ``x``.

    Args:
        x: ``(n, k)`` features (already standardized).
        y: ``(n,)`` booleans, true = hallucinated.
        l2: ridge penalty on the weights (not on the intercept); scikit-learn's ``C = 1 / l2``.

    Returns:
        ``(weights, bias)`` so that ``x @ weights + bias`` is the log-odds of hallucination.
    """
    model = LogisticRegression(C=1.0 / l2, max_iter=1000).fit(x, y)
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])


def _logistic_pipeline(l2: float = 1.0) -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0 / l2, max_iter=1000))


def _combined(scored: Scored, localizer: str, y: np.ndarray, folds: int, seed: int) -> Candidate:
    raw = np.column_stack([scored.pooled(m, p, localizer) for m, p in COMBINED_FEATURES])
    smallest = int(min(y.sum(), (~y).sum()))
    if smallest < folds:
        raise CalibrationError(
            f"cross-validation needs at least {folds} correct and {folds} wrong answers, got {smallest} "
            "of the rarer kind; use more labelled data"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    out_of_fold = cross_val_predict(_logistic_pipeline(), raw, y, cv=splitter, method="decision_function")
    pipeline = _logistic_pipeline().fit(raw, y)
    scaler, model = pipeline[0], pipeline[-1]
    features = tuple(
        Feature(metric=m, pooling=p, weight=float(w), center=float(c), scale=float(s))
        for (m, p), w, c, s in zip(COMBINED_FEATURES, model.coef_[0], scaler.mean_, scaler.scale_, strict=True)
    )
    return Candidate(
        f"combined@{localizer}",
        localizer,
        features,
        float(model.intercept_[0]),
        bootstrap_auroc(out_of_fold, y, seed=seed),
        pipeline.decision_function(raw),
    )


def _singles(scored: Scored, metric: str, localizer: str, y: np.ndarray, seed: int) -> list[Candidate]:
    found = []
    for pooling in POOLINGS:
        raw = scored.pooled(metric, pooling, localizer)
        for direction in (1, -1):
            feature = Feature(metric=metric, pooling=pooling, weight=float(direction))
            name = f"{'+' if direction > 0 else '-'}{metric}[{pooling}]@{localizer}"
            found.append(
                Candidate(
                    name,
                    localizer,
                    (feature,),
                    0.0,
                    bootstrap_auroc(direction * raw, y, resamples=200, seed=seed),
                    direction * raw,
                )
            )
    return found


def rank_candidates(
    scored: Scored, *, metrics: Sequence[str] = DEFAULT_METRICS, folds: int = 5, seed: int = 0
) -> list[Candidate]:
    """Every candidate over every located localizer, best validation AUROC first."""
    unknown = [m for m in metrics if m not in (*METRICS, "combined")]
    if unknown or not metrics:
        raise InvalidInputError(
            f"`metrics` must be a non-empty subset of {(*METRICS, 'combined')}, got {list(metrics)}"
        )
    y = scored.labels
    found: list[Candidate] = []
    for localizer in scored.spans:
        for metric in metrics:
            if metric == "combined":
                found.append(_combined(scored, localizer, y, folds, seed))
            else:
                found += _singles(scored, metric, localizer, y, seed)
    return sorted(found, key=lambda c: -c.auroc.value)


def fit(
    scored: Scored,
    *,
    goal: str = "f1",
    metrics: Sequence[str] = DEFAULT_METRICS,
    model: ModelFingerprint | None = None,
    data: str = "validation split",
    seed: int = 0,
) -> tuple[Calibration, list[Candidate]]:
    """The calibration of the best candidate, threshold set for ``goal`` on the same split.

    Returns:
        ``(calibration, ranked candidates)``.
    """
    parse_goal(goal)
    y = scored.labels
    ranked = rank_candidates(scored, metrics=metrics, seed=seed)
    best = ranked[0]
    chosen = choose_threshold(best.scores, y, goal)
    report = Report(
        n=len(y),
        n_hallucinated=int(y.sum()),
        auroc=best.auroc.value,
        auroc_low=best.auroc.low,
        auroc_high=best.auroc.high,
        precision=chosen.precision,
        recall=chosen.recall,
        flag_rate=chosen.flag_rate,
        data=data,
        f1=chosen.f1,
        false_flag_rate=chosen.false_flag_rate,
        selection=f"{best.name}: best validation AUROC of {len(ranked)} candidates"
        + (" (5-fold cross-validated)" if best.name.startswith("combined") else ""),
    )
    calibration = Calibration(
        model=model,
        localizer=best.localizer,
        features=best.features,
        bias=best.bias,
        threshold=chosen.threshold,
        goal=goal,
        report=report,
    )
    return calibration, ranked
