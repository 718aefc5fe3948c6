"""What a LangChain user relies on: token counting, chunks, metadata size, refused arguments,
callbacks on errors, serialization, judged-text guarantees and cancellation.

Tiny in-memory models (the random one of tests/conftest.py and the scripted one of
tests/scripted.py); the checks that need the real model are marked ``integration``.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.load import dumpd
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, trim_messages
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

from guardrail import Evidence, Guard, InvalidInputError, ModelError, Policy
from langchain_spillguard import (
    ChatSpillguard,
    HallucinationDetected,
    SpillguardCallbackHandler,
    SpillguardRunnable,
    UnscoredResponseError,
)
from tests.scripted import scripted_guard

QUESTION = "what is the capital of france ?"


@pytest.fixture(scope="module")
def chat(tiny_model: Any, tiny_tokenizer: Any) -> ChatSpillguard:
    return ChatSpillguard(guard=Guard(tiny_model, tiny_tokenizer, max_new_tokens=6))


class _Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


# -- token counting -------------------------------------------------------------------------


def test_token_counting_uses_the_model_tokenizer(chat: ChatSpillguard) -> None:
    guard = chat.get_guard()
    assert chat.get_token_ids("paris , rome") == guard.tokenizer("paris , rome", add_special_tokens=False)["input_ids"]
    assert chat.get_num_tokens("paris , rome") == 3
    history = [SystemMessage("a"), HumanMessage(QUESTION)]
    expected = len(guard.prompt_ids([{"role": "system", "content": "a"}, {"role": "user", "content": QUESTION}]))
    assert chat.get_num_tokens_from_messages(history) == expected
    message = chat.invoke(history)
    assert message.usage_metadata is not None and message.usage_metadata["input_tokens"] == expected


def test_trim_messages_with_the_chat_model_as_counter_trims(chat: ChatSpillguard) -> None:
    history = [
        HumanMessage("what is the capital of france ?") if i % 2 == 0 else AIMessage("paris .") for i in range(9)
    ]
    full = chat.get_num_tokens_from_messages(history)
    trimmed = trim_messages(history, max_tokens=full // 2, token_counter=chat, strategy="last")
    assert 0 < len(trimmed) < len(history)
    assert chat.get_num_tokens_from_messages(trimmed) <= full // 2


# -- streaming ------------------------------------------------------------------------------


def test_one_chunk_per_text_delta_and_new_token_only_for_text(tiny_model: Any, tiny_tokenizer: Any) -> None:
    guard = Guard(tiny_model, tiny_tokenizer, max_new_tokens=6)
    seen = _Tokens()
    chunks = list(ChatSpillguard(guard=guard).stream(QUESTION, config={"callbacks": [seen]}))
    texts = [c.content for c in chunks[:-1]]
    assert all(texts), "no empty chunk but the final one"
    assert chunks[-1].content == "" and chunks[-1].chunk_position == "last"
    assert "spillguard" in chunks[-1].response_metadata
    assert len(texts) == chunks[-1].response_metadata["spillguard"]["attempts"][0]["answer_tokens"]
    # LangChain's stream() reports every chunk, the final verdict chunk too; nothing else is empty
    assert seen.tokens == [*texts, ""]
    inside = _Tokens()
    message = ChatSpillguard(guard=guard, streaming=True).invoke(QUESTION, config={"callbacks": [inside]})
    assert inside.tokens == [*texts, ""] and "".join(texts) == message.content


def test_streamed_attempts_get_their_steps(tiny_model: Any, tiny_tokenizer: Any) -> None:
    """LangChain gives _stream no run manager: the runnable's steps must still reach the model."""
    from guardrail import Calibration

    guard = Guard(tiny_model, tiny_tokenizer, max_new_tokens=4, calibration=Calibration.uncalibrated(-1e9))
    handler = SpillguardCallbackHandler()
    policy = Policy("retry", max_attempts=3, seed=1)
    list(SpillguardRunnable(ChatSpillguard(guard=guard), policy=policy).stream(QUESTION, {"callbacks": [handler]}))
    decodings = [r.evidence["attempts"][0]["decoding"] for r in handler.records.values() if r.evidence]
    assert decodings == ["greedy", "sample(temperature=0.8, seed=3)", "sample(temperature=0.8, seed=4)"]


def test_per_token_arrays_only_on_request(tiny_model: Any, tiny_tokenizer: Any) -> None:
    guard = Guard(tiny_model, tiny_tokenizer, max_new_tokens=6)
    plain = ChatSpillguard(guard=guard).invoke(QUESTION).response_metadata
    attempt = plain["spillguard"]["attempts"][0]
    assert "logprobs" not in plain and "tokens" not in attempt and "spilled_energy" not in attempt
    assert {"score", "threshold", "span", "action"} <= set(plain["spillguard"])
    detailed = ChatSpillguard(guard=guard, logprobs=True).invoke(QUESTION).response_metadata
    assert "logprobs" in detailed and "spilled_energy" in detailed["spillguard"]["attempts"][0]
    assert not any("spillguard_steps" in c.response_metadata for c in ChatSpillguard(guard=guard).stream(QUESTION))


# -- arguments ------------------------------------------------------------------------------


def test_unknown_fields_and_bad_call_arguments_are_refused(chat: ChatSpillguard) -> None:
    with pytest.raises(InvalidInputError, match="`max_tokenz`: Extra inputs are not permitted"):
        ChatSpillguard(max_tokenz=5)
    for bad in (0, -1, "5", 2.5):
        with pytest.raises(InvalidInputError, match="max_tokens"):
            chat.invoke(QUESTION, max_tokens=bad)
    with pytest.raises(InvalidInputError, match="timeout"):
        ChatSpillguard(timeout=0)
    with pytest.raises(InvalidInputError, match="max_retries"):
        ChatSpillguard(max_retries=-1)
    assert ChatSpillguard(max_retries=2).max_retries == 2  # LangChain's standard parameter: a documented no-op
    with pytest.raises(InvalidInputError, match="one local model"):
        chat.invoke(QUESTION, model="gpt-5")


def test_timeout_cuts_the_answer() -> None:
    reply = "paris is the capital of france"
    guard = scripted_guard({"assistant:": reply}, cycle=True, max_new_tokens=400)
    cut = ChatSpillguard(guard=guard, timeout=1e-4).invoke(QUESTION)
    assert cut.response_metadata["finish_reason"] == "length"
    assert cut.usage_metadata is not None and cut.usage_metadata["output_tokens"] < 400


def test_string_policies_on_the_runnable(chat: ChatSpillguard) -> None:
    assert SpillguardRunnable(chat, policy="abstain").policy == Policy("abstain")
    assert SpillguardRunnable(chat, policy="retry").policy == Policy("retry")
    with pytest.raises(InvalidInputError, match="`policy` must be one of"):
        SpillguardRunnable(chat, policy="ignore")


# -- callbacks and errors -------------------------------------------------------------------


def test_callback_records_runs_whose_model_raised(tiny_model: Any, tiny_tokenizer: Any) -> None:
    from guardrail import Calibration

    guard = Guard(tiny_model, tiny_tokenizer, max_new_tokens=4, calibration=Calibration.uncalibrated(-1e9))
    strict = ChatSpillguard(guard=guard, raise_on_hallucination=True)
    handler = SpillguardCallbackHandler()
    for _ in range(3):
        with pytest.raises(HallucinationDetected) as caught:
            strict.invoke(QUESTION, config={"callbacks": [handler]})
        assert isinstance(caught.value.evidence, Evidence)
    assert len(handler.flagged) == 3 and all(r.status == "flagged" for r in handler.records.values())


# -- serialization --------------------------------------------------------------------------


def test_pickling_keeps_the_configuration_only(chat: ChatSpillguard) -> None:
    lazy = ChatSpillguard(max_tokens=5, temperature=0.5)
    again = pickle.loads(pickle.dumps(lazy))
    assert again.max_tokens == 5 and again.temperature == 0.5 and again._loaded is None
    with pytest.raises(ModelError, match="cannot be pickled"):
        pickle.dumps(chat)
    assert dumpd(lazy)["type"] == "not_implemented"  # not LangChain-serializable, on purpose


@pytest.mark.integration
def test_a_loaded_model_pickles_without_its_weights(real_guard: Any) -> None:
    lazy = ChatSpillguard(max_tokens=4)
    lazy.get_guard()
    data = pickle.dumps(lazy)
    assert len(data) < 20_000 and pickle.loads(data).invoke("What is the capital of France?").content


# -- judged text (issue 11, item 2) ---------------------------------------------------------


def test_a_rewrite_after_the_model_is_refused(chat: ChatSpillguard) -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    rewrite = RunnableLambda(lambda m: AIMessage(m.content.upper(), response_metadata=m.response_metadata))
    with pytest.raises(UnscoredResponseError, match="not the text that was scored"):
        SpillguardRunnable(prompt | chat | rewrite).invoke({"q": QUESTION})


def test_forged_or_copied_metadata_is_refused(chat: ChatSpillguard) -> None:
    forged = {"spillguard": {"answer": "x", "text": "x", "action": "allow", "score": -9.0, "threshold": 1.0}}
    forged["spillguard"]["span"] = {"text": "x"}
    with pytest.raises(UnscoredResponseError, match="forged"):
        SpillguardRunnable(RunnableLambda(lambda _: AIMessage("x", response_metadata=forged))).invoke("q")
    real = chat.invoke(QUESTION)
    copied = AIMessage("Tegucigalpa.", response_metadata=real.response_metadata)
    with pytest.raises(UnscoredResponseError, match="not the text that was scored"):
        SpillguardRunnable(RunnableLambda(lambda _: copied)).invoke("q")


# -- cancellation (issue 11, item 8) --------------------------------------------------------


LIMIT = 300


@pytest.fixture(scope="module")
def endless() -> Guard:
    """A model that never writes EOS: each answer runs to the token limit unless stopped."""
    return scripted_guard({"assistant:": "paris is the capital of france"}, cycle=True, max_new_tokens=LIMIT)


async def _cancel_after(stream: Any, chunks: int) -> None:
    seen = 0

    async def consume() -> None:
        nonlocal seen
        async for _ in stream:
            seen += 1

    task = asyncio.create_task(consume())
    while seen < chunks:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
@pytest.mark.parametrize("wrapped", [False, True], ids=["ChatSpillguard", "SpillguardRunnable"])
async def test_cancelling_astream_stops_generation_and_leaves_the_model_usable(endless: Guard, wrapped: bool) -> None:
    chat = ChatSpillguard(guard=endless)
    runnable: Any = SpillguardRunnable(chat) if wrapped else chat
    steps = 0

    def count(*_: Any) -> None:
        nonlocal steps
        steps += 1

    hook = endless.model.register_forward_hook(count)
    try:
        for _ in range(8):
            steps = 0
            await asyncio.wait_for(_cancel_after(runnable.astream(QUESTION), 3), timeout=60)
            # LangChain's astream leaves the inner generator to asyncio's finalizer, which closes it
            # (and so stops the worker) on the next loop turns: a step or two may still run.
            await asyncio.sleep(0.2)
            stopped = steps
            await asyncio.sleep(0.2)
            assert steps == stopped, "generation went on after the cancellation"
            assert steps < LIMIT // 3, f"{steps} forward steps: generation was not stopped early"
    finally:
        hook.remove()
    message = await chat.ainvoke(QUESTION, max_tokens=5)
    assert message.content == "paris is the capital of"


# -- the real model -------------------------------------------------------------------------


@pytest.mark.integration
def test_with_retry_resamples_the_chat_model(real_guard: Any) -> None:
    strict = ChatSpillguard(guard=real_guard, max_tokens=16, raise_on_hallucination=True)
    handler = SpillguardCallbackHandler()
    retried = strict.with_retry(
        retry_if_exception_type=(HallucinationDetected,), stop_after_attempt=3, wait_exponential_jitter=False
    )
    with contextlib.suppress(HallucinationDetected):  # all attempts flagged: the answers still tell
        retried.invoke("What is the capital of Honduras?", config={"callbacks": [handler]})
    answers = [r.text for r in handler.records.values()]
    assert len(answers) >= 2 and "Bahia" in answers[0]
    assert len(set(answers)) == len(answers), f"with_retry repeated an answer: {answers}"


@pytest.mark.integration
def test_token_count_is_what_the_model_reads(real_guard: Any) -> None:
    chat = ChatSpillguard(guard=real_guard, max_tokens=4)
    history = [SystemMessage("Be brief."), HumanMessage("What is the capital of France?")]
    message = chat.invoke(history)
    assert message.usage_metadata is not None
    assert chat.get_num_tokens_from_messages(history) == message.usage_metadata["input_tokens"]
    assert chat.get_num_tokens("Paris") == len(real_guard.tokenizer("Paris", add_special_tokens=False)["input_ids"])
