"""Unit tests of the LangChain integration: the tiny in-memory model and fake LangChain models."""

from __future__ import annotations

import subprocess
import sys
from typing import Any
from uuid import UUID

import pytest

pytest.importorskip("langchain_core")

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig, RunnableLambda

from guardrail import Calibration, Guard, InvalidInputError, Policy, RetryStep
from langchain_spillguard import (
    STEP_KEY,
    ChatSpillguard,
    HallucinationDetected,
    NotGuardedError,
    SpillguardCallbackHandler,
    SpillguardRunnable,
    UnscoredResponseError,
    evidence_of,
)
from tests.conftest import make_verdict

QUESTION = "what is the capital of france ?"


@pytest.fixture(scope="module")
def tiny_chat(tiny_model: Any, tiny_tokenizer: Any) -> ChatSpillguard:
    return ChatSpillguard(guard=Guard(tiny_model, tiny_tokenizer, max_new_tokens=6), logprobs=True)


def _scored(answer: str, score: float | None, threshold: float = 1.0) -> AIMessage:
    """A message shaped like a ChatSpillguard answer (sealed core evidence), with a chosen score."""
    data = make_verdict(answer, score, threshold).to_dict(per_token=False)
    return AIMessage(content=answer, response_metadata={"spillguard": data})


def _scripted(scores: list[float]) -> tuple[RunnableLambda[Any, AIMessage], list[dict[str, Any]]]:
    """A runnable answering attempt i with score ``scores[i]``; records each decoding change."""
    seen: list[dict[str, Any]] = []

    def answer(_: Any, config: RunnableConfig) -> AIMessage:
        seen.append(dict(config.get("metadata", {}).get(STEP_KEY, {})))
        return _scored(f"answer {len(seen)}", scores[len(seen) - 1])

    return RunnableLambda(answer), seen


# -- package --------------------------------------------------------------------------------


def test_missing_langchain_core_gives_actionable_import_error() -> None:
    code = "import sys; sys.modules['langchain_core'] = None; import langchain_spillguard"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert 'pip install "spillguard[langchain]"' in done.stderr


def test_public_names() -> None:
    import langchain_spillguard

    assert sorted(langchain_spillguard.__all__) == sorted(
        [
            "METADATA_KEY", "QUESTION_KEY", "STEP_KEY", "AsyncSpillguardCallbackHandler", "ChatSpillguard", "Evidence",
            "HallucinationDetected", "NotGuardedError", "RunRecord", "SpillguardCallbackHandler",
            "SpillguardMiddleware", "SpillguardRunnable", "UnscoredResponseError", "evidence_of",
        ]
    )  # fmt: skip
    for name in langchain_spillguard.__all__:
        assert getattr(langchain_spillguard, name) is not None


# -- chat model -----------------------------------------------------------------------------


def test_invoke_puts_verdict_logprobs_and_usage_in_metadata(tiny_chat: ChatSpillguard) -> None:
    result = tiny_chat.generate([[HumanMessage(QUESTION)]])
    generation = result.generations[0][0]
    message = generation.message
    data = message.response_metadata["spillguard"]
    assert generation.generation_info is not None and generation.generation_info["spillguard"] == data
    assert data["text"] == message.content and data["action"] in {"allow", "flag", "abstain"}
    tokens = data["attempts"][data["chosen"]]["tokens"]
    content = message.response_metadata["logprobs"]["content"]
    assert [c["token"] for c in content] == tokens
    assert all(set(c) == {"token", "logprob", "bytes", "top_logprobs"} and c["logprob"] <= 0 for c in content)
    assert message.usage_metadata is not None and message.usage_metadata["output_tokens"] == len(tokens)
    assert message.response_metadata["model_provider"] == "spillguard"
    evidence = evidence_of(message)
    assert evidence is not None and evidence.threshold == data["threshold"]


def test_stream_yields_tokens_then_lagged_energies_then_verdict(tiny_chat: ChatSpillguard) -> None:
    chunks = list(tiny_chat.stream(QUESTION))
    assert chunks[-1].chunk_position == "last" and "spillguard" in chunks[-1].response_metadata
    assert not any("spillguard" in c.response_metadata for c in chunks[:-1])
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    invoked = tiny_chat.invoke(QUESTION)
    assert merged.content == invoked.content
    steps = merged.response_metadata["spillguard_steps"]
    data = merged.response_metadata["spillguard"]
    assert [s["position"] for s in steps] == list(range(len(steps)))
    assert [s["spilled_energy"] for s in steps] == pytest.approx(data["attempts"][0]["spilled_energy"], abs=1e-4)
    assert data["score"] == pytest.approx(invoked.response_metadata["spillguard"]["score"], abs=1e-4)


def test_feedback_from_run_metadata_extends_the_prompt(tiny_chat: ChatSpillguard) -> None:
    change = RetryStep(attempt=2, temperature=0.8, seed=3, feedback="answer again", previous_answer="rome")
    plain = tiny_chat.invoke(QUESTION)
    retried = tiny_chat.invoke(QUESTION, config={"metadata": {STEP_KEY: change.to_dict()}})
    assert plain.usage_metadata and retried.usage_metadata
    assert retried.usage_metadata["input_tokens"] > plain.usage_metadata["input_tokens"]


@pytest.mark.parametrize(
    ("messages", "needle"),
    [
        ([ToolMessage("4", tool_call_id="1")], "tool result, but this tokenizer's chat template renders no tools"),
        ([HumanMessage([{"type": "image_url", "image_url": {"url": "x"}}])], "non-text"),
        ([], "non-empty"),
    ],
)
def test_unsupported_messages_are_named(tiny_chat: ChatSpillguard, messages: list[Any], needle: str) -> None:
    with pytest.raises(InvalidInputError, match=needle):
        tiny_chat.invoke(messages)


def test_unknown_call_argument_is_named(tiny_chat: ChatSpillguard) -> None:
    with pytest.raises(InvalidInputError, match="max_tokenz"):
        tiny_chat.invoke(QUESTION, max_tokenz=5)


def test_guard_excludes_model_path(tiny_model: Any, tiny_tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="model_path"):  # pydantic's ValidationError
        ChatSpillguard(guard=Guard(tiny_model, tiny_tokenizer), model_path="/somewhere")


def test_system_message_and_history_are_accepted(tiny_chat: ChatSpillguard) -> None:
    message = tiny_chat.invoke([SystemMessage("a"), HumanMessage("what"), AIMessage("paris"), HumanMessage(QUESTION)])
    assert evidence_of(message) is not None


def test_chat_model_raises_with_verdict_when_asked(tiny_model: Any, tiny_tokenizer: Any) -> None:
    from guardrail.calibration import Calibration

    guard = Guard(tiny_model, tiny_tokenizer, max_new_tokens=6)
    strict = Calibration.uncalibrated()
    object.__setattr__(strict, "threshold", -1e9)  # every answer is above it
    guard.calibration = strict
    chat = ChatSpillguard(guard=guard, raise_on_hallucination=True)
    with pytest.raises(HallucinationDetected) as caught:
        chat.invoke(QUESTION)
    assert caught.value.verdict is not None and caught.value.run_id is not None
    assert caught.value.score == pytest.approx(caught.value.verdict.score)


# -- callback -------------------------------------------------------------------------------


def test_callback_records_scored_runs_by_run_id(tiny_chat: ChatSpillguard, caplog: pytest.LogCaptureFixture) -> None:
    handler = SpillguardCallbackHandler(threshold=-1e9)
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | tiny_chat
    message = chain.invoke({"q": QUESTION}, config={"callbacks": [handler]})
    ((run_id, record),) = handler.records.items()
    assert isinstance(run_id, UUID) and record.run_id == run_id and record.parent_run_id is not None
    assert record.status == "flagged" and record.prompt == QUESTION and record.text == message.content
    assert handler.flagged == {run_id: record}
    assert str(run_id) in caplog.text and "flagged" in caplog.text


def test_callback_raise_error_carries_evidence(tiny_chat: ChatSpillguard) -> None:
    handler = SpillguardCallbackHandler(threshold=-1e9, raise_error=True)
    with pytest.raises(HallucinationDetected) as caught:
        tiny_chat.invoke(QUESTION, config={"callbacks": [handler]})
    assert caught.value.run_id in handler.flagged and caught.value.threshold == -1e9
    assert caught.value.evidence is not None and "attempts" in caught.value.evidence.data


def test_unscored_response_is_never_allowed() -> None:
    fake = FakeListChatModel(responses=["Paris."])
    handler = SpillguardCallbackHandler()
    fake.invoke("hi", config={"callbacks": [handler]})
    (record,) = handler.records.values()
    assert record.status == "unscored" and not record.allowed and handler.unscored
    strict = SpillguardCallbackHandler(raise_error=True)
    with pytest.raises(UnscoredResponseError, match="no spillguard scores"):
        (ChatPromptTemplate.from_messages([("human", "{q}")]) | fake).invoke({"q": "x"}, config={"callbacks": [strict]})


def test_callback_rejects_bad_threshold() -> None:
    with pytest.raises(InvalidInputError, match="threshold"):
        SpillguardCallbackHandler(threshold=float("nan"))


# -- runnable guard -------------------------------------------------------------------------


def test_guard_refuses_non_guarded_models() -> None:
    with pytest.raises(NotGuardedError, match="FakeListChatModel"):
        SpillguardRunnable(FakeListChatModel(responses=["x"]))
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    with pytest.raises(NotGuardedError, match="FakeListChatModel"):
        SpillguardRunnable(prompt | FakeListChatModel(responses=["x"]).bind(stop=["."]))
    with pytest.raises(NotGuardedError, match="StrOutputParser"):
        SpillguardRunnable(prompt | ChatSpillguard() | StrOutputParser())


def test_guard_never_allows_an_unscored_output() -> None:
    with pytest.raises(UnscoredResponseError):
        SpillguardRunnable(RunnableLambda(lambda _: AIMessage("Paris."))).invoke("q")
    with pytest.raises(UnscoredResponseError, match="str"):
        SpillguardRunnable(RunnableLambda(lambda _: "Paris.")).invoke("q")


def test_retry_changes_decoding_and_keeps_the_best() -> None:
    runnable, seen = _scripted([5.0, 3.0, 4.0])
    guard = SpillguardRunnable(runnable, policy=Policy(on_hallucination="retry", max_attempts=3, seed=10))
    result = guard.invoke("q")
    assert seen[0]["temperature"] is None and seen[1]["seed"] == 12 and seen[2]["seed"] == 13
    assert seen[1]["temperature"] == 0.8
    data = result.response_metadata["spillguard"]
    assert result.content == "answer 2" and data["guard"]["chosen"] == 1 and data["action"] == "flag"
    assert [a["score"] for a in data["guard"]["attempts"]] == [5.0, 3.0, 4.0]


def test_retry_stops_at_the_first_allowed_answer() -> None:
    runnable, seen = _scripted([5.0, 0.5, 0.1])
    result = SpillguardRunnable(runnable, policy=Policy(on_hallucination="retry")).invoke("q")
    assert len(seen) == 2 and result.content == "answer 2"
    assert result.response_metadata["spillguard"]["action"] == "allow"


def test_feedback_retry_passes_the_previous_answer() -> None:
    runnable, seen = _scripted([5.0, 0.5])
    SpillguardRunnable(runnable, policy=Policy(on_hallucination="retry", retry_strategy="feedback")).invoke("q")
    assert seen[1]["previous_answer"] == "answer 1" and seen[1]["feedback"]


def test_abstain_returns_the_configured_text_with_evidence() -> None:
    runnable, _ = _scripted([5.0])
    guard = SpillguardRunnable(runnable, policy=Policy(on_hallucination="abstain", abstain_text="No idea."))
    result = guard.invoke("q")
    data = result.response_metadata["spillguard"]
    assert result.content == "No idea." and data["answer"] == "answer 1" and data["action"] == "abstain"
    streamed = [c.content for c in SpillguardRunnable(_scripted([5.0])[0], policy=guard.policy).stream("q")]
    assert streamed == ["No idea."]


def test_empty_answer_score_none_is_flagged() -> None:
    runnable, _ = _scripted([None])  # type: ignore[list-item]
    result = SpillguardRunnable(runnable).invoke("q")
    assert result.response_metadata["spillguard"]["action"] == "flag"


def test_with_retry_attempt_tag_changes_decoding() -> None:
    runnable, seen = _scripted([5.0, 0.5])
    guard = SpillguardRunnable(runnable, raise_on_hallucination=True).with_retry(
        retry_if_exception_type=(HallucinationDetected,), stop_after_attempt=3, wait_exponential_jitter=False
    )
    assert guard.invoke("q").content == "answer 2"
    assert seen[0]["temperature"] is None and seen[1]["seed"] == 2


def test_with_fallbacks_handles_flagged_answers() -> None:
    runnable, _ = _scripted([5.0])
    fallback = RunnableLambda(lambda _: AIMessage("I don't know."))
    chain = SpillguardRunnable(runnable, raise_on_hallucination=True).with_fallbacks(
        [fallback], exceptions_to_handle=(HallucinationDetected,)
    )
    assert chain.invoke("q").content == "I don't know."


@pytest.mark.asyncio
async def test_guard_async_matches_sync() -> None:
    runnable, _ = _scripted([5.0, 3.0, 4.0])
    result = await SpillguardRunnable(runnable, policy=Policy(on_hallucination="retry")).ainvoke("q")
    assert result.content == "answer 2"
    chunks = [c async for c in SpillguardRunnable(_scripted([5.0])[0], policy=Policy("abstain")).astream("q")]
    assert [c.content for c in chunks] == ["I don't know."]


def test_streaming_field_streams_inside_invoke(tiny_model: Any, tiny_tokenizer: Any) -> None:
    from langchain_core.callbacks import BaseCallbackHandler

    class Tokens(BaseCallbackHandler):
        def __init__(self) -> None:
            self.tokens: list[str] = []

        def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            self.tokens.append(token)

    seen = Tokens()
    chat = ChatSpillguard(guard=Guard(tiny_model, tiny_tokenizer, max_new_tokens=6), streaming=True)
    message = chat.invoke(QUESTION, config={"callbacks": [seen]})
    assert "".join(seen.tokens) == message.content and evidence_of(message) is not None


def test_streaming_an_abstaining_chat_model_streams_the_abstention(tiny_model: Any, tiny_tokenizer: Any) -> None:
    """Regression: the answer streamed token by token and the merged message kept it, while its
    metadata said "abstain"."""
    policy = Policy("abstain", abstain_text="I don't know.")
    flag_all = Calibration.uncalibrated(-1e9)
    guard = Guard(tiny_model, tiny_tokenizer, max_new_tokens=6, calibration=flag_all, policy=policy)
    chunks = list(ChatSpillguard(guard=guard).stream(QUESTION))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert merged.content == "I don't know."
    assert merged.response_metadata["spillguard"]["action"] == "abstain"


def test_closing_a_stream_early_releases_the_model(tiny_chat: ChatSpillguard) -> None:
    stream = tiny_chat.stream(QUESTION)
    next(stream)
    stream.close()
    assert evidence_of(tiny_chat.invoke(QUESTION)) is not None  # would hang if the lock leaked


@pytest.mark.asyncio
async def test_concurrent_astreams_are_serialized_without_deadlock(tiny_chat: ChatSpillguard) -> None:
    import asyncio

    async def collect() -> str:
        return "".join([c.text async for c in tiny_chat.astream(QUESTION)])

    texts = await asyncio.wait_for(asyncio.gather(*[collect() for _ in range(8)]), timeout=120)
    assert len(set(texts)) == 1 and texts[0] == tiny_chat.invoke(QUESTION).content


def test_guard_flag_stream_passes_tokens_through(tiny_chat: ChatSpillguard) -> None:
    chunks = list(SpillguardRunnable(tiny_chat).stream(QUESTION))
    assert sum(1 for c in chunks if c.content) > 1, "tokens must pass through as produced"
    last = chunks[-1]
    assert last.chunk_position == "last" and last.response_metadata["spillguard"]["guard"]["chosen"] == 0
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert merged.content == tiny_chat.invoke(QUESTION).content


def test_guard_batch_and_abatch_keep_inputs_apart() -> None:
    import asyncio

    def answer(question: str) -> AIMessage:
        return _scored(question.upper(), 0.0 if question == "a" else 5.0)

    guard = SpillguardRunnable(RunnableLambda(answer), policy=Policy(on_hallucination="abstain"))
    assert [m.content for m in guard.batch(["a", "b"])] == ["A", "I don't know."]
    assert [m.content for m in asyncio.run(guard.abatch(["b", "a"]))] == ["I don't know.", "A"]


def test_deprecated_names_warn_and_resolve() -> None:
    import langchain_spillguard

    with pytest.warns(DeprecationWarning, match=r"langchain_spillguard.SpillguardRunnable"):
        assert langchain_spillguard.HallucinationGuard is SpillguardRunnable
    with pytest.warns(DeprecationWarning, match=r"guardrail.HallucinationDetected"):
        assert langchain_spillguard.HallucinationFlagged is HallucinationDetected
    with pytest.raises(AttributeError):
        _ = langchain_spillguard.NoSuchName


def test_feedback_reaches_the_model_as_the_core_guard_feeds_it(tiny_model: Any, tiny_tokenizer: Any) -> None:
    """The runnable's retry step makes the chat model feed exactly what Guard.prompt_ids says."""
    from guardrail.calibration import Calibration

    guard = Guard(tiny_model, tiny_tokenizer, max_new_tokens=4, calibration=Calibration.uncalibrated(-1e9))
    policy = Policy(on_hallucination="retry", max_attempts=2, retry_strategy="feedback", feedback="answer again")
    handler = SpillguardCallbackHandler()
    SpillguardRunnable(ChatSpillguard(guard=guard), policy=policy).invoke(QUESTION, config={"callbacks": [handler]})
    first, second = [r.evidence for r in handler.records.values()]
    assert first is not None and second is not None
    step = policy.step(2, first["answer"])
    messages = [{"role": "user", "content": QUESTION}]
    assert second["attempts"][0]["prompt_tokens"] == len(guard.prompt_ids(messages, step=step))
    assert second["attempts"][0]["decoding"].endswith("+ feedback")
