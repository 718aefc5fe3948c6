"""Capture on a tiny in-memory Llama: raw logits, alignment, padding, warpers, errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from guardrail.capture import answer_lengths, generate_with_scores, score_teacher_forced
from guardrail.errors import InvalidInputError, ModelError, NonFiniteLogitsError
from tests.conftest import build_tiny_model

EOS, PAD = 1, 0


def prompts(tokenizer: Any, texts: list[str]) -> dict[str, torch.Tensor]:
    return dict(tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False))


def run(model: Any, enc: dict[str, torch.Tensor], **kwargs: Any) -> list[Any]:
    kwargs.setdefault("max_new_tokens", 6)
    kwargs.setdefault("do_sample", False)
    rows, _ = generate_with_scores(
        model, enc["input_ids"], enc["attention_mask"], eos_token_ids=[EOS], pad_token_id=PAD, **kwargs
    )
    return rows


def forced(model: Any, enc: dict[str, torch.Tensor], row: int, answer: np.ndarray) -> Any:
    prompt = enc["input_ids"][row][enc["attention_mask"][row].bool()]
    return score_teacher_forced(model, prompt, torch.tensor(answer))


def assert_same(a: Any, b: Any, atol: float = 1e-4) -> None:
    np.testing.assert_array_equal(a.token_ids, b.token_ids)
    for name in ("chosen_logit", "log_partition", "next_log_partition", "entropy"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=atol, err_msg=name)


def test_generate_equals_teacher_forced_including_the_extra_last_step(tiny_model: Any, tiny_tokenizer: Any) -> None:
    enc = prompts(tiny_tokenizer, ["what is the capital of france ?"])
    (row,) = run(tiny_model, enc, max_new_tokens=8, min_new_tokens=8)
    assert len(row) == 8  # truncated: the last token's next step came from one extra forward
    assert_same(row, forced(tiny_model, enc, 0, row.token_ids))


@pytest.mark.parametrize(
    "sampling",
    [
        dict(do_sample=True, temperature=0.3, top_k=3),
        dict(do_sample=True, temperature=2.0, top_p=0.5, repetition_penalty=1.8),
        dict(do_sample=False, repetition_penalty=3.0, no_repeat_ngram_size=1),
    ],
)
def test_logits_processors_do_not_change_the_energies_of_chosen_tokens(
    tiny_model: Any, tiny_tokenizer: Any, sampling: dict[str, Any]
) -> None:
    enc = prompts(tiny_tokenizer, ["what is the capital of france ?"])
    torch.manual_seed(3)
    (row,) = run(tiny_model, enc, max_new_tokens=7, min_new_tokens=7, **sampling)
    assert_same(row, forced(tiny_model, enc, 0, row.token_ids))


def test_left_padding_never_enters_a_score(tiny_model: Any, tiny_tokenizer: Any) -> None:
    texts = ["paris", "what is the capital of france ?", "rome is a city"]
    batch = prompts(tiny_tokenizer, texts)
    assert (batch["attention_mask"] == 0).any()
    rows = run(tiny_model, batch, max_new_tokens=6, min_new_tokens=6)
    for i, text in enumerate(texts):
        (alone,) = run(tiny_model, prompts(tiny_tokenizer, [text]), max_new_tokens=6, min_new_tokens=6)
        assert_same(rows[i], alone, atol=1e-4)
        assert_same(rows[i], forced(tiny_model, batch, i, rows[i].token_ids))


def test_eos_and_padding_after_it_are_cut(tiny_tokenizer: Any) -> None:
    model = build_tiny_model()
    with torch.no_grad():  # make EOS very likely after two steps: bias the LM head
        model.lm_head.weight[EOS] *= 0
    enc = prompts(tiny_tokenizer, ["paris", "what is the capital of france ?"])
    generated = torch.tensor([[5, EOS, PAD, PAD], [5, 6, 7, 8]])
    assert answer_lengths(generated, [EOS], PAD).tolist() == [1, 4]
    assert answer_lengths(torch.tensor([[5, 6, PAD, PAD]]), [EOS], PAD).tolist() == [2]  # stop string
    assert answer_lengths(torch.tensor([[EOS, EOS]]), [EOS], EOS).tolist() == [0]
    rows = run(model, enc, max_new_tokens=5)
    for i, row in enumerate(rows):
        assert EOS not in row.token_ids.tolist()
        if len(row):
            assert_same(row, forced(model, enc, i, row.token_ids))


def test_capture_does_not_modify_the_logits_generate_sees(tiny_model: Any, tiny_tokenizer: Any) -> None:
    enc = prompts(tiny_tokenizer, ["what is the capital of france ?"])
    plain = tiny_model.generate(
        **enc,
        max_new_tokens=5,
        min_new_tokens=5,
        do_sample=False,
        pad_token_id=PAD,
        return_dict_in_generate=True,
        output_logits=True,
    )
    rows, generated = generate_with_scores(
        tiny_model,
        enc["input_ids"],
        enc["attention_mask"],
        eos_token_ids=[EOS],
        pad_token_id=PAD,
        max_new_tokens=5,
        min_new_tokens=5,
        do_sample=False,
        output_logits=True,
    )
    assert torch.equal(generated, plain.sequences[:, enc["input_ids"].shape[1] :])
    raw = torch.stack(plain.logits, 1)[0]  # (steps, vocab)
    np.testing.assert_allclose(
        rows[0].chosen_logit, raw.gather(-1, generated[0].unsqueeze(-1)).squeeze(-1).numpy(), atol=1e-6
    )
    np.testing.assert_allclose(rows[0].log_partition, torch.logsumexp(raw, -1).numpy(), atol=1e-5)
    assert not tiny_model._forward_hooks  # the hook is removed afterwards


def test_on_step_reports_each_token_one_step_late(tiny_model: Any, tiny_tokenizer: Any) -> None:
    enc = prompts(tiny_tokenizer, ["what is the capital of france ?"])
    steps: list[Any] = []
    (row,) = run(tiny_model, enc, max_new_tokens=5, min_new_tokens=5, on_step=steps.append)
    assert [s.index for s in steps] == list(range(4))  # the last token has no following step
    for s in steps:
        assert s.token_id == row.token_ids[s.index]
        assert s.spilled_energy == pytest.approx(row.spilled_energy[s.index], abs=1e-4)
    with pytest.raises(InvalidInputError, match="batch of 1"):
        run(tiny_model, prompts(tiny_tokenizer, ["a", "b"]), on_step=steps.append)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(num_beams=2), "`num_beams`=2 is not supported"),
        (dict(prompt_lookup_num_tokens=3), "prompt_lookup_num_tokens"),
    ],
)
def test_unsupported_decoding_is_refused(
    tiny_model: Any, tiny_tokenizer: Any, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        run(tiny_model, prompts(tiny_tokenizer, ["paris"]), **kwargs)


def test_nan_logits_are_reported_never_scored(tiny_tokenizer: Any) -> None:
    model = build_tiny_model()
    with torch.no_grad():
        model.lm_head.weight[7] = float("nan")
    with pytest.raises(NonFiniteLogitsError, match="NaN or inf"):
        run(model, prompts(tiny_tokenizer, ["paris"]), max_new_tokens=3, min_new_tokens=3)
    with pytest.raises(NonFiniteLogitsError):
        score_teacher_forced(model, torch.tensor([5, 6]), torch.tensor([7, 8]))


def test_a_model_without_logits_is_refused(tiny_tokenizer: Any) -> None:
    body = build_tiny_model().model  # LlamaModel: hidden states, no LM head
    with pytest.raises(ModelError, match="no `logits`"):
        score_teacher_forced(body, torch.tensor([5]), torch.tensor([6]))


def test_teacher_forced_input_validation(tiny_model: Any) -> None:
    with pytest.raises(InvalidInputError, match="`prompt_ids`"):
        score_teacher_forced(tiny_model, torch.tensor([], dtype=torch.long), torch.tensor([5]))
    with pytest.raises(InvalidInputError, match="`answer_ids`"):
        score_teacher_forced(tiny_model, torch.tensor([5]), torch.tensor([[5]]))


def test_capture_keeps_o1_numbers_per_step_never_a_vocab_row_per_step(
    tiny_model: Any, tiny_tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import guardrail.capture as capture

    made: list[Any] = []

    class Spy(capture._RawLogitRecorder):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(capture, "_RawLogitRecorder", Spy)
    enc = prompts(tiny_tokenizer, ["paris", "what is the capital of france ?"])
    run(tiny_model, enc, max_new_tokens=9, min_new_tokens=9)
    (recorder,) = made
    per_step = [*recorder.log_partition, *recorder.entropy, *recorder.chosen_logit]
    assert len(per_step) == 3 * 9 - 1  # the last chosen logit is gathered after generate returns
    assert all(t.shape == (2,) for t in per_step)
    assert recorder.previous is not None and recorder.previous.shape == (2, tiny_model.config.vocab_size)
