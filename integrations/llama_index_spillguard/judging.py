"""Judging an engine's answer: which guarded LLM call produced it, and the evidence of a decision.

A query or chat engine may call its LLM several times for one answer (a condensing step, a
refine chain, a tree summary). The answer is judged by the verdict of the call whose output is
exactly the answer text; an answer no guarded call produced is refused, never allowed. Both
:class:`~llama_index_spillguard.SpillguardQueryEngine` and
:class:`~llama_index_spillguard.SpillguardChatEngine` judge and report through this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]  # re-exported, no __all__

from guardrail import (
    Action,
    Decision,
    Evidence,
    Judged,
    NoContextError,
    NotGuardedError,
    Policy,
    RetryStep,
    UnscoredResponseError,
    Verdict,
)
from guardrail.validation import finite_or_none
from llama_index_spillguard.instrumentation import SpillguardQueryEvent
from llama_index_spillguard.llm import SpillguardLLM
from llama_index_spillguard.scope import QueryScope

__all__ = ["Answer", "check_llm", "evidence", "judged", "report", "verdict_of"]

R = TypeVar("R")

dispatcher = get_dispatcher(__name__)


@dataclass(frozen=True)
class Answer(Generic[R]):
    """One attempt's engine response, the verdict of the LLM call that produced it, its scope."""

    response: R
    verdict: Verdict
    scope: QueryScope


def check_llm(engine: object, argument: str) -> None:
    """Fail early when ``engine`` (or its synthesizer, or its query engine) answers with an LLM
    that is not a :class:`SpillguardLLM`. Engines that expose none of these are checked at
    query time instead (no guarded call recorded: :class:`guardrail.NotGuardedError`)."""
    synthesizer = getattr(engine, "_response_synthesizer", None)
    for owner in (engine, synthesizer):
        llm = getattr(owner, "_llm", None)
        if llm is not None and not isinstance(llm, SpillguardLLM):
            raise NotGuardedError(
                f"`{argument}` answers with {type(llm).__name__}, which records no spillguard verdict; "
                "build it on a SpillguardLLM, e.g. `index.as_query_engine(llm=SpillguardLLM.default())` "
                "or `index.as_chat_engine(llm=SpillguardLLM.default())`"
            )
    inner = getattr(engine, "_query_engine", None)
    if inner is not None:
        check_llm(inner, argument)


def verdict_of(query: str, text: str, source_nodes: Sequence[Any], scope: QueryScope) -> Verdict:
    """The verdict of the LLM call, recorded in ``scope``, whose output is exactly ``text``.

    Raises:
        NoContextError: no call was made and nothing was retrieved (an empty index).
        NotGuardedError: no guarded call was made.
        UnscoredResponseError: ``text`` is not the output of any guarded call.
    """
    records = scope.records
    if not records:
        if not source_nodes:
            raise NoContextError(
                f"the engine retrieved no source node for {query!r}, so it generated no answer to "
                f"judge (it returned {text!r}); is the index empty?"
            )
        raise NotGuardedError(
            f"the engine answered {query!r} without any SpillguardLLM call, so the answer cannot "
            "be judged; build the engine (and its synthesizer) on a SpillguardLLM"
        )
    stripped = text.strip()
    matching = [r for r in records if r.verdict.text.strip() == stripped]
    if not matching:
        raise UnscoredResponseError(
            f"the engine's answer to {query!r}",
            f"its text {stripped[:60]!r} is not the output of any of its {len(records)} guarded LLM call(s) (an "
            "engine that joins or rewrites answers, such as response_mode='accumulate'); use a mode whose answer is "
            "one call's output ('compact', 'refine', 'tree_summarize')",
        )
    return matching[-1].verdict


def judged(
    query: str,
    response: R,
    text: str,
    source_nodes: Sequence[Any],
    scope: QueryScope,
    step: RetryStep,
    threshold: float | None,
) -> Judged[Answer[R]]:
    """One attempt, judged by the verdict of the call that produced ``text`` (``threshold``
    overrides the calibration's)."""
    verdict = verdict_of(query, text, source_nodes, scope)
    limit = verdict.threshold if threshold is None else threshold
    return Judged(Answer(response, verdict, scope), verdict.answer, verdict.score, limit, step)


def evidence(query: str, decision: Decision[Answer[Any]], policy: Policy) -> dict[str, Any]:
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


def report(query: str, decision: Decision[Answer[Any]], policy: Policy) -> dict[str, Any]:
    """Emit the :class:`SpillguardQueryEvent` of ``decision`` and return its evidence."""
    best = decision.best
    dispatcher.event(
        SpillguardQueryEvent(
            query=query, action=decision.action.value, score=finite_or_none(best.score),
            threshold=best.threshold, attempts=len(decision.attempts),
            query_ids=[j.result.scope.id for j in decision.attempts],
        )
    )  # fmt: skip
    return evidence(query, decision, policy)
