"""The runtime commands (``demo``, ``ask``, ``score``, ``bench``) end to end on the bundled model."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from guardrail.cli import main

pytestmark = pytest.mark.integration


def chat(tokenizer: Any, question: str) -> str:
    messages = [{"role": "user", "content": question}]
    return str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))


def test_score_json_matches_an_independent_teacher_forced_computation(
    bundled: tuple[Any, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    model, tokenizer = bundled
    prompt, answer = "What is the capital of Australia?", "The capital of Australia is Sydney."
    assert main(["check", "--prompt", prompt, "--answer", answer, "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    out = verdict["attempts"][verdict["chosen"]]
    prompt_ids = tokenizer(chat(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + answer_ids])).logits[0].double()
    p = len(prompt_ids)
    expected = [
        (torch.logsumexp(logits[i], 0) - logits[i - 1, tok]).item() for i, tok in enumerate(answer_ids, start=p)
    ]
    expected_lp = [torch.log_softmax(logits[i - 1], 0)[tok].item() for i, tok in enumerate(answer_ids, start=p)]
    assert out["token_ids"] == answer_ids
    assert "".join(out["tokens"]) == answer
    np.testing.assert_allclose(out["spilled_energy"], expected, atol=1e-3)
    np.testing.assert_allclose(out["logprob"], expected_lp, atol=1e-3)
    np.testing.assert_allclose(
        out["logit_energy"], [-logits[i - 1, t].item() for i, t in enumerate(answer_ids, start=p)], atol=1e-3
    )
    span = out["span"]
    assert span["text"] == "Sydney" and out["score"] is not None and verdict["action"] in ("allow", "flag")


def test_demo_shows_answers_scores_and_verdicts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert out.count("verdict: score") == 10 and "⟦" in out and "scored span" in out
    assert "-> FLAG" in out and "-> ALLOW" in out and "model is WRONG" in out


def test_ask_json_and_bad_input_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "What is the capital of Japan?", "--json", "--max-new-tokens", "16"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert "Tokyo" in verdict["answer"] and verdict["action"] in ("allow", "flag")
    assert len(verdict["attempts"][0]["spilled_energy"]) == len(verdict["attempts"][0]["tokens"])
    assert main(["ask", "   "]) == 2
    assert "`question` must contain a non-space character" in capsys.readouterr().err


def test_bench_runs_guarded_and_plain(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--config", "2x4", "--repeats", "1", "--json", "--reference"]) == 0
    result = json.loads(capsys.readouterr().out)
    (config,) = result["configs"]
    assert config["batch"] == 2 and config["ratio_guarded_vs_plain"] > 0
    assert config["capture_bytes_kept"] < config["output_logits_bytes"]
