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


# -- non-finite and out-of-range numbers never load, never allow (issue 11, item 1) ---------------

BAD_NUMBERS = [math.nan, -math.inf, math.inf, 1e400, -1e10, 1e10]
FEATURE = {"metric": "spilled_energy", "pooling": "min", "weight": -1.0}


@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("field", ["weight", "center", "scale"])
def test_feature_numbers_must_be_finite_and_bounded(field: str, value: float) -> None:
    with pytest.raises(CalibrationError, match=f"(?s)invalid Feature.*{field}"):
        Feature(**{**FEATURE, field: value})


@pytest.mark.parametrize("scale", [5e-324, 1e-10, 0.0, -1.0])
def test_a_vanishing_scale_is_refused(scale: float) -> None:
    with pytest.raises(CalibrationError, match="scale"):
        Feature(**{**FEATURE, "scale": scale})


@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("field", ["bias", "threshold"])
def test_calibration_numbers_must_be_finite_and_bounded_on_every_path(field: str, value: float) -> None:
    good = Calibration.uncalibrated()
    data = {**good.model_dump(), field: value}
    for build in (
        lambda: Calibration(**data),
        lambda: Calibration.model_validate(data),
        lambda: good.model_copy(update={field: value}),
        lambda: good.model_copy(update={field: value}, deep=True),
    ):
        with pytest.raises(CalibrationError, match=field):
            build()
    if field == "threshold":
        with pytest.raises(CalibrationError, match="threshold"):
            Calibration.uncalibrated(value)


@pytest.mark.parametrize("literal", ["NaN", "-Infinity", "Infinity", "1e400", "-1e400"])
@pytest.mark.parametrize("field", ["weight", "center", "scale", "bias", "threshold"])
def test_calibration_files_with_non_finite_numbers_do_not_load(tmp_path: Path, field: str, literal: str) -> None:
    feature = {**FEATURE, "center": 0.0, "scale": 1.0}
    body = {"schema_version": 2, "features": [feature], "bias": 0.0, "threshold": 1.0}
    text = json.dumps(body)
    key = f'"{field}": '
    start = text.index(key) + len(key)
    end = min(i for i in (text.find(",", start), text.find("}", start)) if i > 0)
    path = tmp_path / "bad.json"
    path.write_text(text[:start] + literal + text[end:])
    with pytest.raises(CalibrationError, match=field):
        Calibration.load(path)
    with pytest.raises(CalibrationError, match=field):
        Calibration.model_validate_json(path.read_text())


def test_a_denormal_scale_in_a_file_does_not_load(tmp_path: Path) -> None:
    path = tmp_path / "denormal.json"
    body = {"schema_version": 2, "features": [{**FEATURE, "scale": 5e-324}], "threshold": 1.0}
    path.write_text(json.dumps(body))
    with pytest.raises(CalibrationError, match="scale"):
        Calibration.load(path)


def test_model_validate_json_with_a_nan_threshold_is_refused() -> None:
    text = Calibration.uncalibrated().model_dump_json().replace('"threshold":1.0', '"threshold":NaN')
    assert "NaN" in text
    with pytest.raises(CalibrationError, match="threshold"):
        Calibration.model_validate_json(text)


def test_only_a_small_regular_file_is_read(tmp_path: Path) -> None:
    import os
    import threading

    with pytest.raises(CalibrationError, match="not a regular file"):
        Calibration.load("/dev/zero")  # would fill memory if read
    fifo = tmp_path / "calibration.fifo"
    os.mkfifo(fifo)
    done = threading.Event()

    def load() -> None:
        with pytest.raises(CalibrationError, match="not a regular file"):
            Calibration.load(fifo)  # would block forever waiting for a writer
        done.set()

    threading.Thread(target=load, daemon=True).start()
    assert done.wait(10)
    big = tmp_path / "big.json"
    big.write_text(" " * (2 << 20) + "{}")
    with pytest.raises(CalibrationError, match="larger than 1048576 bytes"):
        Calibration.load(big)
    with pytest.raises(CalibrationError, match="not a regular file"):
        Calibration.load(tmp_path)


def test_deeply_nested_json_is_a_calibration_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(CalibrationError, match="cannot read"):
        Calibration.load(path)
    path.write_text('{"schema_version": ' + "9" * 5000 + "}")  # bug: a raw ValueError (int conversion limit)
    with pytest.raises(CalibrationError, match="cannot read"):
        Calibration.load(path)
    nested = '{"schema_version": 2, "features": ' + "[" * 100_000 + "]" * 100_000 + ', "threshold": 1}'
    with pytest.raises(CalibrationError):
        Calibration.model_validate_json(nested)


def test_a_hundred_thousand_features_are_refused_quickly(tmp_path: Path) -> None:
    features = [{**FEATURE, "center": 0.0, "scale": 1.0}] * 100_000
    with pytest.raises(CalibrationError, match="at most 64"):
        Calibration(features=features, threshold=1.0)
    path = tmp_path / "wide.json"
    path.write_text(json.dumps({"schema_version": 2, "features": features, "threshold": 1.0}))
    with pytest.raises(CalibrationError, match="larger than"):
        Calibration.load(path)
    compact = tmp_path / "compact.json"
    compact.write_text(json.dumps({"schema_version": 2, "features": features[:65], "threshold": 1.0}))
    with pytest.raises(CalibrationError, match="at most 64"):
        Calibration.load(compact)


def test_a_version_1_file_asks_for_recalibration(tmp_path: Path) -> None:
    path = tmp_path / "v1.json"
    body = {"schema_version": 1, "model": {"name": "m", "vocab_size": 10, "tokenizer_sha256": "a" * 64}}
    path.write_text(json.dumps({**body, "features": [FEATURE], "threshold": 1.0}))
    with pytest.raises(CalibrationError, match="schema_version 1.*weights.*re-run `spillguard calibrate`"):
        Calibration.load(path)
    path.write_text(json.dumps({**body, "schema_version": 2, "features": [FEATURE], "threshold": 1.0}))
    with pytest.raises(CalibrationError, match="no `weights_sha256`"):
        Calibration.load(path)


NON_FINITE = [math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("bad", NON_FINITE)
def test_a_non_finite_score_or_threshold_never_allows(bad: float) -> None:
    """Policy, attempt loop, verdict and evidence all refuse to allow a non-finite number."""
    from guardrail import AttemptLoop, Evidence, Judged

    for policy in (Policy(), Policy(on_hallucination="abstain"), Policy(on_hallucination="retry")):
        assert policy.decide(bad, 1.0) is not Action.ALLOW
        assert policy.decide(0.0, bad) is not Action.ALLOW
    assert Policy().decide(1.0, 1.0) is Action.ALLOW  # at the threshold passes
    loop: AttemptLoop[str] = AttemptLoop(Policy(on_hallucination="retry", max_attempts=3))
    while (step := loop.next_step()) is not None:
        loop.record(Judged("a", "a", bad, 1.0, step))
    decision = loop.decide()
    assert len(decision.attempts) == 3 and decision.action is Action.FLAG
    assert not Judged("a", "a", 0.0, bad, RetryStep()).passed
    with pytest.raises(InvalidInputError, match="cannot allow an answer whose score"):
        verdict(bad, Action.ALLOW)
    flagged = verdict(bad, Action.FLAG)
    assert flagged.hallucinated
    data = flagged.to_dict(per_token=False)
    assert Evidence.from_dict(data).hallucinated
    forged = Evidence.from_dict({**data, "action": "allow", "score": bad if math.isinf(bad) else None})
    assert forged.hallucinated and not forged.sealed  # an "allow" with an unusable score is still flagged
    assert forged.flagged_by() and forged.flagged_by(1e9)


@pytest.mark.parametrize(
    ("field", "bad"),
    [("score", 10**400), ("threshold", 10**400), ("score", np.float32(0.5)), ("score", True), ("threshold", None)],
)
def test_evidence_with_a_number_json_cannot_hold_is_unscored(field: str, bad: object) -> None:
    """Bug: an int too large for a float escaped as OverflowError, a numpy float32 as TypeError (from the seal)."""
    from guardrail import Evidence, UnscoredResponseError

    data = {**verdict(0.5, Action.ALLOW).to_dict(per_token=False), field: bad}
    with pytest.raises(UnscoredResponseError, match="metadata is malformed"):
        Evidence.from_dict(data)


def test_a_non_finite_calibrated_score_is_an_error_not_a_number() -> None:
    from guardrail.errors import CaptureError

    cal = Calibration(features=(Feature(**{**FEATURE, "weight": 1e9, "scale": 1e-9}),), threshold=0.0)
    s = TokenScores(np.arange(1), np.array([-1e300]), np.zeros(1), np.array([1e300]), np.zeros(1))
    with pytest.raises(CaptureError, match="calibrated score is inf"):
        cal.score(s, Span(0, 1, 0, 1, "a", "whole"))


# -- the retry bound (issue 11, item 3) -----------------------------------------------------------


def test_retries_are_bounded_and_the_kept_attempt_is_defensible() -> None:
    from guardrail import AttemptLoop, Judged
    from guardrail.policy import MAX_ATTEMPTS

    assert MAX_ATTEMPTS == 5
    with pytest.raises(InvalidInputError, match=r"`max_attempts` must be an int in \[1, 5\], got 6"):
        Policy(on_hallucination="retry", max_attempts=6)
    with pytest.raises(InvalidInputError, match="`max_attempts`"):
        Policy(on_hallucination="retry", max_attempts=20)
    scores = {1: 3.0, 2: 0.5, 3: 2.0, 4: 0.9, 5: 0.1}
    for threshold, chosen, made in [(1.0, 1, 2), (0.05, 4, 5), (0.3, 4, 5)]:
        loop: AttemptLoop[int] = AttemptLoop(Policy(on_hallucination="retry", max_attempts=MAX_ATTEMPTS))
        while (step := loop.next_step()) is not None:
            loop.record(Judged(step.attempt, str(step.attempt), scores[step.attempt], threshold, step))
        decision = loop.decide()
        assert len(decision.attempts) == made  # stops at the first passing attempt
        assert decision.chosen == chosen  # that one, else the lowest score
    docs = (Path(__file__).resolve().parents[2] / "docs" / "concepts.md").read_text(encoding="utf-8")
    assert f"at most {MAX_ATTEMPTS}" in docs
