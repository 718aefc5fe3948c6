"""Decoding arguments: every bad one is a typed error before any work; modes that cannot be
captured are refused wherever they are set; caches and NaN logits never give a silent score."""

from __future__ import annotations

import socket
from typing import Any

import numpy as np
import pytest
import torch
from transformers import GenerationConfig

from guardrail import Calibration, CaptureError, Guard, InvalidInputError, ModelError, NonFiniteLogitsError, Policy
from guardrail.capture import generate_with_scores, score_teacher_forced
from guardrail.policy import MAX_SEED
from tests.conftest import build_tiny_model
from tests.core import zoo

QUESTION = "what is the capital of france ?"


def guard(model: Any, tokenizer: Any, **kwargs: Any) -> Guard:
    kwargs.setdefault("max_new_tokens", 4)
    return Guard(model, tokenizer, calibration=Calibration.uncalibrated(), name="tiny", **kwargs)


class Forwards:
    """Counts forward passes of a model (a hook that only counts)."""

    def __init__(self, model: Any) -> None:
        self.count = 0
        self.handle = model.register_forward_hook(self._seen)

    def _seen(self, *_: Any) -> None:
        self.count += 1


@pytest.fixture
def no_network_no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any socket, hub download or remote-code load fails the test loudly."""
    import huggingface_hub
    import transformers.dynamic_module_utils as dynamic

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network or code loading attempted: {args!r} {kwargs!r}")

    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", forbidden)
    monkeypatch.setattr(dynamic, "get_cached_module_file", forbidden)
    monkeypatch.setattr(dynamic, "get_class_in_module", forbidden)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (dict(max_new_tokens=0), r"`max_new_tokens` must be an int >= 1, got 0"),
        (dict(max_new_tokens=-1), r"`max_new_tokens` must be an int >= 1, got -1"),
        (dict(max_new_tokens="5"), r"`max_new_tokens` must be an int, got str: '5'"),
        (dict(max_new_tokens=None), r"`max_new_tokens` must be an int, got NoneType"),
        (dict(max_new_tokens=2.5), r"`max_new_tokens` must be an int, got float: 2.5"),
        (dict(max_new_tokens=True), r"`max_new_tokens` must be an int, got bool"),
        (dict(min_new_tokens=5, max_new_tokens=3), r"`min_new_tokens`=5 exceeds `max_new_tokens`=3"),
        (dict(temprature=0.5), r"unsupported decoding option\(s\) \['temprature'\]"),
        (dict(pad_token_id=3), r"\['pad_token_id'\]"),
        (dict(input_ids=torch.tensor([[1]])), r"\['input_ids'\]"),
        (dict(stopping_criteria=[]), r"\['stopping_criteria'\]"),
        (dict(streamer=object()), r"\['streamer'\]"),
        (dict(return_dict_in_generate=False), r"\['return_dict_in_generate'\]"),
        (dict(generation_config=GenerationConfig(num_beams=2)), r"\['generation_config'\]"),
        (dict(num_return_sequences=2), r"\['num_return_sequences'\]"),
        (dict(num_beams=2), r"\['num_beams'\]"),
        (dict(custom_generate="someone/repo", trust_remote_code=True), r"\['custom_generate', 'trust_remote_code'\]"),
        (dict(penalty_alpha=0.6, top_k=4), r"\['penalty_alpha'\]"),
        (dict(dola_layers="high"), r"\['dola_layers'\]"),
        (dict(do_sample=True, temperature=0), r"`temperature` must be a finite positive number, got 0"),
        (dict(do_sample=True, temperature=-1), r"`temperature` must be a finite positive number, got -1"),
        (dict(do_sample=True, temperature=float("nan")), r"`temperature` must be a finite positive number, got nan"),
        (dict(do_sample="yes"), r"`do_sample` must be a bool"),
        (dict(top_p=1.5), r"`top_p` must be in \(0, 1\]"),
        (dict(top_k=-1), r"`top_k` must be an int >= 0"),
        (dict(stop_strings=[]), r"`stop_strings` must be a str or a non-empty list"),
        (dict(stop_strings=["\ud800"]), r"`stop_strings` is not valid text"),
        (dict(seed=-1), r"`seed` must be an int in \[0, 9223372036854775807\], got -1"),
        (dict(seed=2**64), r"`seed` must be an int in"),
        (dict(seed="7"), r"`seed` must be an int, got str"),
        (dict(seed=1.0), r"`seed` must be an int, got float"),
    ],
)
def test_bad_decoding_options_are_refused_before_any_work(
    tiny_model: Any, tiny_tokenizer: Any, options: dict[str, Any], match: str, no_network_no_loading: None
) -> None:
    g = guard(tiny_model, tiny_tokenizer)
    counter = Forwards(tiny_model)
    try:
        for call in (
            lambda: g.ask(QUESTION, **options),
            lambda: g.ask_batch([QUESTION, "paris ?"], **options),
            lambda: next(g.stream(QUESTION, **options)),
        ):
            with pytest.raises(InvalidInputError, match=match):
                call()
    finally:
        counter.handle.remove()
    assert counter.count == 0


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("num_beams", 2),
        ("num_beam_groups", 2),
        ("num_return_sequences", 2),
        ("penalty_alpha", 0.6),
        ("dola_layers", "high"),
        ("prompt_lookup_num_tokens", 3),
        ("assistant_early_exit", 1),
        ("guidance_scale", 1.5),
        ("prefill_chunk_size", 4),
        ("custom_generate", "someone/repo"),
        ("trust_remote_code", True),
        ("cache_implementation", "paged"),
    ],
)
def test_modes_in_the_models_own_generation_config_are_refused(
    tiny_tokenizer: Any, setting: str, value: object, no_network_no_loading: None
) -> None:
    """Refused at construction (the config is the model's) and again per call if set later."""
    model = build_tiny_model()
    setattr(model.generation_config, setting, value)
    with pytest.raises(InvalidInputError, match=f"`{setting}`"):
        guard(model, tiny_tokenizer)
    setattr(model.generation_config, setting, None)
    g = guard(model, tiny_tokenizer)
    setattr(model.generation_config, setting, value)
    counter = Forwards(model)
    with pytest.raises(InvalidInputError, match=f"`{setting}`.*(model|continuous)"):
        g.ask(QUESTION)
    assert counter.count == 0
    assert getattr(model.generation_config, setting) == value  # the model's own config is never changed


def test_a_setting_generate_itself_refuses_is_a_capture_error(tiny_tokenizer: Any) -> None:
    """Bug: only RuntimeError was wrapped; ``generate``'s own ValueError (here: a banned word
    outside the vocabulary in the model's generation config) escaped raw."""
    model = build_tiny_model()
    g = guard(model, tiny_tokenizer)
    model.generation_config.bad_words_ids = [[10_000]]
    try:
        with pytest.raises(CaptureError, match="generation failed: ValueError"):
            g.ask(QUESTION)
    finally:
        model.generation_config.bad_words_ids = None


def test_beam_search_passed_at_the_capture_level_is_refused(tiny_model: Any, tiny_tokenizer: Any) -> None:
    ids = torch.tensor([tiny_tokenizer("paris ?")["input_ids"]])
    for kwargs, match in [
        (dict(num_beams=2), "`num_beams`=2"),
        (dict(generation_config=GenerationConfig(num_beams=2)), "generation_config"),
        (dict(num_return_sequences=3), "`num_return_sequences`=3"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(do_sample=True, temperature=0.0, max_new_tokens=2), "`temperature` must be a finite positive number"),
    ]:
        with pytest.raises(InvalidInputError, match=match):
            generate_with_scores(tiny_model, ids, torch.ones_like(ids), eos_token_ids=[1], pad_token_id=0, **kwargs)


def test_a_replaced_generate_method_is_refused(tiny_tokenizer: Any) -> None:
    """What ``from_pretrained(..., trust_remote_code=True)`` does with a repo's custom_generate."""
    model = build_tiny_model()
    model.generate = lambda *a, **k: None
    with pytest.raises(ModelError, match="`model.generate` of LlamaForCausalLM was replaced"):
        guard(model, tiny_tokenizer)


def test_the_guard_never_warns_about_mixing_generation_config_and_kwargs(
    tiny_model: Any, tiny_tokenizer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    guard(tiny_model, tiny_tokenizer).ask(QUESTION, do_sample=True, temperature=0.7, seed=1)
    assert "deprecated" not in caplog.text


def test_a_policy_seed_is_bounded_so_every_retry_seed_is_valid(tiny_model: Any, tiny_tokenizer: Any) -> None:
    """Retry k samples with seed + k: a seed that torch accepts for attempt 1 but not for attempt 2
    is refused when the policy is made, not in the middle of a retry."""
    with pytest.raises(InvalidInputError, match=r"`seed` must be an int in \[0, 9223372036854775802\]"):
        Policy(on_hallucination="retry", seed=MAX_SEED + 1)
    with pytest.raises(InvalidInputError, match="`seed` must be an int"):
        Policy(seed=-1)
    never = Guard(
        tiny_model,
        tiny_tokenizer,
        calibration=Calibration.uncalibrated(-1e9),
        policy=Policy(on_hallucination="retry", max_attempts=5, seed=MAX_SEED),
        max_new_tokens=2,
    )
    seeds = [a.decoding for a in never.ask(QUESTION).attempts[1:]]
    assert seeds == [f"sample(temperature=0.8, seed={MAX_SEED + k})" for k in range(2, 6)]


def test_nan_logits_while_sampling_are_a_non_finite_logits_error(tiny_tokenizer: Any) -> None:
    """torch's multinomial fails on NaN probabilities; the capture reports the raw logits instead."""
    model = build_tiny_model()

    def poison(module: Any, args: Any, output: Any) -> None:
        output.logits[..., 5] = float("nan")

    model.register_forward_hook(poison)
    g = guard(model, tiny_tokenizer)
    for options in (dict(do_sample=True, temperature=0.9, seed=0), dict(do_sample=True, top_k=3, seed=1), {}):
        with pytest.raises(NonFiniteLogitsError, match="NaN or inf"):
            g.ask(QUESTION, **options)
    with pytest.raises(NonFiniteLogitsError):
        list(g.stream(QUESTION, do_sample=True, seed=0))
    with pytest.raises(NonFiniteLogitsError):
        g.check(QUESTION, "paris")


def test_inf_logits_while_sampling_are_a_non_finite_logits_error(tiny_tokenizer: Any) -> None:
    model = build_tiny_model()

    def infinite(module: Any, args: Any, output: Any) -> None:
        output.logits[..., 6] = float("inf")

    model.register_forward_hook(infinite)
    with pytest.raises(NonFiniteLogitsError):
        guard(model, tiny_tokenizer).ask(QUESTION, do_sample=True, seed=0)


@pytest.mark.parametrize("where", ["generation_config", "call"])
def test_a_static_cache_scores_like_teacher_forcing(tiny_tokenizer: Any, where: str) -> None:
    """The extra last step cannot extend a static cache (no room past max_new_tokens): it is
    recomputed without it, for answers cut by max_new_tokens and by stop strings, solo and batched."""
    model = build_tiny_model()
    kwargs: dict[str, Any] = dict(max_new_tokens=6, min_new_tokens=6)
    if where == "generation_config":
        model.generation_config.cache_implementation = "static"
    else:
        kwargs["cache_implementation"] = "static"
    enc = tiny_tokenizer([QUESTION, "paris ?"], return_tensors="pt", padding=True, padding_side="left")
    rows, _ = generate_with_scores(
        model, enc["input_ids"], enc["attention_mask"], eos_token_ids=[1], pad_token_id=0, do_sample=False, **kwargs
    )
    for i, row in enumerate(rows):
        assert len(row) == 6
        prompt = enc["input_ids"][i][enc["attention_mask"][i].bool()]
        forced = score_teacher_forced(model, prompt, torch.tensor(row.token_ids))
        np.testing.assert_allclose(row.next_log_partition, forced.next_log_partition, atol=1e-4)
        np.testing.assert_allclose(row.spilled_energy, forced.spilled_energy, atol=1e-4)


def test_a_static_cache_with_stop_strings_on_a_byte_level_tokenizer() -> None:
    tokenizer = zoo.byte_level_tokenizer()
    model = zoo.tiny_gpt2(len(tokenizer))
    model.generation_config.cache_implementation = "static"
    g = guard(model, tokenizer, max_new_tokens=12)
    prompts = ["what is the capital of france ?", "rome is"]
    for stop in (["."], [" a", "e"], ["is"]):
        verdicts = g.ask_batch(prompts, raw=True, stop_strings=stop, min_new_tokens=1)
        for prompt, v in zip(prompts, verdicts, strict=True):
            prompt_ids = torch.tensor(g.prompt_ids(prompt, raw=True))
            forced = score_teacher_forced(model, prompt_ids, torch.tensor(v.scores.token_ids))
            np.testing.assert_allclose(v.scores.spilled_energy, forced.spilled_energy, atol=1e-4)


def test_stop_strings_a_tokenizer_cannot_match_are_an_invalid_input_error(tiny_model: Any, tiny_tokenizer: Any) -> None:
    """transformers' stop-string matcher needs a tokenizer that can spell arbitrary text."""
    counter = Forwards(tiny_model)
    with pytest.raises(InvalidInputError, match=r"`stop_strings`=\['\.'\] cannot be matched with this tokenizer"):
        guard(tiny_model, tiny_tokenizer).ask(QUESTION, stop_strings=["."])
    counter.handle.remove()
    assert counter.count == 0


def test_no_prompt_wide_logits_are_computed(tiny_tokenizer: Any) -> None:
    """check() keeps n + 1 rows of the LM head; generate and the extra step keep one row per step."""
    model = build_tiny_model()
    model.config.max_position_embeddings = 4096
    shapes: list[tuple[int, ...]] = []
    model.lm_head.register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape)))
    g = guard(model, tiny_tokenizer, max_new_tokens=4)
    question = " ".join(["paris rome berlin"] * 300)  # 900 words
    answer = "the capital is paris ."
    v = g.check(question, answer)
    assert shapes == [(1, len(v.scores) + 1, model.config.vocab_size)]
    for cache in (None, "static"):  # the extra step over the cache, or recomputed without it
        model.generation_config.cache_implementation = cache
        shapes.clear()
        g.ask(question, min_new_tokens=4)
        assert len(shapes) == 5 and all(s[1] == 1 for s in shapes), shapes
