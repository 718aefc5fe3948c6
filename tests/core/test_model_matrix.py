"""The model matrix: every entry point on tiny random-weight models of many architectures.

For each family of :mod:`tests.core.zoo` (built in memory, float32): ``ask`` greedy and
sampled, ``ask_batch`` with left padding, ``stream`` and ``check``, each compared with one
teacher-forced forward pass over the same text (the generate = teacher-forced invariant of
docs/concepts.md, to 1e-4). Answers are forced to ``max_new_tokens``, so the last token's extra
forward step over the returned cache is exercised everywhere. docs/models.md lists the families.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from guardrail import Calibration, Guard, TokenStep, Verdict
from guardrail.capture import NO_LEFT_PADDING, generate_with_scores, score_teacher_forced
from guardrail.errors import ModelError
from tests.core import zoo

TOLERANCE = 1e-4  # fp32; docs/models.md
NEW = 4
QUESTIONS = ["what is the capital of france ? is it paris or rome or berlin ?", "paris ?", "is rome a city ?"]


def assert_same(a: Any, b: Any, atol: float = TOLERANCE) -> None:
    assert a.token_ids.tolist() == b.token_ids.tolist()
    for name in ("chosen_logit", "log_partition", "next_log_partition", "entropy"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=atol, rtol=0, err_msg=name)


def forced(guard: Guard, question: str, verdict: Verdict) -> Any:
    """Teacher-forced scores of the verdict's answer tokens after the prompt the guard fed."""
    prompt = torch.tensor(guard.prompt_ids(question), dtype=torch.long)
    return score_teacher_forced(guard.model, prompt, torch.tensor(verdict.scores.token_ids))


@pytest.fixture(scope="module")
def word_tokenizers() -> dict[bool, Any]:
    return {True: zoo.word_tokenizer(), False: zoo.word_tokenizer(pad=False)}


@pytest.mark.parametrize("name", sorted(zoo.FAMILIES))
def test_every_entry_point_equals_teacher_forcing(name: str, word_tokenizers: dict[bool, Any]) -> None:
    family = zoo.FAMILIES[name]
    model = zoo.build(name)
    tokenizer = word_tokenizers[family.pad_token]
    guard = Guard(model, tokenizer, calibration=Calibration.uncalibrated(), name=name, max_new_tokens=NEW)
    assert (tokenizer.pad_token is None) is (not family.pad_token)

    solo = [guard.ask(q, min_new_tokens=NEW) for q in QUESTIONS]
    for q, v in zip(QUESTIONS, solo, strict=True):
        assert len(v.scores) == NEW and v.best.decoding == "greedy"
        assert_same(v.scores, forced(guard, q, v))

    sampled = guard.ask(QUESTIONS[0], do_sample=True, temperature=1.3, top_k=5, seed=2, min_new_tokens=NEW)
    assert_same(sampled.scores, forced(guard, QUESTIONS[0], sampled))

    for v, b in zip(solo, guard.ask_batch(QUESTIONS, batch_size=3, min_new_tokens=NEW), strict=True):
        assert_same(b.scores, v.scores)

    events = list(guard.stream(QUESTIONS[1], min_new_tokens=NEW))
    streamed = events[-1]
    assert isinstance(streamed, Verdict) and streamed.answer == solo[1].answer
    steps = [e for e in events if isinstance(e, TokenStep)]
    np.testing.assert_allclose([s.spilled_energy for s in steps], solo[1].scores.spilled_energy, atol=TOLERANCE)

    checked = guard.check(QUESTIONS[1], solo[1].answer)
    assert_same(checked.scores, solo[1].scores)
    assert checked.score == pytest.approx(solo[1].score, abs=TOLERANCE)


def test_families_that_ignore_left_padding_are_the_listed_ones() -> None:
    """Left padding changes the scores of exactly the families in NO_LEFT_PADDING; the capture
    refuses a padded batch for them (the guard batches only prompts of one length there)."""
    tokenizer = zoo.word_tokenizer()
    texts = ["what is the capital of france ? is it paris or rome ?", "paris ?"]
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    for name, family in sorted(zoo.FAMILIES.items()):
        model = zoo.build(name)
        assert (model.config.model_type not in NO_LEFT_PADDING) is family.pads_left, name
        short = enc["input_ids"][1][enc["attention_mask"][1].bool()].unsqueeze(0)
        alone = _raw_logits(model, short, torch.ones_like(short))[0]
        padded = _raw_logits(model, enc["input_ids"], enc["attention_mask"])[1]
        honoured = alone.shape == padded.shape and bool(torch.allclose(alone, padded, atol=TOLERANCE))
        assert honoured is family.pads_left, f"{name}: left padding {'is' if honoured else 'is not'} honoured"
        if not family.pads_left:
            with pytest.raises(ModelError, match="does not honour left padding"):
                generate_with_scores(
                    model, enc["input_ids"], enc["attention_mask"], eos_token_ids=[zoo.EOS], pad_token_id=zoo.PAD,
                    max_new_tokens=2,
                )  # fmt: skip


def _raw_logits(model: Any, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(batch, steps, vocab)`` raw logits of two greedy steps (plain ``generate``, no capture)."""
    out = model.generate(
        input_ids=input_ids, attention_mask=mask, max_new_tokens=2, min_new_tokens=2, do_sample=False,
        pad_token_id=zoo.PAD, output_logits=True, return_dict_in_generate=True,
    )  # fmt: skip
    return torch.stack(out.logits, dim=1)


def test_a_gpt2_tokenizer_without_a_pad_token() -> None:
    """A byte-level BPE tokenizer with no pad token (GPT-2, Llama-3 and Mistral tokenizers have
    none): the guard pads its batches with EOS and never asks the tokenizer to pad."""
    tokenizer = zoo.byte_level_tokenizer()
    assert tokenizer.pad_token is None and tokenizer.chat_template is None
    model = zoo.tiny_gpt2(len(tokenizer))
    guard = Guard(model, tokenizer, calibration=Calibration.uncalibrated(), name="gpt2", max_new_tokens=6)
    prompts = ["What is the capital of France?", "Rome is", "A city and a country: Berlin, Paris, or"]
    solo = [guard.ask(p, min_new_tokens=6) for p in prompts]
    for p, v in zip(prompts, solo, strict=True):
        assert_same(v.scores, forced(guard, p, v))
    for v, b in zip(solo, guard.ask_batch(prompts, batch_size=3, min_new_tokens=6), strict=True):
        assert_same(b.scores, v.scores)
    streamed = list(guard.stream(prompts[0], min_new_tokens=6))
    assert isinstance(streamed[-1], Verdict) and streamed[-1].answer == solo[0].answer
    assert "".join(e for e in streamed if isinstance(e, str)) == solo[0].answer
    assert tokenizer.pad_token is None  # nothing was set on the user's tokenizer


def test_the_context_window_is_read_where_each_family_keeps_it(word_tokenizers: dict[bool, Any]) -> None:
    """Gemma-3 multimodal wrappers keep it in ``text_config``; MPT calls it ``max_seq_len``."""
    from guardrail import ContextLengthError

    tokenizer = word_tokenizers[True]
    wrapper = zoo.build("gemma3_multimodal")
    assert not hasattr(wrapper.config, "max_position_embeddings")
    wrapper.config.text_config.max_position_embeddings = 40
    mpt = zoo.build("mpt")
    mpt.config.max_seq_len = 40
    for model in (wrapper, mpt):
        guard = Guard(model, tokenizer, calibration=Calibration.uncalibrated(), name="m", max_new_tokens=8)
        guard.ask("paris ?")  # fits
        with pytest.raises(ContextLengthError, match=r"prompt of \d+ tokens \+ 8 new tokens exceeds .* of 40 tokens"):
            guard.ask(" ".join(["paris"] * 30))
        with pytest.raises(ContextLengthError, match=r"\+ 30 answer tokens .* shorten the question or the answer"):
            guard.check(" ".join(["paris"] * 10), " ".join(["rome"] * 30))
