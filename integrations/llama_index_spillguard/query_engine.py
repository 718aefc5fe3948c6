"""``SpillguardQueryEngine``: gate the answers of any query engine built on ``SpillguardLLM``.

>>> engine = SpillguardQueryEngine(index.as_query_engine(llm=SpillguardLLM.default()), "abstain")
>>> response = engine.query("Who founded the lighthouse society?")
>>> response.response, response.metadata["spillguard"]["action"]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import RESPONSE_TYPE, AsyncStreamingResponse, Response, StreamingResponse
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]  # re-exported, no __all__
from llama_index.core.prompts.mixin import PromptMixinType
from llama_index.core.schema import QueryBundle

from guardrail import (
    METADATA_KEY,
    Action,
    Decision,
    Evidence,
    InvalidInputError,
    Judged,
    NoContextError,
    NotGuardedError,
    Policy,
    RetryStep,
    UnscoredResponseError,
    Verdict,
    arun_attempts,
    run_attempts,
)
from guardrail.policy import as_policy
from guardrail.validation import check_finite, check_text, finite_or_none
from llama_index_spillguard.instrumentation import SpillguardQueryEvent
from llama_index_spillguard.llm import SpillguardLLM
from llama_index_spillguard.scope import QueryScope, query_scope

__all__ = ["RAG_ABSTAIN_TEXT", "SpillguardQueryEngine"]

RAG_ABSTAIN_TEXT = "The documents do not answer this question."
"""Default reply of an abstaining :class:`SpillguardQueryEngine`."""

dispatcher = get_dispatcher(__name__)


@dataclass(frozen=True)
class _Answer:
    """One attempt's synthesized response, the verdict of the LLM call that produced it, its scope."""

    response: Response
    verdict: Verdict
    scope: QueryScope


class SpillguardQueryEngine(BaseQueryEngine):
    """Wraps a query engine whose LLM is a :class:`SpillguardLLM` and gates its answers.

    The core's attempt loop (:func:`guardrail.run_attempts`) runs the wrapped engine once per
    attempt, inside a query scope, so the LLM records the verdicts of the calls made for this
    attempt only (concurrent queries, in threads or asyncio tasks, do not mix) and makes the
    attempt's :class:`guardrail.RetryStep`. The answer's verdict is that of the LLM call whose
    output is exactly the response text (the last call of a refine chain, the root of a tree
    summary); an engine that returns text no guarded call produced (``response_mode=
    "accumulate"``, say) is refused with :class:`guardrail.UnscoredResponseError`. Then, by
    ``policy``:

    - ``"flag"``: the answer is returned; ``metadata["spillguard"]`` says whether it scored
      above the threshold;
    - ``"retry"``: the query is answered again, up to ``policy.max_attempts`` times in all, each
      retry sampled with ``policy.retry_temperature`` and seed ``policy.seed + attempt``
      (strategy ``"feedback"`` also continues the LLM's conversation with the previous answer
      and ``policy.feedback``, exactly as the guard does; retrieval still uses the original
      query); the first answer at or below the threshold is kept, else the lowest-scoring one,
      and if still above the threshold ``policy.after_retries`` applies;
    - ``"abstain"``: ``policy.abstain_text`` replaces the answer; the source nodes and the
      evidence are kept.

    Args:
        query_engine: any query engine whose answers come from a :class:`SpillguardLLM`.
        policy: a :class:`guardrail.Policy`, or its ``on_hallucination`` as a string (then
            the abstention text is :data:`RAG_ABSTAIN_TEXT`); default flag.
        threshold: override the LLM calibration's threshold.
        callback_manager: default: the wrapped engine's.

    Raises:
        NotGuardedError: the engine's LLM is not a :class:`SpillguardLLM` (at construction
            when the engine exposes its synthesizer, else at query time).
        NoContextError: nothing was retrieved (e.g. an empty index), so nothing was answered.
        UnscoredResponseError: the response text is not the output of a guarded call.
        InvalidInputError: empty query.
    """

    def __init__(
        self,
        query_engine: BaseQueryEngine,
        policy: Policy | str | None = None,
        *,
        threshold: float | None = None,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        if not isinstance(query_engine, BaseQueryEngine):
            raise InvalidInputError(
                "`query_engine` must be a LlamaIndex BaseQueryEngine, "
                f"got {type(query_engine).__name__}: {query_engine!r}"
            )
        _check_llm(query_engine)
        self._query_engine = query_engine
        self._policy = as_policy(policy, abstain_text=RAG_ABSTAIN_TEXT)
        self._threshold = None if threshold is None else check_finite("threshold", threshold)
        super().__init__(callback_manager or getattr(query_engine, "callback_manager", None))

    @property
    def policy(self) -> Policy:
        """What happens to an answer above the threshold."""
        return self._policy

    @property
    def query_engine(self) -> BaseQueryEngine:
        """The wrapped engine."""
        return self._query_engine

    def _get_prompt_modules(self) -> PromptMixinType:
        return {"query_engine": self._query_engine}

    @dispatcher.span
    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        query = check_text("query", query_bundle.query_str)

        def attempt(step: RetryStep) -> Judged[_Answer]:
            with query_scope(query, step=step) as scope:
                response = _settle(self._query_engine.query(query_bundle))
            return self._judged(query, response, scope, step)

        return self._decide(query, run_attempts(self._policy, attempt))

    @dispatcher.span
    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        query = check_text("query", query_bundle.query_str)

        async def attempt(step: RetryStep) -> Judged[_Answer]:
            with query_scope(query, step=step) as scope:
                response = await _asettle(await self._query_engine.aquery(query_bundle))
            return self._judged(query, response, scope, step)

        return self._decide(query, await arun_attempts(self._policy, attempt))

    # -- steps ---------------------------------------------------------------------------

    def _judged(self, query: str, response: Response, scope: QueryScope, step: RetryStep) -> Judged[_Answer]:
        verdict = _verdict_of(query, response, scope)
        threshold = verdict.threshold if self._threshold is None else self._threshold
        return Judged(_Answer(response, verdict, scope), verdict.answer, verdict.score, threshold, step)

    def _decide(self, query: str, decision: Decision[_Answer]) -> Response:
        best = decision.best
        evidence = _evidence(query, decision, self._policy)
        dispatcher.event(
            SpillguardQueryEvent(
                query=query, action=decision.action.value, score=finite_or_none(best.score),
                threshold=best.threshold, attempts=len(decision.attempts),
                query_ids=[j.result.scope.id for j in decision.attempts],
            )
        )  # fmt: skip
        response = best.result.response
        metadata = {**(response.metadata or {}), METADATA_KEY: evidence}
        return Response(response=decision.text, source_nodes=list(response.source_nodes), metadata=metadata)


def _check_llm(query_engine: BaseQueryEngine) -> None:
    """Fail early when the engine exposes a synthesizer whose LLM is not guarded."""
    synthesizer = getattr(query_engine, "_response_synthesizer", None)
    llm = getattr(synthesizer, "_llm", None)
    if llm is not None and not isinstance(llm, SpillguardLLM):
        raise NotGuardedError(
            f"`query_engine` answers with {type(llm).__name__}, which records no spillguard "
            "verdict; build it on a SpillguardLLM, e.g. "
            "`index.as_query_engine(llm=SpillguardLLM.default())`"
        )


def _settle(response: RESPONSE_TYPE) -> Response:
    """A plain :class:`Response`, draining a stream (inside the query's scope)."""
    if isinstance(response, StreamingResponse):
        return response.get_response()
    if isinstance(response, AsyncStreamingResponse):
        raise InvalidInputError("an async streaming response needs `aquery`, got one from `query`")
    if not isinstance(response, Response):
        raise InvalidInputError(f"the wrapped engine must return a Response, got {type(response).__name__}")
    return response


async def _asettle(response: RESPONSE_TYPE) -> Response:
    if isinstance(response, AsyncStreamingResponse):
        return await response.get_response()
    return _settle(response)


def _verdict_of(query: str, response: Response, scope: QueryScope) -> Verdict:
    """The verdict of the LLM call whose output is exactly the response text."""
    records = scope.records
    if not records:
        if not response.source_nodes:
            raise NoContextError(
                f"the query engine retrieved no source node for query {query!r}, so it generated no "
                f"answer to judge (it returned {response.response!r}); is the index empty?"
            )
        raise NotGuardedError(
            f"the query engine answered {query!r} without any SpillguardLLM call, so the answer "
            "cannot be judged; build the engine (and its synthesizer) on a SpillguardLLM"
        )
    text = str(response.response or "").strip()
    matching = [r for r in records if r.verdict.text.strip() == text]
    if not matching:
        raise UnscoredResponseError(
            f"the query engine's answer to {query!r}",
            f"its text {text[:60]!r} is not the output of any of its {len(records)} guarded LLM call(s) (an engine "
            "that joins or rewrites answers, such as response_mode='accumulate'); use a mode whose answer is one "
            "call's output ('compact', 'refine', 'tree_summarize')",
        )
    return matching[-1].verdict


def _evidence(query: str, decision: Decision[_Answer], policy: Policy) -> dict[str, Any]:
    """The chosen call's sealed evidence, updated with the engine's decision and every attempt."""
    best = decision.best
    base = Evidence.from_dict(best.result.verdict.to_dict(per_token=False))
    return base.updated(
        query=query,
        action=decision.action.value,
        hallucinated=decision.action is not Action.ALLOW,
        threshold=best.threshold,
        text=decision.text,
        chosen=decision.chosen,
        policy=policy.on_hallucination,
        attempts=[
            {
                "answer": j.answer,
                "score": finite_or_none(j.score),
                "hallucinated": not j.passed,
                "decoding": j.step.label(),
                "query_id": j.result.scope.id,
                "llm_calls": [r.summary() for r in j.result.scope.records],
            }
            for j in decision.attempts
        ],
        verdict=best.result.verdict.to_dict(per_token=False),
    )
