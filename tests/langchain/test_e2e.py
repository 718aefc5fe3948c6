"""End-to-end tests of the LangChain integration with the real bundled SmolLM2-135M-Instruct.

Greedy decoding is deterministic, so a score seen through LangChain must equal the score of
asking the guard the same question alone. "What is the capital of Honduras?" is answered wrongly
("Bahia") and flagged by the shipped threshold; "France" is answered right and allowed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda

from guardrail import Policy
from langchain_spillguard import (
    QUESTION_KEY,
    AsyncSpillguardCallbackHandler,
    ChatSpillguard,
    HallucinationDetected,
    SpillguardCallbackHandler,
    SpillguardRunnable,
)

pytestmark = pytest.mark.integration

MAX_TOKENS = 16
WRONG = "What is the capital of Honduras?"
RIGHT = "What is the capital of France?"
QUESTIONS = (RIGHT, WRONG, "What is the capital of Peru?", "What is the capital of Japan?")


@pytest.fixture(scope="module")
def chat(real_guard: Any) -> ChatSpillguard:
    return ChatSpillguard(guard=real_guard, max_tokens=MAX_TOKENS)


@pytest.fixture(scope="module")
def alone(real_guard: Any) -> dict[str, Any]:
    """The verdict of each question asked directly, one at a time."""
    return {q: real_guard.ask(q, max_new_tokens=MAX_TOKENS) for q in QUESTIONS}


def _score(message: Any) -> float:
    return float(message.response_metadata["spillguard"]["score"])


def _merge(chunks: list[Any]) -> Any:
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    return merged


def test_invoke_and_batch_match_the_guard(chat: ChatSpillguard, alone: dict[str, Any]) -> None:
    wrong = chat.invoke(WRONG)
    assert wrong.content == alone[WRONG].text and _score(wrong) == pytest.approx(alone[WRONG].score)
    assert wrong.response_metadata["spillguard"]["hallucinated"] is True
    right, again = chat.batch([RIGHT, WRONG])
    assert _score(right) == pytest.approx(alone[RIGHT].score) and _score(again) == pytest.approx(alone[WRONG].score)
    assert right.response_metadata["spillguard"]["action"] == "allow"


def test_ainvoke_and_abatch_match_the_guard(chat: ChatSpillguard, alone: dict[str, Any]) -> None:
    async def run() -> list[Any]:
        first = await chat.ainvoke(WRONG)
        return [first, *await chat.abatch([RIGHT, QUESTIONS[2]])]

    messages = asyncio.run(run())
    assert [_score(m) for m in messages] == pytest.approx([alone[q].score for q in (WRONG, RIGHT, QUESTIONS[2])])


def test_stream_and_astream_carry_the_same_verdict(chat: ChatSpillguard, alone: dict[str, Any]) -> None:
    chunks = list(chat.stream(RIGHT))
    texts = [c.content for c in chunks if c.content]
    assert len(texts) > 3, "tokens must stream one by one"
    merged = _merge(chunks)
    assert merged.content == alone[RIGHT].text and _score(merged) == pytest.approx(alone[RIGHT].score, abs=1e-4)
    assert "spillguard_steps" not in merged.response_metadata  # per-token data only on request
    assert len(chunks) == len(texts) + 1  # one chunk per text delta, then the verdict
    detailed = ChatSpillguard(guard=chat.guard, max_tokens=MAX_TOKENS, logprobs=True)
    steps = _merge(list(detailed.stream(RIGHT))).response_metadata["spillguard_steps"]
    assert [s["position"] for s in steps] == list(range(len(alone[RIGHT].scores)))

    async def run() -> list[Any]:
        return [c async for c in chat.astream(WRONG)]

    amerged = _merge(asyncio.run(run()))
    assert amerged.content == alone[WRONG].text and _score(amerged) == pytest.approx(alone[WRONG].score, abs=1e-4)


def test_concurrent_ainvoke_callbacks_have_no_cross_talk(chat: ChatSpillguard, alone: dict[str, Any]) -> None:
    handlers = [SpillguardCallbackHandler(), AsyncSpillguardCallbackHandler()]
    chain = ChatPromptTemplate.from_messages([("human", "{question}")]) | chat
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(16)]

    async def run() -> list[Any]:
        calls = [chain.ainvoke({"question": q}, config={"callbacks": handlers}) for q in questions]
        return await asyncio.gather(*calls)

    messages = asyncio.run(run())
    for question, message in zip(questions, messages, strict=True):
        assert message.content == alone[question].text and _score(message) == pytest.approx(alone[question].score)
    for handler in handlers:
        records = list(handler.records.values())
        assert len(records) == 16 and len({r.parent_run_id for r in records}) == 16
        for record in records:
            assert record.score == pytest.approx(alone[record.prompt].score)
            assert record.status == ("flagged" if alone[record.prompt].hallucinated else "allowed")
        assert {r.prompt for r in handler.flagged.values()} == {q for q in QUESTIONS if alone[q].hallucinated}
    assert handlers[0].records.keys() == handlers[1].records.keys()


def test_callback_raise_error_on_a_whole_chain(chat: ChatSpillguard) -> None:
    handler = SpillguardCallbackHandler(raise_error=True)
    chain = ChatPromptTemplate.from_messages([("human", "{question}")]) | chat | StrOutputParser()
    assert chain.invoke({"question": RIGHT}, config={"callbacks": [handler]})
    with pytest.raises(HallucinationDetected) as caught:
        chain.invoke({"question": WRONG}, config={"callbacks": [handler]})
    assert caught.value.run_id in handler.flagged and "Bahia" in caught.value.evidence.answer


def test_retry_changes_a_flagged_answer(chat: ChatSpillguard, alone: dict[str, Any]) -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    guard = SpillguardRunnable(prompt | chat, policy=Policy(on_hallucination="retry", max_attempts=3))
    result = guard.invoke({"question": WRONG})
    data = result.response_metadata["spillguard"]
    attempts = data["guard"]["attempts"]
    assert len(attempts) >= 2 and attempts[0]["answer"] == alone[WRONG].answer
    assert len({a["answer"] for a in attempts}) == len(attempts), "each retry must change the answer"
    best = min(attempts, key=lambda a: a["score"])  # retry keeps the lowest score, maybe the first
    assert data["score"] == best["score"] and result.content == best["answer"]


def test_abstain_on_a_wrong_answer_invoke_and_stream(chat: ChatSpillguard, alone: dict[str, Any]) -> None:
    guard = SpillguardRunnable(chat, policy=Policy(on_hallucination="abstain", abstain_text="I am not sure."))
    result = guard.invoke(WRONG)
    assert (
        result.content == "I am not sure." and result.response_metadata["spillguard"]["answer"] == alone[WRONG].answer
    )
    assert [c.content for c in guard.stream(WRONG)] == ["I am not sure."]
    allowed = _merge(list(guard.stream(RIGHT)))
    assert allowed.content == alone[RIGHT].text and allowed.response_metadata["spillguard"]["action"] == "allow"


def test_with_retry_and_with_fallbacks_compose(chat: ChatSpillguard, alone: dict[str, Any]) -> None:
    strict = SpillguardRunnable(chat, raise_on_hallucination=True)
    retried = strict.with_retry(
        retry_if_exception_type=(HallucinationDetected,), stop_after_attempt=3, wait_exponential_jitter=False
    )
    try:
        answer = retried.invoke(WRONG).content
    except HallucinationDetected as error:  # all three attempts flagged: still evidence of change
        answer = error.evidence.answer
    assert answer != alone[WRONG].answer
    fallback = strict.with_fallbacks(
        [RunnableLambda(lambda _: AIMessage("I don't know."))], exceptions_to_handle=(HallucinationDetected,)
    )
    assert fallback.invoke(WRONG).content == "I don't know."
    raising_chat = ChatSpillguard(guard=chat.guard, max_tokens=MAX_TOKENS, raise_on_hallucination=True)
    with pytest.raises(HallucinationDetected) as caught:
        raising_chat.invoke(WRONG)
    assert caught.value.verdict is not None and caught.value.verdict.answer == alone[WRONG].answer


LIGHTHOUSE = "In which year was the Harrowgate Lighthouse built?"
RAG_MESSAGE = (
    "Answer the question using the context.\n\nContext:\nThe Harrowgate Lighthouse was built in 1911. It stands "
    f"on the northern cliffs of Wexley Bay and was automated in 1985.\n\nQuestion: {LIGHTHOUSE}"
)


def test_rag_question_marking_puts_the_span_on_the_answer(chat: ChatSpillguard) -> None:
    """Context and question in one human message: unmarked, every answer word is 'from the
    question' and the whole answer is scored; marked, the span is the year."""
    prompt = ChatPromptTemplate.from_messages([("human", "{message}")])
    chain = prompt | ChatSpillguard(guard=chat.guard, max_tokens=24)
    unmarked = chain.invoke({"message": RAG_MESSAGE}).response_metadata["spillguard"]
    assert "1911" in unmarked["answer"] and unmarked["span"]["text"] == unmarked["answer"]
    marked = SpillguardRunnable(chain, question_key="question").invoke({"message": RAG_MESSAGE, "question": LIGHTHOUSE})
    assert marked.response_metadata["spillguard"]["span"]["text"] == "1911"
    by_metadata = chain.invoke({"message": RAG_MESSAGE}, config={"metadata": {QUESTION_KEY: LIGHTHOUSE}})
    assert by_metadata.response_metadata["spillguard"]["span"]["text"] == "1911"
    streamed = _merge(list(chain.stream({"message": RAG_MESSAGE}, config={"metadata": {QUESTION_KEY: LIGHTHOUSE}})))
    assert streamed.response_metadata["spillguard"]["span"]["text"] == "1911"
    called = chat.invoke([HumanMessage(RAG_MESSAGE)], localize_in=LIGHTHOUSE)
    assert called.response_metadata["spillguard"]["span"]["text"] == "1911"
    assert marked.response_metadata["spillguard"]["score"] != pytest.approx(unmarked["score"])
