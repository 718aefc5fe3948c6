"""Fitting: goals, thresholds, logistic combination, the written calibration file and its checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from guardrail.calibrate.datasets import Item
from guardrail.calibrate.fitting import choose_threshold, fit, fit_logistic, parse_goal, rank_candidates
from guardrail.calibrate.metrics import auroc
from guardrail.calibrate.runs import Record
from guardrail.calibrate.scoring import Scored
from guardrail.calibration import Calibration, ModelFingerprint
from guardrail.errors import CalibrationError, InvalidInputError
from guardrail.localize import Span
from guardrail.scores import TokenScores

MODEL = ModelFingerprint(name="m", vocab_size=10, tokenizer_sha256="a" * 64)


def _scored(n: int = 120, seed: int = 0) -> Scored:
    """Synthetic answers of 4 tokens; wrong ones have a low-probability, negative-ΔE token."""
    rng = np.random.default_rng(seed)
    records, spans = [], []
    for i in range(n):
        wrong = i % 3 == 0
        lse = rng.normal(10, 0.5, 5)
        chosen = lse[:4] - rng.exponential(0.3, 4)
        if wrong:
            chosen[2] -= rng.uniform(1.0, 4.0)
        correct_answer = "no" if wrong else "yes"
        scores = TokenScores(np.arange(4), chosen, lse[:4], lse[1:], rng.uniform(0, 2, 4))
        records.append(Record(Item(f"q{i}?", ("yes",)), f"a {correct_answer} b c", scores))
        spans.append(Span(0, 4, 0, 9, "a b c d", "whole"))
    return Scored(records, {"whole": spans})


@pytest.mark.parametrize(("goal", "value"), [("f1", None), ("false-flag-rate=0.1", 0.1), ("false-flag-rate=0", 0.0)])
def test_parse_goal(goal: str, value: float | None) -> None:
    assert parse_goal(goal) == value


@pytest.mark.parametrize("goal", ["", "f2", "false-flag-rate=2", "false-flag-rate=-0.1", "recall"])
def test_parse_goal_rejects(goal: str) -> None:
    with pytest.raises(InvalidInputError, match=f"`goal` must be.*{goal!r}"):
        parse_goal(goal)


def test_choose_threshold() -> None:
    scores = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    labels = np.array([False, False, True, False, True, True])
    best = choose_threshold(scores, labels, "f1")
    assert best.f1 == pytest.approx(max(2 * p * r / (p + r) for p, r in [(3 / 4, 1.0), (1.0, 2 / 3), (3 / 5, 1.0)]))
    strict = choose_threshold(scores, labels, "false-flag-rate=0")
    assert strict.false_flag_rate == 0 and strict.recall == pytest.approx(2 / 3)
    assert choose_threshold(scores, labels, "false-flag-rate=0.34").recall == 1.0


def test_fit_logistic_finds_the_signal() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    y = x[:, 0] - 0.2 * rng.normal(size=300) > 0
    weights, _ = fit_logistic(x, y)
    assert weights[0] > 1.0 and abs(weights[1]) < 0.5


def test_fit_writes_a_valid_calibration(tmp_path: Path) -> None:
    scored = _scored()
    calibration, ranked = fit(scored, goal="f1", model=MODEL, data="synthetic")
    assert ranked[0].auroc.value >= ranked[-1].auroc.value
    assert calibration.model == MODEL and calibration.goal == "f1" and calibration.report is not None
    assert any(f.metric == "spilled_energy" for f in calibration.features)
    report = calibration.report
    assert report.n == 120 and report.n_hallucinated == 40 and report.auroc > 0.9
    assert report.auroc_low <= report.auroc <= report.auroc_high and report.selection
    # the written file scores exactly like the fitted candidate
    path = tmp_path / "cal.json"
    calibration.save(path)
    loaded = Calibration.load(path)
    assert loaded == calibration
    assert auroc(scored.calibrated(loaded), scored.labels) > 0.9
    flagged = scored.calibrated(loaded) > loaded.threshold
    assert flagged.mean() == pytest.approx(report.flag_rate)


def test_fit_restricted_metrics_and_goal() -> None:
    calibration, ranked = fit(_scored(), goal="false-flag-rate=0.05", metrics=["spilled_energy"])
    assert {c.name.split("@")[0].lstrip("+-").split("[")[0] for c in ranked} == {"spilled_energy"}
    assert calibration.report is not None and calibration.report.false_flag_rate <= 0.05
    with pytest.raises(InvalidInputError, match="`metrics`"):
        rank_candidates(_scored(), metrics=["bogus"])


def test_fit_all_correct_is_undefined() -> None:
    scored = _scored()
    for r in scored.records:
        object.__setattr__(r, "text", "a yes b c")
    with pytest.raises(InvalidInputError, match="AUROC is undefined"):
        fit(scored)


def test_calibration_file_checks(tmp_path: Path) -> None:
    calibration, _ = fit(_scored(), model=MODEL, data="synthetic")
    path = tmp_path / "cal.json"
    calibration.save(path)
    other = ModelFingerprint(name="other", vocab_size=10, tokenizer_sha256="b" * 64)
    with pytest.raises(CalibrationError, match="fitted for model 'm'"):
        Calibration.load(path).check_model(other)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(CalibrationError, match="cannot read"):
        Calibration.load(path)
    data = json.loads(text)
    for change, message in [
        ({"schema_version": 99}, "schema_version 99"),
        ({"threshold": "high"}, "invalid calibration"),
        ({"report": {**data["report"], "auroc": 1.5}}, "invalid calibration"),
        ({"features": []}, "invalid calibration"),
        ({"pickle": "x"}, "invalid calibration"),
    ]:
        path.write_text(json.dumps({**data, **change}))
        with pytest.raises(CalibrationError, match=message):
            Calibration.load(path)
