"""``SpilledEnergyEvaluator``: a LlamaIndex evaluator judging answers by spilled energy.

>>> evaluator = SpilledEnergyEvaluator(llm)
>>> result = evaluator.evaluate_response(query="...", response=engine.query("..."))
>>> result.passing, result.score, result.feedback
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.response.schema import Response
from llama_index.core.evaluation.base import BaseEvaluator, EvaluationResult
from llama_index.core.prompts.mixin import PromptDictType

from guardrail import Guard, InvalidInputError, Verdict
from llama_index_spillguard.evidence import EVIDENCE_KEY
from llama_index_spillguard.llm import SpilledEnergyLLM

__all__ = ["SpilledEnergyEvaluator"]


class SpilledEnergyEvaluator(BaseEvaluator):
    """Passes an answer whose spilled-energy score is at or below the threshold.

    Unlike LLM-judge evaluators it reads logits, not text: for a :class:`Response` from a
    :class:`GuardedQueryEngine` it reads ``metadata["spilled_energy"]`` (no model call);
    otherwise it scores the answer teacher-forced with the guard, against a prompt holding
    the contexts and the query. ``score`` is the spillguard score (**higher = more likely
    hallucinated**, ``None`` for an empty answer), ``passing`` is ``score <= threshold``.

    It works with LlamaIndex's ``RetryQueryEngine`` only around a ``BaseQueryEngine`` that
    implements ``_query`` (not a ``CustomQueryEngine``), and that engine needs ``Settings.llm``
    set for its feedback rewriting; prefer :class:`GuardedQueryEngine` with a retry policy.

    Args:
        llm: a :class:`SpilledEnergyLLM` or :class:`guardrail.Guard` for answers without
            evidence; ``None`` evaluates only responses that carry it.
        threshold: override the calibration's threshold.
    """

    def __init__(self, llm: SpilledEnergyLLM | Guard | None = None, *, threshold: float | None = None) -> None:
        if llm is not None and not isinstance(llm, (SpilledEnergyLLM, Guard)):
            raise InvalidInputError(
                f"`llm` must be a SpilledEnergyLLM or a guardrail.Guard, got {type(llm).__name__}: {llm!r}"
            )
        if threshold is not None and not (isinstance(threshold, (int, float)) and math.isfinite(threshold)):
            raise InvalidInputError(f"`threshold` must be a finite number, got {threshold!r}")
        self._guard = llm.guard if isinstance(llm, SpilledEnergyLLM) else llm
        self._threshold = threshold

    def _get_prompts(self) -> PromptDictType:
        return {}

    def _update_prompts(self, prompts: PromptDictType) -> None:
        """No prompts: nothing to update."""

    def evaluate_response(
        self, query: str | None = None, response: Response | None = None, **kwargs: Any
    ) -> EvaluationResult:
        """Evaluate a query engine's response, from its metadata when present."""
        found = _from_metadata(query, response, self._threshold)
        if found is not None:
            return found
        return super().evaluate_response(query=query, response=response, **kwargs)

    async def aevaluate_response(
        self, query: str | None = None, response: Response | None = None, **kwargs: Any
    ) -> EvaluationResult:
        """Async :meth:`evaluate_response`."""
        found = _from_metadata(query, response, self._threshold)
        if found is not None:
            return found
        return await super().aevaluate_response(query=query, response=response, **kwargs)

    def evaluate(
        self,
        query: str | None = None,
        response: str | None = None,
        contexts: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> EvaluationResult:
        """Score ``response`` to ``query`` (given ``contexts``) teacher-forced."""
        return self._check(query, response, contexts)

    async def aevaluate(
        self,
        query: str | None = None,
        response: str | None = None,
        contexts: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> EvaluationResult:
        """:meth:`evaluate` in a worker thread."""
        return await asyncio.to_thread(self._check, query, response, contexts)

    def _check(self, query: str | None, response: str | None, contexts: Sequence[str] | None) -> EvaluationResult:
        if self._guard is None:
            raise InvalidInputError(
                "this response carries no spilled-energy metadata and the evaluator has no model to "
                "score it; pass `llm=` (a SpilledEnergyLLM or Guard) to SpilledEnergyEvaluator"
            )
        if not isinstance(query, str) or not query.strip():
            raise InvalidInputError(f"`query` must contain a non-space character, got {query!r}")
        if not isinstance(response, str) or not response.strip():
            raise InvalidInputError(f"`response` must contain a non-space character, got {response!r}")
        prompt = _prompt(query, contexts or ())
        verdict = self._guard.check([{"role": "user", "content": prompt}], response, localize_in=query)
        return _result(query, response, contexts, verdict.score, self._threshold_of(verdict), verdict.span.text)

    def _threshold_of(self, verdict: Verdict) -> float:
        return verdict.threshold if self._threshold is None else self._threshold


def _prompt(query: str, contexts: Sequence[str]) -> str:
    if not contexts:
        return query
    joined = "\n\n".join(contexts)
    rule = "---------------------"
    return f"Context information is below.\n{rule}\n{joined}\n{rule}\nQuery: {query}\nAnswer: "


def _from_metadata(query: str | None, response: Response | None, threshold: float | None) -> EvaluationResult | None:
    evidence = (getattr(response, "metadata", None) or {}).get(EVIDENCE_KEY)
    if response is None or not isinstance(evidence, dict):
        return None
    score = evidence.get("score")
    limit = float(evidence["threshold"]) if threshold is None else threshold
    contexts = [n.get_content() for n in response.source_nodes]
    return _result(
        query, str(evidence.get("answer", response.response)), contexts, score, limit, evidence["span"]["text"]
    )


def _result(
    query: str | None, response: str, contexts: Sequence[str] | None, score: float | None, threshold: float, span: str
) -> EvaluationResult:
    value = score if score is not None and math.isfinite(score) else None
    passing = value is not None and value <= threshold
    if value is None:
        feedback = f"the answer is empty and cannot be scored, so it fails (threshold {threshold:.3f})"
    else:
        verb = "at or below" if passing else "above"
        feedback = f"spilled-energy score {value:.3f} is {verb} the threshold {threshold:.3f} (scored span {span!r})"
    return EvaluationResult(
        query=query,
        contexts=list(contexts) if contexts is not None else None,
        response=response,
        passing=passing,
        score=value,
        feedback=feedback,
    )
