"""Detection metrics: AUROC and its bootstrap interval (scikit-learn as the oracle), thresholds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from guardrail.calibrate.metrics import auroc, bootstrap_auroc, roc_curve, threshold_metrics, weighted_aurocs
from guardrail.errors import InvalidInputError


@st.composite
def _weighted_sets(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(min_value=2, max_value=30))
    scores = np.array(draw(st.lists(st.integers(-5, 5), min_size=n, max_size=n)), dtype=float)  # ties
    labels = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    labels[0], labels[1] = True, False  # both classes
    weights = np.array(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), dtype=float)
    weights[0] += 1
    weights[1] += 1
    return scores, labels, weights


@settings(max_examples=200, deadline=None)
@given(_weighted_sets())
def test_weighted_auroc_equals_scikit_learn_with_sample_weights(
    case: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    scores, labels, weights = case
    (ours,) = weighted_aurocs(scores, labels, weights[None, :])
    assert np.isclose(ours, roc_auc_score(labels, scores, sample_weight=weights), atol=1e-12)


def test_a_one_class_resample_is_nan_and_dropped() -> None:
    scores, labels = np.array([0.0, 1.0, 2.0]), np.array([True, False, False])
    values = weighted_aurocs(scores, labels, np.array([[0, 1, 1], [1, 1, 0]]))
    assert np.isnan(values[0]) and values[1] == 0.0
    result = bootstrap_auroc(scores, labels, resamples=50)
    assert np.isfinite(result.low) and np.isfinite(result.high)


def test_bootstrap_point_value_is_scikit_learns() -> None:
    rng = np.random.default_rng(3)
    labels = rng.random(150) < 0.4
    scores = labels + rng.normal(0, 1.0, 150)
    result = bootstrap_auroc(scores, labels, resamples=300, seed=1)
    assert result.value == roc_auc_score(labels, scores)
    assert result.low < result.value < result.high


def test_roc_curve_runs_from_origin_to_one() -> None:
    fpr, tpr = roc_curve(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True]))
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)


def _pairwise(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels], scores[~labels]
    wins = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)]
    return float(np.mean(wins))


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_pairwise_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, 40).astype(float)  # many ties
    labels = rng.random(40) < 0.4
    assert auroc(scores, labels) == pytest.approx(_pairwise(scores, labels))


def test_auroc_extremes() -> None:
    labels = np.array([False, False, True, True])
    assert auroc([0, 1, 2, 3], labels) == 1.0
    assert auroc([3, 2, 1, 0], labels) == 0.0
    assert auroc([1, 1, 1, 1], labels) == 0.5


@pytest.mark.parametrize(("labels", "kind"), [([False] * 4, "correct"), ([True] * 4, "wrong")])
def test_auroc_undefined_says_so(labels: list[bool], kind: str) -> None:
    with pytest.raises(InvalidInputError, match=f"AUROC is undefined: all 4 answers are {kind}"):
        auroc([0.1, 0.2, 0.3, 0.4], labels)
    with pytest.raises(InvalidInputError, match="undefined"):
        bootstrap_auroc([0.1, 0.2, 0.3, 0.4], labels)


def test_auroc_bad_input() -> None:
    with pytest.raises(InvalidInputError, match="NaN"):
        auroc([0.1, float("nan")], [True, False])
    with pytest.raises(InvalidInputError, match="shape"):
        auroc([0.1, 0.2, 0.3], [True, False])


def test_bootstrap_interval() -> None:
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.5
    scores = labels + rng.normal(0, 1.0, 200)
    result = bootstrap_auroc(scores, labels, seed=1)
    assert result.low < result.value < result.high
    assert 0.05 < result.high - result.low < 0.25
    assert result.n == 200 and result.n_hallucinated == int(labels.sum())
    assert bootstrap_auroc(scores, labels, seed=1) == result  # seeded
    assert str(result).startswith(f"{result.value:.3f} [")


def test_threshold_metrics() -> None:
    scores = np.array([0.1, 0.4, 0.6, 0.9])
    labels = np.array([False, True, False, True])
    m = threshold_metrics(scores, labels, 0.5)
    assert (m.precision, m.recall, m.flag_rate, m.false_flag_rate) == (0.5, 0.5, 0.5, 0.5)
    none = threshold_metrics(scores, labels, 1.0)
    assert none.precision == 0.0 and none.recall == 0.0 and none.f1 == 0.0


def _brute_threshold(scores: np.ndarray, labels: np.ndarray, limit: float | None) -> tuple[float, float]:
    """(recall, false-flag rate) of the best cut, by trying every cut."""
    from guardrail.calibrate.metrics import threshold_metrics

    values = np.unique(scores)
    cuts = np.concatenate([[values[0] - 1], (values[:-1] + values[1:]) / 2, [values[-1] + 1]])
    results = [threshold_metrics(scores, labels, float(c)) for c in cuts]
    if limit is None:
        best = max(results, key=lambda r: (r.f1, -r.flag_rate))
    else:
        best = max((r for r in results if r.false_flag_rate <= limit), key=lambda r: (r.recall, -r.flag_rate))
    return best.recall, best.false_flag_rate


@pytest.mark.parametrize("limit", [None, 0.0, 0.1, 0.25])
def test_choose_threshold_matches_trying_every_cut(limit: float | None) -> None:
    from guardrail.calibrate.metrics import choose_threshold

    rng = np.random.default_rng(4)
    labels = rng.random(300) < 0.4
    scores = np.round(rng.normal(labels * 1.0, 1.0), 1)  # ties on purpose
    chosen = choose_threshold(scores, labels, limit)
    assert (chosen.recall, chosen.false_flag_rate) == pytest.approx(_brute_threshold(scores, labels, limit))
    if limit is not None:
        assert chosen.false_flag_rate <= limit


def test_choose_threshold_unreachable_rate() -> None:
    from guardrail.calibrate.metrics import choose_threshold
    from guardrail.errors import CalibrationError

    labels = np.array([True, False, True, False])
    with pytest.raises(CalibrationError, match="lowest false-flag rate that flags one is 0.500"):
        choose_threshold(np.array([1.0, 1.0, 0.0, 0.0]), labels, 0.2)


def test_risk_coverage() -> None:
    from guardrail.calibrate.metrics import risk_coverage

    labels = np.array([False, False, True, True])  # true = wrong
    perfect = risk_coverage(np.array([0.0, 1.0, 2.0, 3.0]), labels, threshold=1.5)
    assert perfect.coverage == 0.5 and perfect.selective_accuracy == 1.0 and perfect.accuracy == 0.5
    np.testing.assert_allclose(perfect.curve_risk, [0, 0, 1 / 3, 1 / 2])
    assert perfect.aurc == pytest.approx((0 + 0 + 1 / 3 + 1 / 2) / 4)
    worst = risk_coverage(np.array([3.0, 2.0, 1.0, 0.0]), labels, threshold=10.0)
    assert worst.coverage == 1.0 and worst.selective_accuracy == 0.5 and worst.aurc > perfect.aurc
    assert np.isnan(risk_coverage(np.array([1.0, 2.0]), np.array([True, False]), threshold=-1).selective_accuracy)
