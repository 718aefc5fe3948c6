"""The Guard on a tiny in-memory model: composition, policies, streaming, bad input."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from guardrail import (
    Action,
    Calibration,
    CalibrationError,
    ContextLengthError,
    Guard,
    HallucinationDetected,
    InvalidInputError,
    ModelError,
    Policy,
    TokenStep,
    Verdict,
)
from guardrail.calibration import ModelFingerprint
from guardrail.guard import SHORT_GIVEN_ANSWER
from tests.conftest import build_tiny_model

QUESTION = "what is the capital of france ?"


def guard(model: Any, tokenizer: Any, threshold: float = 1.0, **kwargs: Any) -> Guard:
    kwargs.setdefault("max_new_tokens", 5)
    return Guard(model, tokenizer, calibration=Calibration.uncalibrated(threshold), name="tiny", **kwargs)


def test_ask_returns_a_full_verdict(tiny_model: Any, tiny_tokenizer: Any) -> None:
    v = guard(tiny_model, tiny_tokenizer).ask(QUESTION, min_new_tokens=5)
    assert isinstance(v, Verdict) and len(v.attempts) == 1 and v.best.decoding == "greedy"
    assert len(v.scores) == len(v.best.tokens) == 5
    assert v.score == pytest.approx(-v.scores.spilled_energy[v.span.start : v.span.stop].min())
    assert v.action is (Action.FLAG if v.score > 1.0 else Action.ALLOW)
    assert v.text == v.answer and v.threshold == 1.0


def test_batch_equals_single_questions(tiny_model: Any, tiny_tokenizer: Any) -> None:
    g = guard(tiny_model, tiny_tokenizer)
    questions = [QUESTION, "paris ?", "is rome a city ?"]
    batch = g.ask_batch(questions, batch_size=2, min_new_tokens=5)
    for q, v in zip(questions, batch, strict=True):
        single = g.ask(q, min_new_tokens=5)
        assert single.answer == v.answer
        np.testing.assert_allclose(single.scores.spilled_energy, v.scores.spilled_energy, atol=1e-4)


def test_retry_keeps_the_lowest_scoring_attempt(tiny_model: Any, tiny_tokenizer: Any) -> None:
    policy = Policy(on_hallucination="retry", max_attempts=3, seed=1)
    v = guard(tiny_model, tiny_tokenizer, threshold=-1e9, policy=policy).ask(QUESTION, min_new_tokens=5)
    assert len(v.attempts) == 3
    assert [a.decoding for a in v.attempts] == [
        "greedy",
        "sample(temperature=0.8, seed=3)",
        "sample(temperature=0.8, seed=4)",
    ]
    assert v.score == min(a.score for a in v.attempts) and v.action is Action.FLAG
    again = guard(tiny_model, tiny_tokenizer, threshold=-1e9, policy=policy).ask(QUESTION, min_new_tokens=5)
    assert [a.answer for a in again.attempts] == [a.answer for a in v.attempts]  # seeded


def test_retry_stops_once_an_attempt_passes(tiny_model: Any, tiny_tokenizer: Any) -> None:
    policy = Policy(on_hallucination="retry", max_attempts=4)
    v = guard(tiny_model, tiny_tokenizer, threshold=1e9, policy=policy).ask(QUESTION)
    assert len(v.attempts) == 1 and v.action is Action.ALLOW


@pytest.mark.parametrize("raw", [False, True])
def test_feedback_reaches_the_model_as_a_follow_up_turn(tiny_model: Any, tiny_tokenizer: Any, raw: bool) -> None:
    policy = Policy(on_hallucination="retry", max_attempts=2, retry_strategy="feedback", feedback="i don't know ?")
    g = guard(tiny_model, tiny_tokenizer, threshold=-1e9, policy=policy)
    v = g.ask(QUESTION, raw=raw, min_new_tokens=3)
    assert v.attempts[1].decoding.endswith("+ feedback")
    step = policy.step(2, v.attempts[0].answer)
    text = g.render(QUESTION, raw=raw, step=step)
    first = g.render(QUESTION, raw=raw)
    assert text.startswith(first if raw else first.removesuffix("assistant: "))
    assert v.attempts[0].answer.strip() in text and "i don't know ?" in text
    assert text.endswith("\n\n" if raw else "assistant: ")
    assert v.attempts[1].prompt_tokens == len(tiny_tokenizer(text)["input_ids"])  # attempt 2 was fed exactly this


def test_abstain_returns_the_abstention_and_keeps_the_evidence(tiny_model: Any, tiny_tokenizer: Any) -> None:
    policy = Policy(on_hallucination="abstain", abstain_text="no idea")
    v = guard(tiny_model, tiny_tokenizer, threshold=-1e9, policy=policy).ask(QUESTION)
    assert v.action is Action.ABSTAIN and v.text == "no idea" and v.answer != "no idea"
    with pytest.raises(HallucinationDetected) as info:
        v.raise_for_hallucination()
    assert info.value.verdict is v


def test_stream_yields_text_then_steps_then_the_verdict(tiny_model: Any, tiny_tokenizer: Any) -> None:
    g = guard(tiny_model, tiny_tokenizer)
    events = list(g.stream(QUESTION, min_new_tokens=5))
    verdict = events[-1]
    assert isinstance(verdict, Verdict)
    text = "".join(e for e in events if isinstance(e, str))
    steps = [e for e in events if isinstance(e, TokenStep)]
    assert text.strip() == verdict.answer.strip()
    assert [s.index for s in steps] == list(range(len(verdict.scores)))
    np.testing.assert_allclose([s.spilled_energy for s in steps], verdict.scores.spilled_energy, atol=1e-4)
    assert verdict.answer == g.ask(QUESTION, min_new_tokens=5).answer


def test_generation_stops_at_the_tokenizers_eos_too() -> None:
    """Bug: the answer is scored up to the first EOS of the tokenizer or the generation config,
    but generation stopped only at the config's, so a stream showed text after the tokenizer's
    EOS that no score covered ('city user what' streamed, 'city' scored and allowed)."""
    from tests.core import zoo

    tokenizer = zoo.word_tokenizer()
    model = zoo.build("llama")
    plain = Guard(model, tokenizer, max_new_tokens=4).ask("is rome a city ?").answer
    assert plain.split()[:2] == ["city", "of"]  # the tiny model writes "of" second
    tokenizer.eos_token = "of"  # an EOS the model's generation config does not list
    guard = Guard(model, tokenizer, max_new_tokens=4)
    events = list(guard.stream("is rome a city ?"))
    verdict = events[-1]
    assert isinstance(verdict, Verdict)
    assert "".join(e for e in events if isinstance(e, str)) == verdict.answer == "city"
    assert guard.ask("is rome a city ?").answer == "city"


@pytest.mark.parametrize("policy", [Policy("abstain", abstain_text="?"), Policy("retry", max_attempts=2)])
def test_a_stream_never_shows_text_the_policy_replaces(tiny_model: Any, tiny_tokenizer: Any, policy: Policy) -> None:
    """Regression: the answer streamed live, then the verdict said "abstain" — a reader (an
    agent, a chat UI) kept the streamed hallucination. Now the decided text is what streams."""
    g = guard(tiny_model, tiny_tokenizer, threshold=-1e9, policy=policy)  # every answer is flagged
    events = list(g.stream(QUESTION, min_new_tokens=5))
    verdict = events[-1]
    assert isinstance(verdict, Verdict) and verdict.hallucinated
    assert [e for e in events if isinstance(e, str)] == [verdict.text]  # one piece, the decided text
    assert len(verdict.attempts) == policy.attempts  # judged first: retries included
    if policy.on_hallucination == "abstain":
        assert verdict.text == "?"


def test_a_stream_under_a_caller_step_is_live(tiny_model: Any, tiny_tokenizer: Any) -> None:
    g = guard(tiny_model, tiny_tokenizer, threshold=-1e9, policy=Policy("abstain", abstain_text="?"))
    events = list(g.stream(QUESTION, min_new_tokens=5, step=g.policy.step(1)))
    assert len([e for e in events if isinstance(e, str)]) > 1  # token by token: the caller decides


def test_an_astream_never_shows_text_the_policy_replaces(tiny_model: Any, tiny_tokenizer: Any) -> None:
    import asyncio

    g = guard(tiny_model, tiny_tokenizer, threshold=-1e9, policy=Policy("abstain", abstain_text="?"))

    async def collect() -> list[Any]:
        return [e async for e in g.astream(QUESTION, min_new_tokens=5)]

    events = asyncio.run(collect())
    assert [e for e in events if isinstance(e, str)] == ["?"] and isinstance(events[-1], Verdict)


def test_closing_a_stream_stops_generation(tiny_model: Any, tiny_tokenizer: Any) -> None:
    g = guard(tiny_model, tiny_tokenizer, max_new_tokens=60)
    stream = g.stream(QUESTION, min_new_tokens=60)
    first = next(stream)
    assert isinstance(first, str)
    stream.close()  # joins the worker; must not hang or raise


def test_check_scores_a_given_answer_with_an_explicit_span(tiny_model: Any, tiny_tokenizer: Any) -> None:
    g = guard(tiny_model, tiny_tokenizer)
    v = g.check(QUESTION, "the capital is paris .", span="paris")
    assert v.span.text == "paris" and v.best.decoding == "given"
    assert v.score == pytest.approx(-v.scores.spilled_energy[v.span.start : v.span.stop].min())
    raw = g.check(QUESTION, " paris", raw=True)
    assert raw.answer.strip() == "paris"


def test_messages_are_accepted_and_validated(tiny_model: Any, tiny_tokenizer: Any) -> None:
    g = guard(tiny_model, tiny_tokenizer, system_prompt="answer .")
    messages = [
        {"role": "user", "content": "rome ?"},
        {"role": "assistant", "content": "a city"},
        {"role": "user", "content": QUESTION},
    ]
    prompt = g._prompt(messages)
    assert prompt.question == QUESTION and prompt.text.startswith("system: answer .")
    assert isinstance(g.ask(messages), Verdict)
    with pytest.raises(InvalidInputError, match="message 0"):
        g.ask([{"role": "user"}])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="`raw=True` needs a string"):
        g.ask(messages, raw=True)


@pytest.mark.parametrize(
    ("question", "match"),
    [
        ("", "`question` must contain a non-space character"),
        ("   \n", "`question` must contain a non-space character"),
        (42, "`question` must be a str"),
        (None, "`question` must be a str"),
        ([], "`question` must be a str or a non-empty list"),
    ],
)
def test_bad_questions_are_refused(tiny_model: Any, tiny_tokenizer: Any, question: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        guard(tiny_model, tiny_tokenizer).ask(question)


def test_bad_batches_and_answers_are_refused(tiny_model: Any, tiny_tokenizer: Any) -> None:
    g = guard(tiny_model, tiny_tokenizer)
    with pytest.raises(InvalidInputError, match="`questions`"):
        g.ask_batch("paris ?")
    with pytest.raises(InvalidInputError, match="`batch_size`"):
        g.ask_batch([QUESTION], batch_size=0)
    with pytest.raises(InvalidInputError, match="`answer`"):
        g.check(QUESTION, " ")
    with pytest.raises(InvalidInputError, match="`max_new_tokens`"):
        guard(tiny_model, tiny_tokenizer, max_new_tokens=0)
    with pytest.raises(InvalidInputError, match="`localizer`.*'magic'"):
        guard(tiny_model, tiny_tokenizer, localizer="magic")


def test_prompt_longer_than_the_context_is_refused(tiny_model: Any, tiny_tokenizer: Any) -> None:
    long_question = " ".join(["paris"] * 126)  # the tiny model's context is 128 tokens
    with pytest.raises(ContextLengthError, match="exceeds the model's context of 128"):
        guard(tiny_model, tiny_tokenizer).ask(long_question)
    with pytest.raises(ContextLengthError):
        guard(tiny_model, tiny_tokenizer).check(long_question, "rome " * 10)


def test_models_that_cannot_be_scored_are_refused(tiny_tokenizer: Any) -> None:
    with pytest.raises(ModelError, match="causal LM with `generate`"):
        Guard(build_tiny_model().model, tiny_tokenizer)
    small = build_tiny_model(vocab_size=10)
    with pytest.raises(ModelError, match="tokenizer has 28 tokens but the model's LM head has 10 rows"):
        Guard(small, tiny_tokenizer)
    with pytest.raises(ModelError, match="`tokenizer`"):
        Guard(build_tiny_model(), object())


def test_a_calibration_for_another_model_is_refused(tiny_model: Any, tiny_tokenizer: Any) -> None:
    other = ModelFingerprint(name="tiny", vocab_size=99, tokenizer_sha256="0" * 64)
    cal = Calibration(model=other, features=Calibration.uncalibrated().features, threshold=0.0)
    with pytest.raises(CalibrationError, match="fitted for model 'tiny'"):
        Guard(tiny_model, tiny_tokenizer, calibration=cal, name="tiny")
    mine = guard(tiny_model, tiny_tokenizer).fingerprint
    Guard(tiny_model, tiny_tokenizer, calibration=cal.model_copy(update={"model": mine}), name="tiny")


def test_an_empty_answer_is_never_allowed(tiny_tokenizer: Any) -> None:
    model = build_tiny_model()

    def eos_first(module: Any, args: Any, output: Any) -> None:
        output.logits[..., 1] = 100.0  # the model's own logits say: stop at once

    model.register_forward_hook(eos_first)
    v = guard(model, tiny_tokenizer).ask(QUESTION)
    assert v.answer == "" and v.score == math.inf and v.action is Action.FLAG
    assert "empty answer" in v.span.source


def test_user_seed_makes_sampling_reproducible(tiny_model: Any, tiny_tokenizer: Any) -> None:
    g = guard(tiny_model, tiny_tokenizer, max_new_tokens=8)
    a = g.ask(QUESTION, do_sample=True, temperature=1.5, seed=7, min_new_tokens=8)
    b = g.ask(QUESTION, do_sample=True, temperature=1.5, seed=7, min_new_tokens=8)
    assert a.answer == b.answer and a.best.decoding == "sample(temperature=1.5)"
    streamed = list(g.stream(QUESTION, do_sample=True, temperature=1.5, seed=7, min_new_tokens=8))[-1]
    assert isinstance(streamed, Verdict) and streamed.answer == a.answer
    assert a.best.prompt_tokens == len(tiny_tokenizer(g._prompt(QUESTION).text)["input_ids"])


def test_concurrent_threads_on_one_model_never_mix_scores(tiny_model: Any, tiny_tokenizer: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    g = guard(tiny_model, tiny_tokenizer, max_new_tokens=6)
    questions = [QUESTION, "paris ?", "is rome a city ?", "what is a country ?"] * 2
    alone = {q: g.ask(q, min_new_tokens=6) for q in questions}
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda q: g.ask(q, min_new_tokens=6), questions))
    for q, v in zip(questions, together, strict=True):
        np.testing.assert_allclose(v.scores.spilled_energy, alone[q].scores.spilled_energy, atol=1e-4)


def test_with_policy_shares_everything_but_the_policy(tiny_model: Any, tiny_tokenizer: Any) -> None:
    g = guard(tiny_model, tiny_tokenizer, threshold=-1e9)
    careful = g.with_policy(Policy(on_hallucination="abstain", abstain_text="no idea"))
    assert careful.model is g.model and careful.calibration is g.calibration and g.policy == Policy()
    assert careful.ask(QUESTION).text == "no idea" and g.ask(QUESTION).action is Action.FLAG
    with pytest.raises(InvalidInputError, match="`policy` must be a guardrail.Policy"):
        g.with_policy("abstain")  # type: ignore[arg-type]


def test_a_short_given_answer_says_its_span_is_too_short_to_judge(tiny_guard: Any) -> None:
    """``check(question, "Canberra.")`` used to flag right and wrong capitals alike with no word of
    why: the span is the answer's first tokens, scored mostly by their position."""
    short = tiny_guard.check(QUESTION, "paris .")
    assert short.span.start == 0
    assert short.notes == (SHORT_GIVEN_ANSWER,)
    assert short.to_dict(per_token=False)["notes"] == [SHORT_GIVEN_ANSWER]
    assert "too short to judge" in short.notes[0]
    sentence = tiny_guard.check(QUESTION, "the capital is paris .", span="paris")
    assert sentence.notes == ()
    assert sentence.to_dict()["attempts"][0]["notes"] == []
    generated = tiny_guard.ask(QUESTION)
    assert generated.notes == ()
