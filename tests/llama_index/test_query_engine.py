"""SpillguardQueryEngine, evaluator and instrumentation over real LlamaIndex objects and the real model.

The index uses a deterministic hashed bag-of-words embedding (fast, no download, see
:mod:`tests.llama_index.corpus`); the answers come from the bundled SmolLM2-135M-Instruct.
Thresholds are set explicitly where a test needs an answer to be flagged (``-1e9``) or allowed
(``1e9``), so the tests do not depend on the shipped calibration.
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import VectorStoreIndex
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import AsyncStreamingResponse, Response, StreamingResponse
from llama_index.core.llms import MockLLM
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.prompts.mixin import PromptMixinType
from llama_index.core.schema import QueryBundle

from guardrail import Calibration, InvalidInputError, Policy
from guardrail.calibration import GROUNDING_VETO
from guardrail.grounding import ungrounded
from llama_index_spillguard import (
    METADATA_KEY,
    RAG_ABSTAIN_TEXT,
    NoContextError,
    NotGuardedError,
    SpillguardEvaluator,
    SpillguardEventHandler,
    SpillguardLLM,
    SpillguardQueryEngine,
)
from tests.llama_index.corpus import ALLOW_ALL, DOCUMENTS, FLAG_ALL, Q_FERRY, Q_LIGHTHOUSE, HashEmbedding

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("closed_event_loop")]


@pytest.fixture(scope="module")
def inner(index: VectorStoreIndex, llm: SpillguardLLM) -> BaseQueryEngine:
    return index.as_query_engine(llm=llm, similarity_top_k=1)


@pytest.fixture(scope="module")
def flagged(inner: BaseQueryEngine) -> dict[str, Response]:
    """Each question answered once (greedy), flag policy: the reference answers."""
    engine = SpillguardQueryEngine(inner, "flag")
    return {q: engine.query(q) for q in (Q_LIGHTHOUSE, Q_FERRY)}


def _evidence(response: Any) -> dict[str, Any]:
    return response.metadata[METADATA_KEY]


def _assert_own_evidence(response: Response) -> None:
    """The verdict in the metadata belongs to this response's own LLM call."""
    evidence = _evidence(response)
    calls = evidence["attempts"][evidence["chosen"]]["llm_calls"]
    assert len(calls) == 1
    assert calls[0]["answer"] == evidence["answer"] == response.response


# -- flag ----------------------------------------------------------------------------------


def test_flag_puts_the_verdict_in_metadata(flagged: dict[str, Response]) -> None:
    response = flagged[Q_LIGHTHOUSE]
    evidence = _evidence(response)
    assert evidence["query"] == Q_LIGHTHOUSE
    assert evidence["action"] in ("allow", "flag")
    assert evidence["hallucinated"] == (evidence["score"] > evidence["threshold"])
    assert evidence["text"] == response.response
    assert evidence["verdict"]["answer"] == response.response
    assert response.source_nodes and "lighthouse" in response.source_nodes[0].get_content()
    assert len(evidence["attempts"]) == 1 and evidence["attempts"][0]["decoding"] == "greedy"
    assert set(response.metadata) - {METADATA_KEY} == {n.node.node_id for n in response.source_nodes}
    _assert_own_evidence(response)


def test_flag_marks_but_keeps_the_answer(inner: BaseQueryEngine, flagged: dict[str, Response]) -> None:
    response = SpillguardQueryEngine(inner, "flag", threshold=FLAG_ALL).query(Q_LIGHTHOUSE)
    assert response.response == flagged[Q_LIGHTHOUSE].response
    assert _evidence(response)["action"] == "flag" and _evidence(response)["hallucinated"] is True


def test_the_engine_scores_for_grounding_by_default(
    inner: BaseQueryEngine, flagged: dict[str, Response], llm: SpillguardLLM
) -> None:
    """The engine's calls get the grounding feature (the bundled default becomes the bundled
    RAG calibration); the LLM's own calibration is not touched; ``grounding=False`` opts out."""
    response = flagged[Q_LIGHTHOUSE]
    grounded = _evidence(response)
    assert grounded["calibration"] == Calibration.bundled("rag").describe()
    assert not llm.guard.calibration.grounded
    plain = _evidence(SpillguardQueryEngine(inner, "flag", grounding=False).query(Q_LIGHTHOUSE))
    assert plain["calibration"] == llm.guard.calibration.describe() and plain["answer"] == grounded["answer"]
    span = grounded["span"]["text"]
    assert ungrounded(span, response.source_nodes[0].get_content()) == 0.0  # the name is in the passage
    assert grounded["score"] == pytest.approx(plain["score"])
    with pytest.raises(InvalidInputError, match="`grounding` must be a bool"):
        SpillguardQueryEngine(inner, grounding="yes")  # type: ignore[arg-type]


# -- retry ---------------------------------------------------------------------------------


def test_retry_changes_the_answer_and_keeps_the_best(inner: BaseQueryEngine, flagged: dict[str, Response]) -> None:
    engine = SpillguardQueryEngine(inner, Policy(on_hallucination="retry", max_attempts=3), threshold=FLAG_ALL)
    response = engine.query(Q_LIGHTHOUSE)
    attempts = _evidence(response)["attempts"]
    assert [a["decoding"] for a in attempts] == [
        "greedy",
        "sample(temperature=0.8, seed=2)",
        "sample(temperature=0.8, seed=3)",
    ]
    assert attempts[0]["answer"] == flagged[Q_LIGHTHOUSE].response
    assert len({a["answer"] for a in attempts}) > 1
    scores = [a["score"] for a in attempts]
    assert _evidence(response)["chosen"] == scores.index(min(scores))
    assert response.response == attempts[_evidence(response)["chosen"]]["answer"]
    assert _evidence(response)["action"] == "flag"  # after_retries


def test_retry_stops_at_an_allowed_answer(inner: BaseQueryEngine) -> None:
    response = SpillguardQueryEngine(inner, "retry", threshold=ALLOW_ALL).query(Q_FERRY)
    assert len(_evidence(response)["attempts"]) == 1
    assert _evidence(response)["action"] == "allow"


def test_feedback_retry_keeps_retrieval_on_the_original_query(inner: BaseQueryEngine) -> None:
    policy = Policy(on_hallucination="retry", max_attempts=2, retry_strategy="feedback", after_retries="abstain")
    response = SpillguardQueryEngine(inner, policy, threshold=FLAG_ALL).query(Q_FERRY)
    attempts = _evidence(response)["attempts"]
    assert attempts[1]["decoding"].endswith("+ feedback")
    assert response.response == "I don't know."
    assert "Skarn" in response.source_nodes[0].get_content()


# -- abstain -------------------------------------------------------------------------------


def test_abstain_replaces_the_answer_and_keeps_source_nodes(
    inner: BaseQueryEngine, flagged: dict[str, Response]
) -> None:
    response = SpillguardQueryEngine(inner, "abstain", threshold=FLAG_ALL).query(Q_FERRY)
    assert response.response == RAG_ABSTAIN_TEXT
    evidence = _evidence(response)
    assert evidence["action"] == "abstain" and evidence["text"] == RAG_ABSTAIN_TEXT
    assert evidence["answer"] == flagged[Q_FERRY].response
    assert [n.node.node_id for n in response.source_nodes] == [n.node.node_id for n in flagged[Q_FERRY].source_nodes]


def test_abstain_lets_an_allowed_answer_through(inner: BaseQueryEngine, flagged: dict[str, Response]) -> None:
    response = SpillguardQueryEngine(inner, "abstain", threshold=ALLOW_ALL).query(Q_FERRY)
    assert response.response == flagged[Q_FERRY].response


# -- async and concurrency -----------------------------------------------------------------


def test_aquery_matches_query(inner: BaseQueryEngine, flagged: dict[str, Response]) -> None:
    response = asyncio.run(SpillguardQueryEngine(inner, "abstain", threshold=FLAG_ALL).aquery(Q_LIGHTHOUSE))
    assert response.response == RAG_ABSTAIN_TEXT
    assert _evidence(response)["answer"] == flagged[Q_LIGHTHOUSE].response


def test_concurrent_async_queries_do_not_mix_verdicts(inner: BaseQueryEngine, flagged: dict[str, Response]) -> None:
    engine = SpillguardQueryEngine(inner, "flag")

    async def run() -> list[Any]:
        return await asyncio.gather(engine.aquery(Q_LIGHTHOUSE), engine.aquery(Q_FERRY))

    for question, response in zip((Q_LIGHTHOUSE, Q_FERRY), asyncio.run(run()), strict=True):
        assert response.response == flagged[question].response
        assert _evidence(response)["score"] == pytest.approx(_evidence(flagged[question])["score"])
        _assert_own_evidence(response)


def test_concurrent_threaded_queries_do_not_mix_verdicts(inner: BaseQueryEngine, flagged: dict[str, Response]) -> None:
    engine = SpillguardQueryEngine(inner, "flag")
    with ThreadPoolExecutor(max_workers=2) as pool:
        responses = list(pool.map(engine.query, [Q_FERRY, Q_LIGHTHOUSE]))
    for question, response in zip((Q_FERRY, Q_LIGHTHOUSE), responses, strict=True):
        assert response.response == flagged[question].response
        _assert_own_evidence(response)


def test_streaming_engine_stays_streaming_and_is_gated_before_anything_is_shown(
    index: VectorStoreIndex, llm: SpillguardLLM, flagged: dict[str, Response]
) -> None:
    streaming = index.as_query_engine(llm=llm, similarity_top_k=1, streaming=True)
    response = SpillguardQueryEngine(streaming, "abstain", threshold=FLAG_ALL).query(Q_FERRY)
    assert isinstance(response, StreamingResponse)
    assert _evidence(response)["answer"] == flagged[Q_FERRY].response  # judged before the first token
    assert list(response.response_gen) == [RAG_ABSTAIN_TEXT]


def test_flagging_stream_passes_tokens_through_and_judges_at_the_end(
    index: VectorStoreIndex, llm: SpillguardLLM, flagged: dict[str, Response]
) -> None:
    streaming = index.as_query_engine(llm=llm, similarity_top_k=1, streaming=True)
    response = SpillguardQueryEngine(streaming, "flag", threshold=FLAG_ALL).query(Q_FERRY)
    assert isinstance(response, StreamingResponse)
    assert METADATA_KEY not in (response.metadata or {})  # nothing judged before the stream ends
    tokens = list(response.response_gen)
    assert len(tokens) > 3 and "".join(tokens).strip() == flagged[Q_FERRY].response
    evidence = _evidence(response)
    assert evidence["action"] == "flag" and evidence["answer"] == flagged[Q_FERRY].response
    assert evidence["attempts"][0]["llm_calls"][0]["kind"] in ("stream_chat", "stream_complete")
    assert response.get_response().metadata[METADATA_KEY] == evidence
    assert "Skarn" in response.source_nodes[0].get_content()


def test_async_flagging_stream_is_judged_at_the_end(
    index: VectorStoreIndex, llm: SpillguardLLM, flagged: dict[str, Response]
) -> None:
    streaming = index.as_query_engine(llm=llm, similarity_top_k=1, streaming=True)

    async def run() -> tuple[list[str], Any]:
        response = await SpillguardQueryEngine(streaming, "flag").aquery(Q_FERRY)
        assert isinstance(response, AsyncStreamingResponse)
        return [t async for t in response.async_response_gen()], response

    tokens, response = asyncio.run(run())
    assert len(tokens) > 3 and "".join(tokens).strip() == flagged[Q_FERRY].response
    assert _evidence(response)["answer"] == flagged[Q_FERRY].response
    assert _evidence(response)["action"] == _evidence(flagged[Q_FERRY])["action"]


def test_async_abstaining_stream_yields_the_decided_text(index: VectorStoreIndex, llm: SpillguardLLM) -> None:
    streaming = index.as_query_engine(llm=llm, similarity_top_k=1, streaming=True)

    async def run() -> list[str]:
        response = await SpillguardQueryEngine(streaming, "abstain", threshold=FLAG_ALL).aquery(Q_FERRY)
        assert isinstance(response, AsyncStreamingResponse) and _evidence(response)["action"] == "abstain"
        return [t async for t in response.async_response_gen()]

    assert asyncio.run(run()) == [RAG_ABSTAIN_TEXT]


def test_a_chat_engine_is_pointed_to_the_chat_wrapper(index: VectorStoreIndex, llm: SpillguardLLM) -> None:
    chat_engine = index.as_chat_engine(chat_mode="context", llm=llm, memory=ChatMemoryBuffer.from_defaults())
    with pytest.raises(InvalidInputError, match="SpillguardChatEngine"):
        SpillguardQueryEngine(chat_engine)  # type: ignore[arg-type]


# -- errors --------------------------------------------------------------------------------


def test_non_guarded_llm_is_refused_at_construction(index: VectorStoreIndex) -> None:
    with pytest.raises(NotGuardedError, match="MockLLM.*SpillguardLLM"):
        SpillguardQueryEngine(index.as_query_engine(llm=MockLLM()))


class _UnguardedEngine(BaseQueryEngine):
    """An engine that hides its LLM: the error can only come at query time."""

    def __init__(self, index: VectorStoreIndex) -> None:
        self._retriever = index.as_retriever(similarity_top_k=1)
        super().__init__(callback_manager=None)

    def _get_prompt_modules(self) -> PromptMixinType:
        return {}

    def _query(self, query_bundle: QueryBundle) -> Response:
        nodes = self._retriever.retrieve(query_bundle)
        return Response(MockLLM().complete(query_bundle.query_str).text, source_nodes=nodes)

    async def _aquery(self, query_bundle: QueryBundle) -> Response:
        return self._query(query_bundle)


def test_non_guarded_llm_is_refused_at_query_time(index: VectorStoreIndex) -> None:
    engine = SpillguardQueryEngine(_UnguardedEngine(index))
    with pytest.raises(NotGuardedError, match="without any SpillguardLLM call"):
        engine.query(Q_FERRY)
    with pytest.raises(NotGuardedError):
        asyncio.run(engine.aquery(Q_FERRY))


@pytest.mark.parametrize("query", ["", "   \n"])
def test_empty_query_is_rejected(inner: BaseQueryEngine, query: str) -> None:
    with pytest.raises(InvalidInputError, match="`query` must contain a non-space character"):
        SpillguardQueryEngine(inner).query(query)


def test_empty_index_gives_a_clear_error(llm: SpillguardLLM) -> None:
    empty = VectorStoreIndex.from_documents([], embed_model=HashEmbedding())
    with pytest.raises(NoContextError, match="no source node.*is the index empty"):
        SpillguardQueryEngine(empty.as_query_engine(llm=llm)).query(Q_FERRY)


def test_bad_arguments_are_named(inner: BaseQueryEngine) -> None:
    with pytest.raises(InvalidInputError, match="`query_engine` must be"):
        SpillguardQueryEngine("engine")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="`policy` must be"):
        SpillguardQueryEngine(inner, 3)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="`policy` must be one of"):
        SpillguardQueryEngine(inner, "ignore")
    with pytest.raises(InvalidInputError, match="`threshold` must be a finite number"):
        SpillguardQueryEngine(inner, threshold=math.nan)


def test_prompts_of_the_wrapped_engine_are_exposed(inner: BaseQueryEngine) -> None:
    prompts = SpillguardQueryEngine(inner).get_prompts()
    assert prompts and all(key.startswith("query_engine:") for key in prompts)


# -- instrumentation and evaluator ---------------------------------------------------------


def test_handler_shows_which_call_of_a_query_was_flagged(
    inner: BaseQueryEngine, event_handler: SpillguardEventHandler
) -> None:
    engine = SpillguardQueryEngine(inner, Policy(on_hallucination="retry", max_attempts=2), threshold=FLAG_ALL)
    response = engine.query(Q_FERRY)
    (query,) = event_handler.queries
    assert query.query == Q_FERRY and query.action == "flag" and len(query.query_ids) == 2
    calls = event_handler.calls_of(query)
    assert [c.answer for c in calls] == [a["answer"] for a in _evidence(response)["attempts"]]
    assert all(c.span_id for c in calls)
    assert [c.query_id for c in calls] == list(query.query_ids)


def test_evaluator_reads_the_metadata(flagged: dict[str, Response]) -> None:
    response = flagged[Q_LIGHTHOUSE]
    result = SpillguardEvaluator().evaluate_response(query=Q_LIGHTHOUSE, response=response)
    evidence = _evidence(response)
    assert result.passing is (not evidence["hallucinated"])
    assert result.score == pytest.approx(evidence["score"])
    assert "threshold" in (result.feedback or "")
    strict = asyncio.run(
        SpillguardEvaluator(threshold=FLAG_ALL).aevaluate_response(query=Q_LIGHTHOUSE, response=response)
    )
    assert strict.passing is False


def test_evaluator_scores_plain_text_teacher_forced(llm: SpillguardLLM) -> None:
    evaluator = SpillguardEvaluator(llm)
    result = evaluator.evaluate(query="Who built it?", response="Miriam Okafor built it.", contexts=[DOCUMENTS[0]])
    assert result.score is not None and math.isfinite(result.score)
    assert result.passing is (result.score <= llm.guard.calibration.threshold)
    with pytest.raises(InvalidInputError, match="pass `llm=`"):
        SpillguardEvaluator().evaluate(query="q", response="a")


def test_the_evaluator_grounds_answers_in_the_contexts(llm: SpillguardLLM) -> None:
    kwargs = {"query": "Who built the lighthouse?", "contexts": [DOCUMENTS[0]]}
    grounded, plain = SpillguardEvaluator(llm), SpillguardEvaluator(llm, grounding=False)
    name = grounded.evaluate(response="Miriam Okafor built it.", **kwargs)
    assert name.score == pytest.approx(plain.evaluate(response="Miriam Okafor built it.", **kwargs).score)
    invented = grounded.evaluate(response="John Smeaton built it.", **kwargs)
    baseline = plain.evaluate(response="John Smeaton built it.", **kwargs)
    assert invented.score == pytest.approx(baseline.score + GROUNDING_VETO) and not invented.passing
    with pytest.raises(InvalidInputError, match="`grounding` must be a bool"):
        SpillguardEvaluator(llm, grounding="no")  # type: ignore[arg-type]
    # Bug: a single string was read as one passage per character, non-text passages were a raw TypeError.
    for bad in ("Miriam Okafor built it.", [None], [1, "x"], [b"Miriam Okafor"]):
        with pytest.raises(InvalidInputError, match="`contexts` must be a list of str"):
            grounded.evaluate(query="Who built the lighthouse?", response="Miriam Okafor built it.", contexts=bad)


def test_a_nested_scope_keeps_the_enclosing_grounding() -> None:
    from llama_index_spillguard.scope import current_scope, query_scope

    with query_scope("outer", grounded=True), query_scope("inner") as inner:
        assert inner.grounded and current_scope() is inner
    with query_scope("outer"), query_scope("inner") as inner:
        assert not inner.grounded
