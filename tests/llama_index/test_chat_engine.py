"""SpillguardChatEngine over LlamaIndex's own chat engines (``index.as_chat_engine``) and the real model.

Thresholds are set explicitly where a test needs a reply flagged (``-1e9``) or allowed
(``1e9``), so the tests do not depend on the shipped calibration.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.chat_engine.types import AgentChatResponse, BaseChatEngine
from llama_index.core.llms import MockLLM
from llama_index.core.memory import ChatMemoryBuffer

from guardrail import Calibration, InvalidInputError, Policy
from llama_index_spillguard import (
    METADATA_KEY,
    RAG_ABSTAIN_TEXT,
    NotGuardedError,
    SpillguardChatEngine,
    SpillguardEventHandler,
    SpillguardLLM,
    SpillguardStreamingChatResponse,
)
from tests.llama_index.corpus import FLAG_ALL, Q_FERRY, Q_LIGHTHOUSE

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("closed_event_loop")]

MODES = ("context", "condense_plus_context", "condense_question", "simple")
FOLLOW_UP = "When was it built?"


def _engine(index: VectorStoreIndex, llm: SpillguardLLM, mode: str = "context") -> BaseChatEngine:
    """A LlamaIndex chat engine; its scratch memory is an in-process buffer (the default
    ``Memory`` keeps an aiosqlite connection that LlamaIndex never closes: a ResourceWarning)."""
    return index.as_chat_engine(chat_mode=mode, llm=llm, similarity_top_k=1, memory=ChatMemoryBuffer.from_defaults())


def _evidence(response: Any) -> dict[str, Any]:
    return response.metadata[METADATA_KEY]


def _pairs(history: list[ChatMessage]) -> list[tuple[str, str]]:
    return [(m.role.value, m.content or "") for m in history]


@pytest.fixture(scope="module")
def replies(index: VectorStoreIndex, llm: SpillguardLLM) -> dict[str, AgentChatResponse]:
    """The first reply of each chat mode under the flag policy (greedy)."""
    return {mode: SpillguardChatEngine(_engine(index, llm, mode)).chat(Q_LIGHTHOUSE) for mode in MODES}


# -- flag ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_every_chat_mode_carries_the_verdict_of_its_reply(mode: str, replies: dict[str, AgentChatResponse]) -> None:
    reply = replies[mode]
    evidence = _evidence(reply)
    assert evidence["query"] == Q_LIGHTHOUSE and evidence["policy"] == "flag"
    assert evidence["answer"] == evidence["text"] == reply.response
    assert evidence["hallucinated"] == (evidence["score"] > evidence["threshold"])
    (attempt,) = evidence["attempts"]
    assert any(call["answer"] == reply.response for call in attempt["llm_calls"])
    if mode != "simple":
        assert reply.source_nodes and "lighthouse" in reply.source_nodes[0].get_content()


def test_grounding_is_opt_in_for_chat_engines(
    index: VectorStoreIndex, llm: SpillguardLLM, replies: dict[str, AgentChatResponse]
) -> None:
    assert _evidence(replies["context"])["calibration"] == llm.guard.calibration.describe()
    grounded = SpillguardChatEngine(_engine(index, llm), grounding=True).chat(Q_LIGHTHOUSE)
    assert _evidence(grounded)["calibration"] == Calibration.bundled("rag").describe()
    assert grounded.response == replies["context"].response
    with pytest.raises(InvalidInputError, match="`grounding` must be a bool"):
        SpillguardChatEngine(_engine(index, llm), grounding=1)  # type: ignore[arg-type]


def test_the_conversation_holds_the_returned_replies(index: VectorStoreIndex, llm: SpillguardLLM) -> None:
    chat = SpillguardChatEngine(_engine(index, llm))
    first = chat.chat(Q_LIGHTHOUSE)
    second = chat.chat(FOLLOW_UP)
    assert _pairs(chat.chat_history) == [
        ("user", Q_LIGHTHOUSE),
        ("assistant", first.response),
        ("user", FOLLOW_UP),
        ("assistant", second.response),
    ]
    assert _evidence(second)["query"] == FOLLOW_UP
    chat.reset()
    assert chat.chat_history == []


def test_condense_question_judges_the_answer_not_the_condensed_question(
    index: VectorStoreIndex, llm: SpillguardLLM
) -> None:
    chat = SpillguardChatEngine(_engine(index, llm, "condense_question"))
    chat.chat(Q_LIGHTHOUSE)
    reply = chat.chat(FOLLOW_UP)
    calls = _evidence(reply)["attempts"][0]["llm_calls"]
    assert len(calls) == 2  # condensing, then answering
    assert calls[-1]["answer"] == reply.response == _evidence(reply)["answer"]


def test_chat_history_argument_replaces_the_conversation(index: VectorStoreIndex, llm: SpillguardLLM) -> None:
    chat = SpillguardChatEngine(_engine(index, llm), threshold=FLAG_ALL)
    earlier = [
        ChatMessage(role=MessageRole.USER, content="Hi"),
        ChatMessage(role=MessageRole.ASSISTANT, content="Hello"),
    ]
    reply = chat.chat(Q_FERRY, chat_history=earlier)
    assert _pairs(chat.chat_history)[:2] == [("user", "Hi"), ("assistant", "Hello")]
    assert _pairs(chat.chat_history)[2:] == [("user", Q_FERRY), ("assistant", reply.response)]
    assert _evidence(reply)["action"] == "flag"


# -- retry and abstain ---------------------------------------------------------------------


def test_retry_keeps_only_the_chosen_reply_in_the_conversation(
    index: VectorStoreIndex, llm: SpillguardLLM, replies: dict[str, AgentChatResponse]
) -> None:
    policy = Policy(on_hallucination="retry", max_attempts=3)
    chat = SpillguardChatEngine(_engine(index, llm), policy, threshold=FLAG_ALL)
    reply = chat.chat(Q_LIGHTHOUSE)
    attempts = _evidence(reply)["attempts"]
    assert [a["decoding"] for a in attempts] == [
        "greedy",
        "sample(temperature=0.8, seed=2)",
        "sample(temperature=0.8, seed=3)",
    ]
    assert attempts[0]["answer"] == replies["context"].response
    assert len({a["answer"] for a in attempts}) > 1
    scores = [a["score"] for a in attempts]
    assert reply.response == attempts[scores.index(min(scores))]["answer"]
    assert _pairs(chat.chat_history) == [("user", Q_LIGHTHOUSE), ("assistant", reply.response)]
    # each attempt answered from the same (empty) history, not from the previous attempts
    assert all(len(a["llm_calls"]) == 1 for a in attempts)


def test_abstain_replaces_the_reply_here_and_in_the_conversation(
    index: VectorStoreIndex, llm: SpillguardLLM, replies: dict[str, AgentChatResponse]
) -> None:
    chat = SpillguardChatEngine(_engine(index, llm), "abstain", threshold=FLAG_ALL)
    reply = chat.chat(Q_LIGHTHOUSE)
    assert reply.response == RAG_ABSTAIN_TEXT
    assert _evidence(reply)["answer"] == replies["context"].response
    assert _pairs(chat.chat_history) == [("user", Q_LIGHTHOUSE), ("assistant", RAG_ABSTAIN_TEXT)]
    assert reply.source_nodes  # the retrieved context is kept


# -- streaming and async -------------------------------------------------------------------


def test_flagging_stream_is_live_and_judged_when_consumed(
    index: VectorStoreIndex, llm: SpillguardLLM, replies: dict[str, AgentChatResponse]
) -> None:
    chat = SpillguardChatEngine(_engine(index, llm))
    stream = chat.stream_chat(Q_LIGHTHOUSE)
    assert isinstance(stream, SpillguardStreamingChatResponse) and stream.metadata is None
    tokens = list(stream.response_gen)
    assert len(tokens) > 3
    assert stream.response == "".join(tokens).strip() == replies["context"].response.strip()
    assert stream.metadata is not None
    assert _evidence(stream)["answer"] == replies["context"].response  # the same call, judged the same
    assert _evidence(stream)["score"] == pytest.approx(_evidence(replies["context"])["score"], abs=1e-4)
    assert _evidence(stream)["attempts"][0]["llm_calls"][0]["kind"] in ("stream_chat", "stream_complete")
    assert _pairs(chat.chat_history) == [("user", Q_LIGHTHOUSE), ("assistant", replies["context"].response)]


def test_abstaining_stream_is_judged_before_anything_is_shown(index: VectorStoreIndex, llm: SpillguardLLM) -> None:
    stream = SpillguardChatEngine(_engine(index, llm), "abstain", threshold=FLAG_ALL).stream_chat(Q_FERRY)
    assert _evidence(stream)["action"] == "abstain"
    assert list(stream.response_gen) == [RAG_ABSTAIN_TEXT]


def test_async_chat_and_stream_match_sync(
    index: VectorStoreIndex, llm: SpillguardLLM, replies: dict[str, AgentChatResponse]
) -> None:
    async def run() -> tuple[AgentChatResponse, list[str], SpillguardStreamingChatResponse, list[ChatMessage]]:
        chat = SpillguardChatEngine(_engine(index, llm))
        reply = await chat.achat(Q_LIGHTHOUSE)
        stream = await chat.astream_chat(FOLLOW_UP)
        tokens = [t async for t in stream.async_response_gen()]
        return reply, tokens, stream, chat.chat_history

    reply, tokens, stream, history = asyncio.run(run())
    assert reply.response == replies["context"].response
    assert len(tokens) > 3 and _evidence(stream)["answer"].strip() == "".join(tokens).strip()
    assert [m.content for m in history] == [Q_LIGHTHOUSE, reply.response, FOLLOW_UP, _evidence(stream)["answer"]]


def test_async_abstaining_stream(index: VectorStoreIndex, llm: SpillguardLLM) -> None:
    async def run() -> list[str]:
        chat = SpillguardChatEngine(_engine(index, llm), "abstain", threshold=FLAG_ALL)
        stream = await chat.astream_chat(Q_FERRY)
        return [t async for t in stream.async_response_gen()]

    assert asyncio.run(run()) == [RAG_ABSTAIN_TEXT]


def test_each_turn_is_reported_to_the_event_handler(
    index: VectorStoreIndex, llm: SpillguardLLM, event_handler: SpillguardEventHandler
) -> None:
    reply = SpillguardChatEngine(_engine(index, llm), threshold=FLAG_ALL).chat(Q_FERRY)
    (turn,) = event_handler.queries
    assert turn.query == Q_FERRY and turn.action == "flag"
    assert [c.answer for c in event_handler.calls_of(turn)] == [reply.response]


# -- errors --------------------------------------------------------------------------------


def test_an_unguarded_chat_engine_is_refused(index: VectorStoreIndex) -> None:
    with pytest.raises(NotGuardedError, match="MockLLM.*SpillguardLLM"):
        SpillguardChatEngine(
            index.as_chat_engine(chat_mode="context", llm=MockLLM(), memory=ChatMemoryBuffer.from_defaults())
        )


def test_a_query_engine_is_pointed_to_the_query_wrapper(index: VectorStoreIndex, llm: SpillguardLLM) -> None:
    with pytest.raises(InvalidInputError, match="SpillguardQueryEngine"):
        SpillguardChatEngine(index.as_query_engine(llm=llm))  # type: ignore[arg-type]


@pytest.mark.parametrize("message", ["", "   "])
def test_empty_message_is_rejected(index: VectorStoreIndex, llm: SpillguardLLM, message: str) -> None:
    with pytest.raises(InvalidInputError, match="`message`"):
        SpillguardChatEngine(_engine(index, llm)).chat(message)


def test_bad_history_and_threshold_are_named(index: VectorStoreIndex, llm: SpillguardLLM) -> None:
    with pytest.raises(InvalidInputError, match="`chat_history` must be a list of ChatMessage"):
        SpillguardChatEngine(_engine(index, llm), chat_history="hello")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="`chat_history`"):
        SpillguardChatEngine(_engine(index, llm)).chat(Q_FERRY, chat_history=[{"role": "user"}])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="`threshold` must be a finite number"):
        SpillguardChatEngine(_engine(index, llm), threshold=float("nan"))


# -- grounding in a conversation -----------------------------------------------------------


def test_a_name_the_model_carried_from_the_history_grounds_nothing() -> None:
    """Bug: in ``condense_question`` mode the question the model condensed from the history
    ("paris ." from an earlier reply) is part of the answering prompt, so the answer counted as
    grounded and was allowed; the context mode, which keeps the history in assistant turns, abstained."""
    from llama_index.core import Document

    from tests.llama_index.corpus import HashEmbedding
    from tests.scripted import scripted_guard

    llm = SpillguardLLM(scripted_guard({"assistant:": "paris ."}, threshold=1.0), context_window=2048)
    ferry = Document(text="The ferry to the island of Skarn takes 50 minutes.")
    index = VectorStoreIndex.from_documents([ferry], embed_model=HashEmbedding())
    history = [
        ChatMessage(role=MessageRole.USER, content="what is the capital of france ?"),
        ChatMessage(role=MessageRole.ASSISTANT, content="paris ."),
    ]
    for mode in ("context", "condense_question"):
        inner = index.as_chat_engine(chat_mode=mode, llm=llm, memory=ChatMemoryBuffer.from_defaults())
        reply = SpillguardChatEngine(inner, "abstain", grounding=True, chat_history=history).chat("and the ferry ?")
        evidence = _evidence(reply)
        assert reply.response == RAG_ABSTAIN_TEXT and evidence["action"] == "abstain", mode
        assert "ungrounded: 'paris' is not written in the prompt" in evidence["notes"], mode


def test_model_written_text_grounds_only_through_what_grounded_it() -> None:
    from guardrail import Action, Attempt, Span, TokenScores, Verdict
    from llama_index_spillguard.scope import query_scope

    def verdict(text: str) -> Verdict:
        scores, span = TokenScores([1], [1.0], [1.0], [1.0], [0.0]), Span(0, 1, 0, 1, text, "t")
        attempt = Attempt(text, (text,), scores, span, 0.0, "greedy", 4)
        return Verdict("q", text, Action.ALLOW, 1.0, (attempt,), 0, "test")

    # A condensing chat mode: the earlier reply is rendered into the condensing prompt as text.
    with query_scope("and the ferry?", grounded=True, written=["Paris."]) as chat:
        first = chat.sources("History: user: capital of France? assistant: Paris.\nFollow-up: and the ferry?")
        chat.record("chat", verdict("How long is the ferry to Paris?"))
        second = chat.sources("Context: the ferry takes 50 minutes.\nQuery: How long is the ferry to Paris?")
    assert "Paris" not in first and "Paris" not in second and second.endswith("and the ferry?")
    assert "capital of France" in second  # what the earlier call was looked up in still grounds
    # Refine: the draft's name is grounded by the draft's own passage, not by the draft.
    with query_scope("who built it?", grounded=True) as query:
        query.sources("Context: it was built by Miriam Okafor.\nQuery: who built it?")
        query.record("chat", verdict("Miriam Okafor"))
        refined = query.sources("Existing answer: Miriam Okafor\nNew context: it opened in 1871.")
    assert "built by Miriam Okafor" in refined and "Existing answer: \n" in refined
