"""End to end on the real bundled model (SmolLM2-135M-Instruct): invariants, localizers, the example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from guardrail import Guard, Verdict
from guardrail.capture import generate_with_scores, score_teacher_forced

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = ["What is the capital of Australia?", "Who wrote Moby-Dick?", "What is 17 times 23?"]


def chat(tokenizer: Any, question: str) -> str:
    messages = [{"role": "user", "content": question}]
    return str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))


@pytest.mark.parametrize(
    "decoding",
    [
        dict(do_sample=False, max_new_tokens=40),
        dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.3, max_new_tokens=12),
        dict(do_sample=False, max_new_tokens=30, stop_strings=["."]),
    ],
)
def test_generate_pass_equals_teacher_forced_pass(bundled: tuple[Any, Any], decoding: dict[str, Any]) -> None:
    """ΔE from generate() == ΔE from a forward pass over the same text (fp32, 1e-3); docs/concepts.md."""
    model, tokenizer = bundled
    enc = tokenizer(
        [chat(tokenizer, q) for q in QUESTIONS],
        return_tensors="pt",
        padding=True,
        padding_side="left",
        add_special_tokens=False,
    )
    if "stop_strings" in decoding:
        decoding = {**decoding, "tokenizer": tokenizer}
    torch.manual_seed(0)
    rows, _ = generate_with_scores(
        model, enc["input_ids"], enc["attention_mask"], eos_token_ids=[2], pad_token_id=2, **decoding
    )
    if "stop_strings" in decoding:  # an answer that stopped early ends at its first period
        texts = [tokenizer.decode(r.token_ids) for r in rows]
        assert all(t.count(".") <= 1 for t in texts)
        assert all(t.endswith(".") for t, r in zip(texts, rows, strict=True) if len(r) < 30)
        assert sum(len(r) < 30 for r in rows) >= 2
    for i, row in enumerate(rows):
        assert len(row) > 3
        prompt = enc["input_ids"][i][enc["attention_mask"][i].bool()]
        forced = score_teacher_forced(model, prompt, torch.tensor(row.token_ids))
        assert np.abs(forced.spilled_energy - row.spilled_energy).max() <= 1e-3
        assert np.abs(forced.logprob - row.logprob).max() <= 1e-3


def test_wrong_answers_score_higher_than_right_ones(real_guard: Guard) -> None:
    right = real_guard.ask("What is the capital of Japan?", max_new_tokens=16)
    wrong = real_guard.ask("What is the capital of Honduras?", max_new_tokens=16)
    assert "Tokyo" in right.answer and "Tegucigalpa" not in wrong.answer
    assert isinstance(right, Verdict) and wrong.score > right.score


def test_answers_do_not_depend_on_the_batch_size(real_guard: Guard) -> None:
    """`spillguard evaluate` batches 32 questions by default (faster on CPU than 16): the same
    prompts padded among other company give the same greedy answers and scores."""
    questions = [
        "What is the capital of Japan?",
        "Who wrote the play Romeo and Juliet?",
        "What is the chemical symbol for gold?",
        "What is the capital of the state of Vermont?",
        "How many legs does a spider have?",
        "What is the capital of Kyrgyzstan?",
    ]
    alone = real_guard.ask_batch(questions, batch_size=1, max_new_tokens=12)
    together = real_guard.ask_batch(questions, batch_size=len(questions), max_new_tokens=12)
    assert [v.answer for v in together] == [v.answer for v in alone]
    assert max(abs(a.score - b.score) for a, b in zip(alone, together, strict=True)) <= 1e-3


def test_llm_extraction_localizer_runs_on_the_real_model(real_guard: Guard) -> None:
    guard = Guard(real_guard.model, real_guard.tokenizer, localizer="llm", name=real_guard.fingerprint.name)
    verdict = guard.ask("What is the capital of Japan?", max_new_tokens=16)
    assert verdict.span.source.startswith(("llm", "heuristic")) and verdict.span.stop > verdict.span.start


def test_quickstart_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "abstaining guard returns" in result.stdout and "raised on request" in result.stdout


def test_check_on_a_long_prompt_keeps_only_the_scored_logit_rows(real_guard: Guard) -> None:
    """A RAG-sized prompt: the LM head computes n + 1 rows, not one per prompt position (the
    memory this saves is measured by ``python -m tests.core.measure memory``, docs/models.md)."""
    shapes: list[tuple[int, ...]] = []
    head = real_guard.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda module, args, out: shapes.append(tuple(out.shape)))
    try:
        context = "The harbour town keeps its old lighthouse, its ferry and a market by the sea. " * 40
        verdict = real_guard.check(context + "When does the ferry leave?", "The ferry leaves at noon.")
    finally:
        handle.remove()
    assert verdict.best.prompt_tokens > 600
    assert shapes == [(1, len(verdict.scores) + 1, head.weight.shape[0])]
