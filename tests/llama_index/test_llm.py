"""SpillguardLLM: LlamaIndex's LLM surface over a guard (tiny model; one real-model check)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse, LogProb, MessageRole

from guardrail import Action, Calibration, Guard, InvalidInputError, Policy, Verdict
from llama_index_spillguard import (
    METADATA_KEY,
    SpillguardEventHandler,
    SpillguardLLM,
    current_scope,
    query_scope,
)

QUESTION = "what is the capital of france ?"


@pytest.fixture(scope="module")
def llm(tiny_guard: Guard) -> SpillguardLLM:
    return SpillguardLLM(tiny_guard)


def _evidence(response: CompletionResponse | ChatResponse) -> dict[str, Any]:
    return response.additional_kwargs[METADATA_KEY]


def test_public_names() -> None:
    import llama_index_spillguard

    assert sorted(llama_index_spillguard.__all__) == sorted(
        [
            "METADATA_KEY", "RAG_ABSTAIN_TEXT", "CallRecord", "LLMCallRecord", "NoContextError", "NotGuardedError",
            "QueryRecord", "QueryScope", "SpillguardChatEngine", "SpillguardEvaluator", "SpillguardEventHandler",
            "SpillguardLLM", "SpillguardQueryEngine", "SpillguardQueryEvent", "SpillguardStreamingChatResponse",
            "UnscoredResponseError", "current_scope", "query_scope", "verdict_evidence", "verdict_logprobs",
        ]
    )  # fmt: skip
    for name in llama_index_spillguard.__all__:
        assert getattr(llama_index_spillguard, name) is not None


def test_metadata_describes_the_model(llm: SpillguardLLM, tiny_model: Any) -> None:
    meta = llm.metadata
    assert meta.context_window == tiny_model.config.max_position_embeddings
    assert meta.num_output == 4
    assert meta.is_chat_model is True
    assert meta.is_function_calling_model is False
    assert meta.model_name == llm.guard.fingerprint.name


def test_num_output_follows_generate_kwargs(tiny_guard: Guard) -> None:
    assert SpillguardLLM(tiny_guard, generate_kwargs={"max_new_tokens": 2}).metadata.num_output == 2


def test_complete_carries_verdict_logprobs_and_raw(llm: SpillguardLLM) -> None:
    response = llm.complete(QUESTION)
    verdict = response.raw
    assert isinstance(verdict, Verdict)
    assert response.text == verdict.text
    evidence = _evidence(response)
    assert evidence["action"] == verdict.action.value
    assert evidence["threshold"] == verdict.threshold
    assert evidence["query_id"] is None
    assert len(response.logprobs) == len(verdict.best.tokens) > 0
    assert all(isinstance(step[0], LogProb) and len(step) == 1 for step in response.logprobs)
    assert [s[0].logprob for s in response.logprobs] == pytest.approx(verdict.scores.logprob.tolist())
    assert "".join(s[0].token for s in response.logprobs) == verdict.answer


def test_chat_returns_an_assistant_message(llm: SpillguardLLM) -> None:
    response = llm.chat([ChatMessage(role=MessageRole.USER, content=QUESTION)])
    assert response.message.role == MessageRole.ASSISTANT
    assert response.message.content == response.raw.text
    assert _evidence(response)["answer"] == response.raw.answer


def test_chat_is_the_same_answer_as_complete(llm: SpillguardLLM) -> None:
    chat = llm.chat([ChatMessage(role="user", content=QUESTION)])
    assert chat.message.content == llm.complete(QUESTION).text


def test_stream_complete_deltas_add_up_and_last_chunk_has_verdict(llm: SpillguardLLM) -> None:
    chunks = list(llm.stream_complete(QUESTION))
    assert "".join(c.delta or "" for c in chunks) == chunks[-1].text
    assert chunks[-1].delta == ""
    assert _evidence(chunks[-1])["answer"] == chunks[-1].text == llm.complete(QUESTION).raw.answer
    assert all(METADATA_KEY not in c.additional_kwargs for c in chunks[:-1])


def test_stream_chat_yields_chat_responses(llm: SpillguardLLM) -> None:
    chunks = list(llm.stream_chat([ChatMessage(role="user", content=QUESTION)]))
    assert all(isinstance(c, ChatResponse) for c in chunks)
    assert isinstance(chunks[-1].raw, Verdict)
    assert chunks[-1].message.content == chunks[-1].raw.answer


def test_async_variants_match_sync(llm: SpillguardLLM) -> None:
    expected = llm.complete(QUESTION).text
    messages = [ChatMessage(role="user", content=QUESTION)]

    async def run() -> tuple[Any, ...]:
        done = await llm.acomplete(QUESTION)
        chat = await llm.achat(messages)
        streamed = [c async for c in await llm.astream_complete(QUESTION)]
        chat_streamed = [c async for c in await llm.astream_chat(messages)]
        return done, chat, streamed, chat_streamed

    done, chat, streamed, chat_streamed = asyncio.run(run())
    assert done.text == chat.message.content == streamed[-1].text == chat_streamed[-1].message.content == expected
    assert METADATA_KEY in streamed[-1].additional_kwargs and METADATA_KEY in chat_streamed[-1].additional_kwargs


def test_many_concurrent_async_streams_do_not_starve_the_executor(llm: SpillguardLLM) -> None:
    expected = llm.complete(QUESTION).text
    many = 12  # more than asyncio's default worker threads on a small machine

    async def one() -> str:
        return [c async for c in await llm.astream_complete(QUESTION)][-1].text

    async def run() -> list[str]:
        return await asyncio.wait_for(asyncio.gather(*(one() for _ in range(many))), timeout=120)

    assert asyncio.run(run()) == [expected] * many


def test_callbacks_emit_instrumentation_events(llm: SpillguardLLM, event_handler: SpillguardEventHandler) -> None:
    llm.complete(QUESTION)
    llm.chat([ChatMessage(role="user", content=QUESTION)])
    list(llm.stream_complete(QUESTION))
    assert len(event_handler.calls) == 3
    assert all(c.query_id is None and c.answer for c in event_handler.calls)


def test_guard_policy_applies_outside_an_engine(tiny_model: Any, tiny_tokenizer: Any) -> None:
    guard = Guard(
        tiny_model,
        tiny_tokenizer,
        max_new_tokens=4,
        calibration=Calibration.uncalibrated(threshold=-1e9),
        policy=Policy(on_hallucination="abstain", abstain_text="no idea"),
    )
    llm = SpillguardLLM(guard)
    response = llm.complete(QUESTION)
    assert response.text == "no idea"
    assert _evidence(response)["action"] == Action.ABSTAIN.value
    with query_scope(QUESTION) as scope:  # inside an engine the engine's policy decides
        inside = llm.complete(QUESTION)
    assert inside.text == response.raw.answer
    assert _evidence(inside)["action"] == Action.FLAG.value
    assert _evidence(inside)["query_id"] == scope.id


def test_scope_records_calls_and_forwards_to_parent(llm: SpillguardLLM) -> None:
    with query_scope("outer") as outer:
        llm.complete(QUESTION)
        with query_scope("inner") as inner:
            llm.chat([ChatMessage(role="user", content=QUESTION)])
        assert current_scope() is outer
    assert current_scope() is None
    assert [r.kind for r in outer.records] == ["complete", "chat"]
    assert [r.kind for r in inner.records] == ["chat"]
    assert inner.records[0].verdict.question == "inner"  # localized against the scope's query


def test_scopes_do_not_leak_across_threads(llm: SpillguardLLM) -> None:
    seen: list[Any] = []
    with query_scope("main") as scope:
        worker = threading.Thread(target=lambda: seen.append((current_scope(), llm.complete(QUESTION))))
        worker.start()
        worker.join()
    assert seen[0][0] is None
    assert scope.records == ()


def test_scope_reaches_async_workers(llm: SpillguardLLM) -> None:
    async def run() -> Any:
        with query_scope(QUESTION) as scope:
            await llm.acomplete(QUESTION)
            await asyncio.gather(llm.acomplete(QUESTION), llm.achat([ChatMessage(role="user", content=QUESTION)]))
        return scope

    assert len(asyncio.run(run()).records) == 3


def test_seeded_sampling_is_reproducible(llm: SpillguardLLM) -> None:
    first = llm.complete(QUESTION, do_sample=True, temperature=1.0, seed=7).text
    assert llm.complete(QUESTION, do_sample=True, temperature=1.0, seed=7).text == first


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"temprature": 0.5}, "temprature"), ({"raw": "yes"}, "`raw` must be a bool")],
)
def test_bad_call_options_are_named(llm: SpillguardLLM, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        llm.complete(QUESTION, **kwargs)


def test_empty_prompt_is_rejected(llm: SpillguardLLM) -> None:
    with pytest.raises(InvalidInputError, match="non-space"):
        llm.complete("   ")


def test_constructor_errors_name_the_argument(tiny_guard: Guard) -> None:
    with pytest.raises(InvalidInputError, match="`guard` must be a guardrail.Guard"):
        SpillguardLLM("not a guard")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="either `guard` or `model_path`"):
        SpillguardLLM(tiny_guard, model_path="/nowhere")
    with pytest.raises(InvalidInputError, match="unknown options \\['beams'\\]"):
        SpillguardLLM(tiny_guard, generate_kwargs={"beams": 2})


def test_from_pretrained_loads_a_local_model(tiny_model: Any, tiny_tokenizer: Any, tmp_path: Any) -> None:
    tiny_model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    llm = SpillguardLLM.from_pretrained(tmp_path, max_new_tokens=3)
    assert llm.metadata.num_output == 3
    response = llm.complete(QUESTION)
    assert (
        response.raw.answer
        == SpillguardLLM(Guard(tiny_model, tiny_tokenizer, max_new_tokens=3)).complete(QUESTION).raw.answer
    )


def test_missing_llama_index_gives_an_actionable_import_error() -> None:
    code = (
        "import sys; sys.modules['llama_index.core'] = None\n"
        "try:\n    import llama_index_spillguard\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "spillguard[llamaindex]"' in out


@pytest.mark.integration
def test_real_model_answer_carries_scores(real_guard: Guard) -> None:
    llm = SpillguardLLM(real_guard, generate_kwargs={"max_new_tokens": 12})
    response = llm.complete("What is the capital of France?")
    assert "Paris" in response.text
    evidence = _evidence(response)
    assert evidence["score"] == pytest.approx(response.raw.score)
    assert evidence["attempts"][0]["answer_tokens"] == len(response.logprobs) == len(response.raw.scores.spilled_energy)


def test_deprecated_names_warn_and_resolve() -> None:
    import llama_index_spillguard

    with pytest.warns(DeprecationWarning, match=r"llama_index_spillguard.SpillguardLLM"):
        assert llama_index_spillguard.SpilledEnergyLLM is SpillguardLLM
    with pytest.warns(DeprecationWarning, match=r"METADATA_KEY"):
        assert llama_index_spillguard.EVIDENCE_KEY == "spillguard"


def test_a_scope_step_is_fed_to_the_model_as_the_core_guard_feeds_it(tiny_model: Any, tiny_tokenizer: Any) -> None:
    """Inside an engine's scope the LLM makes the scope's attempt exactly (feedback turns included)."""
    guard = Guard(tiny_model, tiny_tokenizer, max_new_tokens=4)
    llm = SpillguardLLM(guard)
    step = Policy(on_hallucination="retry", retry_strategy="feedback", feedback="answer again").step(2, "rome")
    with query_scope("what is the capital of france ?", step=step):
        response = llm.complete("what is the capital of france ?")
    (attempt,) = response.raw.attempts
    assert attempt.prompt_tokens == len(guard.prompt_ids("what is the capital of france ?", step=step))
    assert attempt.decoding == step.label() and "+ feedback" in attempt.decoding
