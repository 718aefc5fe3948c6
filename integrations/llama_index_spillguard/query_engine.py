"""``GuardedQueryEngine``: gate the answers of any query engine built on ``SpilledEnergyLLM``.

>>> engine = GuardedQueryEngine(index.as_query_engine(llm=SpilledEnergyLLM.default()), "abstain")
>>> response = engine.query("Who founded the lighthouse society?")
>>> response.response, response.metadata["spilled_energy"]["action"]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import llama_index.core.instrumentation as instrument
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.callbacks import CallbackManager
from llama_index.core.prompts.mixin import PromptMixinType
from llama_index.core.schema import QueryBundle

from guardrail import Action, InvalidInputError, Policy, Verdict
from llama_index_spillguard.errors import NoContextError, NotGuardedError
from llama_index_spillguard.evidence import EVIDENCE_KEY
from llama_index_spillguard.instrumentation import GuardedQueryEvent
from llama_index_spillguard.llm import SpilledEnergyLLM
from llama_index_spillguard.scope import QueryScope, query_scope

__all__ = ["RAG_ABSTAIN_TEXT", "GuardedQueryEngine"]

RAG_ABSTAIN_TEXT = "The documents do not answer this question."
"""Default reply of an abstaining :class:`GuardedQueryEngine`."""

dispatcher = instrument.get_dispatcher(__name__)


@dataclass(frozen=True)
class _Plan:
    """How one attempt at a query differs from the first."""

    bundle: QueryBundle
    decoding: dict[str, Any]
    seed: int | None
    label: str


@dataclass(frozen=True)
class _Answer:
    """One attempt's synthesized response and the verdict of its final LLM call."""

    response: Response
    verdict: Verdict
    scope: QueryScope
    label: str

    @property
    def score(self) -> float:
        return self.verdict.score


class GuardedQueryEngine(BaseQueryEngine):
    """Wraps a query engine whose LLM is a :class:`SpilledEnergyLLM` and gates its answers.

    Each attempt runs the wrapped engine inside a query scope, so the LLM records the verdicts
    of the calls made for this query only (concurrent queries, in threads or asyncio tasks, do
    not mix). The answer's verdict is that of the LLM call that produced the final text (the
    last call of a refine chain, the root of a tree summary). Then, by ``policy``:

    - ``"flag"``: the answer is returned; ``metadata["spilled_energy"]`` says whether it scored
      above the threshold;
    - ``"retry"``: the query is answered again, up to ``policy.max_attempts`` times in all, each
      retry sampled with ``policy.retry_temperature`` and seed ``policy.seed + attempt``
      (strategy ``"feedback"`` also appends ``policy.feedback`` and the previous answer to the
      query text, while retrieval still embeds the original query); the lowest-scoring answer
      is kept and, if still above the threshold, ``policy.after_retries`` applies;
    - ``"abstain"``: ``policy.abstain_text`` replaces the answer; the source nodes and the
      evidence are kept.

    Args:
        query_engine: any query engine whose answers come from a :class:`SpilledEnergyLLM`.
        policy: a :class:`guardrail.Policy`, or its ``on_hallucination`` as a string (then
            the abstention text is :data:`RAG_ABSTAIN_TEXT`); default flag.
        threshold: override the LLM calibration's threshold.
        callback_manager: default: the wrapped engine's.

    Raises:
        NotGuardedError: the engine's LLM is not a :class:`SpilledEnergyLLM` (at construction
            when the engine exposes its synthesizer, else at query time).
        NoContextError: nothing was retrieved (e.g. an empty index), so nothing was answered.
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
        if threshold is not None and not (isinstance(threshold, (int, float)) and math.isfinite(threshold)):
            raise InvalidInputError(f"`threshold` must be a finite number, got {threshold!r}")
        self._query_engine = query_engine
        self._policy = _make_policy(policy)
        self._threshold = None if threshold is None else float(threshold)
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
        query = _check_query(query_bundle)
        answers: list[_Answer] = []
        for attempt in range(1, self._policy.attempts + 1):
            plan = self._plan(attempt, query_bundle, answers)
            with query_scope(query, decoding=plan.decoding, seed=plan.seed) as scope:
                response = _settle(self._query_engine.query(plan.bundle))
            answers.append(_judge(query, response, scope, plan.label))
            if not self._above(answers[-1]):
                break
        return self._decide(query, answers)

    @dispatcher.span
    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        query = _check_query(query_bundle)
        answers: list[_Answer] = []
        for attempt in range(1, self._policy.attempts + 1):
            plan = self._plan(attempt, query_bundle, answers)
            with query_scope(query, decoding=plan.decoding, seed=plan.seed) as scope:
                response = await _asettle(await self._query_engine.aquery(plan.bundle))
            answers.append(_judge(query, response, scope, plan.label))
            if not self._above(answers[-1]):
                break
        return self._decide(query, answers)

    # -- steps ---------------------------------------------------------------------------

    def _plan(self, attempt: int, bundle: QueryBundle, answers: list[_Answer]) -> _Plan:
        change = self._policy.retry_decoding(attempt)
        if not change:
            return _Plan(bundle, {}, None, "greedy")
        decoding = {"do_sample": True, "temperature": change["temperature"], "top_k": 0, "top_p": 1.0}
        label = f"sample(temperature={change['temperature']}, seed={change['seed']})"
        if "feedback" in change:
            text = f"{bundle.query_str}\n\n{change['feedback']}\nYour previous answer was: {answers[-1].verdict.answer}"
            bundle = QueryBundle(
                query_str=text,
                image_path=bundle.image_path,
                custom_embedding_strs=bundle.embedding_strs,
                embedding=bundle.embedding,
            )
            label += " + feedback"
        return _Plan(bundle, decoding, change["seed"], label)

    def _threshold_of(self, answer: _Answer) -> float:
        return answer.verdict.threshold if self._threshold is None else self._threshold

    def _above(self, answer: _Answer) -> bool:
        return answer.score > self._threshold_of(answer)

    def _decide(self, query: str, answers: list[_Answer]) -> Response:
        chosen = min(range(len(answers)), key=lambda i: answers[i].score)
        best = answers[chosen]
        threshold = self._threshold_of(best)
        action = self._policy.decide(best.score, threshold)
        text = self._policy.abstain_text if action is Action.ABSTAIN else str(best.response.response)
        evidence = _evidence(query, text, action, threshold, answers, chosen)
        dispatcher.event(
            GuardedQueryEvent(
                query=query,
                action=action.value,
                score=evidence["score"],
                threshold=threshold,
                attempts=len(answers),
                query_ids=[a.scope.id for a in answers],
            )
        )
        metadata = {**(best.response.metadata or {}), EVIDENCE_KEY: evidence}
        return Response(response=text, source_nodes=list(best.response.source_nodes), metadata=metadata)


def _make_policy(policy: Policy | str | None) -> Policy:
    if policy is None:
        return Policy(abstain_text=RAG_ABSTAIN_TEXT)
    if isinstance(policy, str):
        return Policy(on_hallucination=policy, abstain_text=RAG_ABSTAIN_TEXT)  # type: ignore[arg-type]
    if not isinstance(policy, Policy):
        raise InvalidInputError(
            f"`policy` must be a guardrail.Policy or one of 'flag', 'retry', 'abstain', got {policy!r}"
        )
    return policy


def _check_llm(query_engine: BaseQueryEngine) -> None:
    """Fail early when the engine exposes a synthesizer whose LLM is not guarded."""
    synthesizer = getattr(query_engine, "_response_synthesizer", None)
    llm = getattr(synthesizer, "_llm", None)
    if llm is not None and not isinstance(llm, SpilledEnergyLLM):
        raise NotGuardedError(
            f"`query_engine` answers with {type(llm).__name__}, which records no spilled-energy "
            "verdict; build it on a SpilledEnergyLLM, e.g. "
            "`index.as_query_engine(llm=SpilledEnergyLLM.default())`"
        )


def _check_query(bundle: QueryBundle) -> str:
    query = bundle.query_str
    if not isinstance(query, str) or not query.strip():
        raise InvalidInputError(f"`query` must contain a non-space character, got {query!r}")
    return query


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


def _judge(query: str, response: Response, scope: QueryScope, label: str) -> _Answer:
    """Find the verdict of the LLM call whose output became ``response``."""
    records = scope.records
    if not records:
        if not response.source_nodes:
            raise NoContextError(
                f"the query engine retrieved no source node for query {query!r}, so it generated no "
                f"answer to judge (it returned {response.response!r}); is the index empty?"
            )
        raise NotGuardedError(
            f"the query engine answered {query!r} without any SpilledEnergyLLM call, so the answer "
            "cannot be judged; build the engine (and its synthesizer) on a SpilledEnergyLLM"
        )
    text = str(response.response or "").strip()
    matching = [r for r in records if r.verdict.text.strip() == text]
    record = (matching or list(records))[-1]
    return _Answer(response, record.verdict, scope, label)


def _evidence(
    query: str, text: str, action: Action, threshold: float, answers: list[_Answer], chosen: int
) -> dict[str, Any]:
    best = answers[chosen]
    return {
        "query": query,
        "action": action.value,
        "hallucinated": action is not Action.ALLOW,
        "score": _finite(best.score),
        "threshold": threshold,
        "answer": str(best.response.response),
        "text": text,
        "span": best.verdict.span.to_dict(),
        "calibration": best.verdict.calibration,
        "chosen": chosen,
        "attempts": [
            {
                "answer": str(a.response.response),
                "score": _finite(a.score),
                "hallucinated": a.score > threshold,
                "decoding": a.label,
                "query_id": a.scope.id,
                "llm_calls": [r.summary() for r in a.scope.records],
            }
            for a in answers
        ],
        "verdict": best.verdict.to_dict(),
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
