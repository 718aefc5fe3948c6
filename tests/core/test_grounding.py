"""Grounding: the span looked up in the prompt, as a calibration feature and in the guard."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guardrail import Calibration, CalibrationError, Guard, InvalidInputError, Policy
from guardrail.calibration import GROUNDING_VETO, Feature, ModelFingerprint
from guardrail.grounding import WHOLE_SPAN_NOTE, prompt_sources, ungrounded
from guardrail.localize import Span

PASSAGE = "Sudan is a country in Northern Africa. Its capital is Khartoum. St Peter-Port is in Guernsey."


@pytest.mark.parametrize(
    ("span", "expected"),
    [
        ("Khartoum", 0.0),
        ("KHARTOUM", 0.0),  # case
        ("St. Peter Port", 0.0),  # punctuation and spacing
        ("capital is Khartoum", 0.0),
        ("Omdurman", 1.0),
        ("Peter Port Guernsey", 1.0),  # the words are there, not as one run
        ("Khartoum Sudan", 1.0),  # order matters
        ("Khart", 1.0),  # a whole word, not a prefix
        ("...", 1.0),  # no word at all: never grounded
        ("", 1.0),
    ],
)
def test_a_span_is_grounded_when_its_words_are_a_run_of_the_prompt(span: str, expected: float) -> None:
    assert ungrounded(span, PASSAGE) == expected


def test_compatibility_forms_and_case_folding_match() -> None:
    assert ungrounded("Straße", "in der STRASSE") == 0.0  # casefold
    assert ungrounded("ﬁve", "five") == 0.0  # NFKC ligature


def test_scripts_without_spaces_are_looked_up_as_substrings() -> None:
    """One \\w+ run there is a whole phrase (bug: "東京" was never found in "日本の首都は東京です。")."""
    assert ungrounded("東京", "日本の首都は東京です。") == 0.0
    assert ungrounded("大阪", "日本の首都は東京です。") == 1.0
    assert ungrounded("กรุงเทพ", "เมืองหลวงคือกรุงเทพมหานคร") == 0.0


@pytest.mark.parametrize(
    ("span", "sources", "expected"),
    [
        ("5 million", "about 2.5 million people", 1.0),  # bug: the decimal point split "2.5" into "2", "5"
        ("2.5 million", "about 2.5 million people", 0.0),
        ("3.50 euros", "3, 50 euros", 1.0),
        ("1000", "1,000 people", 0.0),  # thousands separators
        ("1,000", "1000 people", 0.0),
        ("ไข่", "ไข้", 1.0),  # bug: Thai tone marks were dropped (egg vs fever)
        ("ไข่", "กินไข่", 0.0),
        ("सोना", "सुना", 1.0),  # bug: Devanagari vowel signs were dropped
        ("दीन", "यह दीन है", 0.0),
        ("5人", "共有15人", 1.0),  # bug: a substring inside a number
        ("5人", "共有5人", 0.0),
        ("5 คน", "15 คน", 1.0),
        ("Ann 李", "Joann 李", 1.0),  # bug: a substring inside a Latin word
        ("Ann 李", "Jo Ann 李", 0.0),
        ("40 degrees", "-40 degrees", 0.0),  # the sign is not compared: the localizers leave it out
    ],
)
def test_numbers_combining_marks_and_word_edges(span: str, sources: str, expected: float) -> None:
    assert ungrounded(span, sources) == expected


def test_bad_types_are_typed_errors() -> None:
    for bad in (None, 5, [1], b"x"):
        with pytest.raises(InvalidInputError):
            prompt_sources(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="`sources` must be a str"):
            ungrounded("Paris", bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="`span` must be a str"):
        ungrounded(None, "Paris")  # type: ignore[arg-type]


_word = st.text(alphabet="abcdefgXYZ0123", min_size=1, max_size=6)


@given(
    st.lists(_word, min_size=1, max_size=12),
    st.data(),
    st.sampled_from([" ", "  ", ", ", "-", ". ", "\n"]),
)
def test_every_run_of_the_sources_words_is_grounded(words: list[str], data: Any, sep: str) -> None:
    start = data.draw(st.integers(0, len(words) - 1))
    stop = data.draw(st.integers(start + 1, len(words)))
    assert ungrounded(sep.join(words[start:stop]), " ".join(words)) == 0.0


@given(st.text(max_size=30), st.text(max_size=60))
def test_ungrounded_is_zero_or_one(span: str, sources: str) -> None:
    assert ungrounded(span, sources) in (0.0, 1.0)


def test_prompt_sources_are_the_raw_prompt_or_the_non_assistant_messages() -> None:
    assert prompt_sources("raw text") == "raw text"
    messages = [
        {"role": "system", "content": "Context: Paris."},
        {"role": "user", "content": "Capital?"},
        {"role": "assistant", "content": "Rome."},  # the model's own earlier answer grounds nothing
        {"role": "tool", "content": "Lyon"},
    ]
    assert prompt_sources(messages) == "Context: Paris.\nCapital?\nLyon"


# -- the calibration feature ----------------------------------------------------------------


def test_the_grounding_feature_takes_max_pooling_only() -> None:
    with pytest.raises(CalibrationError, match="`pooling` of the span-level metric 'ungrounded' must be 'max'"):
        Feature(metric="ungrounded", pooling="min", weight=1.0)
    assert Feature(metric="ungrounded", pooling="max", weight=1.0).describe() == "+1·ungrounded[max]"


def test_with_grounding_adds_the_veto_and_says_so() -> None:
    base = Calibration.bundled("default")
    grounded = base.with_grounding()
    assert not base.grounded and grounded.grounded and not grounded.can_ground
    assert grounded.features[:-1] == base.features and grounded.threshold == base.threshold
    assert grounded.features[-1] == Feature(metric="ungrounded", pooling="max", weight=GROUNDING_VETO)
    assert grounded.report is not None and grounded.report.selection is not None
    assert grounded.report.selection.endswith("then +10·ungrounded[max] added (not fitted)")
    with pytest.raises(CalibrationError, match="already has a grounding feature"):
        grounded.with_grounding()
    for weight in (0, -10.0, float("nan"), True):
        with pytest.raises(CalibrationError, match="`weight` must be a positive number"):
            base.with_grounding(weight)
    whole = base.model_copy(update={"localizer": "whole"})
    assert not whole.can_ground
    with pytest.raises(CalibrationError, match="scores the whole answer"):
        whole.with_grounding()


def test_the_bundled_rag_calibration_is_the_default_with_grounding() -> None:
    assert Calibration.bundled("rag") == Calibration.bundled("default").with_grounding()


def test_a_grounded_calibration_needs_the_prompt_text() -> None:
    from guardrail import TokenScores

    scores = TokenScores([5, 6], [2.0, 3.0], [2.5, 3.5], [3.0, 1.0], [0.1, 0.2])
    span = Span(0, 2, 0, 8, "Khartoum", "explicit")
    calibration = Calibration.uncalibrated().with_grounding()
    with pytest.raises(InvalidInputError, match="needs the prompt's text"):
        calibration.score(scores, span)
    grounded = calibration.score(scores, span, PASSAGE)
    assert calibration.score(scores, span, "no such city here") == pytest.approx(grounded + GROUNDING_VETO)
    fallback = Span(0, 2, 0, 8, "Khartoum", "whole (heuristic: no content word)", whole=True)
    assert calibration.score(scores, fallback, "no such city here") == pytest.approx(grounded)  # not checked
    # Only the flag says "whole answer": a localizer whose name starts with "whole" is still checked.
    named = Span(0, 2, 0, 8, "Khartoum", "wholesome")
    assert calibration.score(scores, named, "no such city here") == pytest.approx(grounded + GROUNDING_VETO)


@pytest.mark.parametrize("weight", [0.0, -10.0])
def test_a_grounding_weight_that_would_let_ungrounded_answers_through_is_refused(weight: float) -> None:
    """Zero switches the check off and a negative weight inverts it: a file must not do either."""
    data = Calibration.uncalibrated().with_grounding().model_dump()
    data["features"][-1]["weight"] = weight
    with pytest.raises(CalibrationError, match="`weight` of 'ungrounded' must be positive"):
        Calibration.model_validate(data)
    with pytest.raises(CalibrationError, match="`weight` of 'ungrounded' must be positive"):
        Calibration.model_validate_json(json.dumps(data))


def test_a_grounding_feature_needs_a_localized_span_and_a_logit_feature_beside_it() -> None:
    """Either would score an answer the check cannot look up as 0, with nothing read from the model."""
    check = Feature(metric="ungrounded", pooling="max", weight=GROUNDING_VETO)
    logit = Feature(metric="logprob", pooling="mean", weight=-1)
    with pytest.raises(CalibrationError, match="a grounding feature needs a localized span"):
        Calibration(localizer="whole", features=(logit, check), threshold=1)
    with pytest.raises(CalibrationError, match="must hold a raw-logit metric beside the grounding one"):
        Calibration(features=(check,), threshold=1.0)
    with pytest.raises(CalibrationError, match="a grounding feature needs a localized span"):
        Calibration.uncalibrated().with_grounding().model_copy(update={"localizer": "whole"})


# -- in the guard ---------------------------------------------------------------------------


def _guard(model: Any, tokenizer: Any, calibration: Calibration) -> Guard:
    return Guard(model, tokenizer, calibration=calibration, name="tiny", max_new_tokens=4)


def test_the_guard_looks_the_span_up_in_the_prompt(tiny_model: Any, tiny_tokenizer: Any) -> None:
    plain = _guard(tiny_model, tiny_tokenizer, Calibration.uncalibrated(1.0))
    grounded = plain.with_calibration(plain.calibration.with_grounding())
    assert grounded.model is plain.model and grounded.policy is plain.policy and grounded.localizer is plain.localizer
    question = "what is the capital of france ?"
    with_context = [{"role": "system", "content": "paris is a city ."}, {"role": "user", "content": question}]
    base = plain.check(with_context, "paris .", span="paris").score
    assert grounded.check(with_context, "paris .", span="paris").score == pytest.approx(base)
    missing = grounded.check([{"role": "user", "content": question}], "paris .", span="paris")
    assert missing.score == pytest.approx(plain.check(question, "paris .", span="paris").score + GROUNDING_VETO)
    assert missing.hallucinated and "ungrounded" in missing.calibration
    assert missing.notes == ("ungrounded: 'paris' is not written in the prompt",)
    assert grounded.check(with_context, "paris .", span="paris").notes == ()
    assert grounded.check(" rome is a city .", " rome", raw=True, span="rome").score == pytest.approx(
        plain.check(" rome is a city .", " rome", raw=True, span="rome").score
    )  # a raw prompt is its own source


def test_with_calibration_validates_and_remakes_a_changed_localizer(tiny_model: Any, tiny_tokenizer: Any) -> None:
    g = _guard(tiny_model, tiny_tokenizer, Calibration.uncalibrated())
    with pytest.raises(InvalidInputError, match="`calibration` must be a guardrail.Calibration"):
        g.with_calibration("rag")  # type: ignore[arg-type]
    other = ModelFingerprint(name="other", vocab_size=3, tokenizer_sha256="0" * 64, weights_sha256="0" * 64)
    with pytest.raises(CalibrationError, match="fitted for model"):
        g.with_calibration(Calibration.uncalibrated().model_copy(update={"model": other}))
    whole = g.with_calibration(Calibration.uncalibrated().model_copy(update={"localizer": "whole"}))
    assert whole.localizer.name == "whole" and g.localizer.name == "heuristic"
    assert whole.with_grounding() is whole  # a whole-answer calibration cannot take the check
    grounded = g.with_grounding()
    assert grounded.calibration == g.calibration.with_grounding() and grounded.with_grounding() is grounded


def test_a_whole_answer_span_is_not_checked_and_says_so(tiny_model: Any, tiny_tokenizer: Any) -> None:
    grounded = _guard(tiny_model, tiny_tokenizer, Calibration.uncalibrated(1.0).with_grounding())
    whole = Guard(tiny_model, tiny_tokenizer, calibration=grounded.calibration, localizer="whole", name="tiny")
    plain = _guard(tiny_model, tiny_tokenizer, Calibration.uncalibrated(1.0))
    question = "what is the capital of france ?"
    verdict = whole.check(question, "rome is a city .")
    assert verdict.notes == (WHOLE_SPAN_NOTE,) and verdict.span.whole
    plain_whole = Guard(tiny_model, tiny_tokenizer, calibration=plain.calibration, localizer="whole", name="tiny")
    assert plain_whole.with_grounding() is plain_whole  # the guard's own localizer scores whole answers
    assert verdict.score == pytest.approx(plain_whole.check(question, "rome is a city .").score)


def test_a_feedback_retry_is_looked_up_in_the_original_prompt(tiny_model: Any, tiny_tokenizer: Any) -> None:
    """The retry prompt holds the previous answer; that must not ground the next one."""
    policy = Policy(on_hallucination="retry", max_attempts=5, retry_strategy="feedback", seed=3)
    question = [{"role": "system", "content": "paris is a city ."}, {"role": "user", "content": "what is a city ?"}]
    calibration = Calibration.uncalibrated(-1e9)
    plain = Guard(tiny_model, tiny_tokenizer, calibration=calibration, policy=policy, name="tiny", max_new_tokens=4)
    grounded = plain.with_calibration(calibration.with_grounding())
    a, b = plain.ask(question, min_new_tokens=4), grounded.ask(question, min_new_tokens=4)
    assert [x.answer for x in a.attempts] == [x.answer for x in b.attempts] and len(b.attempts) == 5
    sources = prompt_sources(question)
    repeated = 0
    for k, (x, y) in enumerate(zip(a.attempts, b.attempts, strict=True)):
        checked = not y.span.whole  # a whole-answer span is not checked
        assert y.score - x.score == pytest.approx(GROUNDING_VETO * checked * ungrounded(y.span.text, sources))
        earlier = " ".join(z.answer for z in b.attempts[:k])
        repeated += checked and bool(ungrounded(y.span.text, sources)) and not ungrounded(y.span.text, earlier)
    assert repeated  # some retry repeats an earlier answer's span, which its prompt held
