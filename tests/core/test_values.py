"""Frozen values: TokenScores, Span, Policy, Verdict, Calibration files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from guardrail import Action, Attempt, Calibration, HallucinationDetected, Policy, RetryStep, Span, TokenScores, Verdict
from guardrail.calibration import Feature, ModelFingerprint
from guardrail.errors import CalibrationError, InvalidInputError, NonFiniteLogitsError


def scores(n: int = 3) -> TokenScores:
    return TokenScores(
        token_ids=np.arange(n),
        chosen_logit=np.linspace(10, 12, n),
        log_partition=np.linspace(11, 13, n),
        next_log_partition=np.linspace(9, 14, n),
        entropy=np.ones(n),
    )


def test_token_scores_are_frozen_and_named() -> None:
    s = scores()
    with pytest.raises(ValueError):  # stored arrays are read-only
        s.chosen_logit[0] = 1.0
    np.testing.assert_allclose(s.spilled_energy, s.next_log_partition - s.chosen_logit)
    assert s.pooled("spilled_energy", "min", range(1, 3)) == s.spilled_energy[1:].min()
    d = s.to_dict()
    assert set(d) >= {"token_ids", "spilled_energy", "logit_energy", "marginal_energy", "logprob"}
    json.dumps(d)


def test_token_scores_reject_bad_shapes_nan_and_empty_spans() -> None:
    with pytest.raises(InvalidInputError, match="`entropy` must have shape"):
        TokenScores(np.arange(2), np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(3))
    with pytest.raises(NonFiniteLogitsError, match=r"positions \[1\]"):
        TokenScores(np.arange(2), np.array([0.0, np.nan]), np.zeros(2), np.zeros(2), np.zeros(2))
    with pytest.raises(NonFiniteLogitsError):
        TokenScores(np.arange(1), np.zeros(1), np.zeros(1), np.array([np.inf]), np.zeros(1))
    with pytest.raises(InvalidInputError, match="selects no token"):
        scores().pooled("logprob", "mean", range(3, 3))


def test_policy_validation_names_the_argument() -> None:
    with pytest.raises(InvalidInputError, match="`on_hallucination`.*'block'"):
        Policy(on_hallucination="block")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="`max_attempts` must be >= 2 to retry"):
        Policy(on_hallucination="retry", max_attempts=1)
    with pytest.raises(InvalidInputError, match="`retry_temperature`"):
        Policy(retry_temperature=0)
    with pytest.raises(InvalidInputError, match="`abstain_text`"):
        Policy(abstain_text="  ")


def test_policy_decisions() -> None:
    assert Policy().decide(0.5, 1.0) is Action.ALLOW
    assert Policy().decide(1.5, 1.0) is Action.FLAG
    assert Policy(on_hallucination="abstain").decide(1.5, 1.0) is Action.ABSTAIN
    retry = Policy(on_hallucination="retry", after_retries="abstain", max_attempts=3)
    assert retry.attempts == 3 and retry.decide(2.0, 1.0) is Action.ABSTAIN
    assert Policy().decide(math.inf, 1.0) is Action.FLAG  # an unscorable answer is never allowed
    assert retry.step(1) == RetryStep() and not retry.step(1).is_retry
    assert retry.step(2).seed != retry.step(3).seed and retry.step(2).generate_kwargs()["do_sample"] is True
    assert Policy(retry_strategy="feedback").step(2, "Paris").follow_up()[1]["role"] == "user"
    assert Policy(retry_strategy="feedback").step(2).feedback is None  # nothing to follow up on


def verdict(score: float, action: Action) -> Verdict:
    span = Span(0, 1, 0, 5, "Paris", "heuristic")
    attempt = Attempt("Paris", ("Paris",), scores(1), span, score, "greedy", prompt_tokens=4)
    return Verdict("Capital of France?", "Paris", action, 1.0, (attempt,), 0, "test")


def test_verdict_raise_for_hallucination_carries_the_evidence() -> None:
    ok = verdict(0.0, Action.ALLOW)
    assert ok.raise_for_hallucination() is ok and not ok.hallucinated
    bad = verdict(3.0, Action.FLAG)
    with pytest.raises(HallucinationDetected) as info:
        bad.raise_for_hallucination()
    assert info.value.verdict is bad and "3.000" in str(info.value)
    assert json.loads(json.dumps(bad.to_dict()))["action"] == "flag"
    assert verdict(math.inf, Action.FLAG).to_dict()["score"] is None


FP = ModelFingerprint(name="m", vocab_size=10, tokenizer_sha256="a" * 64)


def test_calibration_round_trip_and_scoring(tmp_path: Path) -> None:
    cal = Calibration(
        model=FP,
        features=(Feature(metric="logprob", pooling="mean", weight=-2.0, center=1.0, scale=2.0),),
        bias=0.5,
        threshold=0.0,
        goal="f1",
    )
    path = tmp_path / "c.json"
    cal.save(path)
    loaded = Calibration.load(path)
    assert loaded == cal
    s = scores()
    span = Span(0, 3, 0, 3, "abc", "whole")
    assert loaded.score(s, span) == pytest.approx(0.5 - 2.0 * (s.logprob.mean() - 1.0) / 2.0)
    assert "logprob[mean]" in loaded.describe()


def test_uncalibrated_default_is_the_papers_negated_min() -> None:
    cal = Calibration.uncalibrated()
    s = scores()
    span = Span(0, 3, 0, 3, "abc", "heuristic")
    assert cal.score(s, span) == pytest.approx(-s.spilled_energy.min())
    assert cal.model is None and cal.localizer == "heuristic"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{", "cannot read"),
        ('{"schema_version": 99}', "schema_version 99"),
        ("[1, 2]", "schema_version None"),
        ('{"schema_version": 2, "features": [], "threshold": 1}', "invalid calibration"),
        (
            '{"schema_version": 2, "features": [{"metric": "spilled_energy", "pooling": "min", "weight": -1}],'
            ' "threshold": 1, "localizer": "magic"}',
            "localizer",
        ),
        (
            '{"schema_version": 2, "features": [{"metric": "spilled_energy", "pooling": "min", "weight": -1}],'
            ' "threshold": 1, "extra": 1}',
            "extra",
        ),
    ],
)
def test_bad_calibration_files_fail_clearly(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(CalibrationError, match=match):
        Calibration.load(path)


def test_truncated_or_missing_calibration_file(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    Calibration.uncalibrated().save(good)
    truncated = tmp_path / "truncated.json"
    truncated.write_text(good.read_text()[:40])
    with pytest.raises(CalibrationError, match="cannot read"):
        Calibration.load(truncated)
    with pytest.raises(CalibrationError, match="cannot read"):
        Calibration.load(tmp_path / "missing.json")


def test_calibration_for_another_model_is_refused() -> None:
    cal = Calibration(model=FP, features=Calibration.uncalibrated().features, threshold=0.0)
    cal.check_model(FP)
    other = FP.model_copy(update={"vocab_size": 11})
    with pytest.raises(CalibrationError, match="fitted for model 'm'.*spillguard calibrate"):
        cal.check_model(other)
