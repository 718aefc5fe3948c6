"""``SpillguardEvaluator``: a LlamaIndex evaluator judging answers by spilled energy.

>>> evaluator = SpillguardEvaluator(llm)
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

from guardrail import METADATA_KEY, Evidence, Guard, InvalidInputError, UnscoredResponseError, Verdict
from guardrail.validation import check_bool, check_finite, check_text
from llama_index_spillguard.llm import SpillguardLLM

__all__ = ["SpillguardEvaluator"]


class SpillguardEvaluator(BaseEvaluator):
    """Passes an answer whose spillguard score is at or below the threshold.

    Unlike LLM-judge evaluators it reads logits, not text: for a :class:`Response` from a
    :class:`SpillguardQueryEngine` it reads ``metadata["spillguard"]`` (no model call);
    otherwise it scores the answer teacher-forced with the guard, against a prompt holding
    the contexts and the query. ``score`` is the spillguard score (**higher = more likely
    hallucinated**, ``None`` for an empty answer), ``passing`` is ``score <= threshold``.

    It works with LlamaIndex's ``RetryQueryEngine`` only around a ``BaseQueryEngine`` that
    implements ``_query`` (not a ``CustomQueryEngine``), and that engine needs ``Settings.llm``
    set for its feedback rewriting; prefer :class:`SpillguardQueryEngine` with a retry policy.

    Args:
        llm: a :class:`SpillguardLLM` or :class:`guardrail.Guard` for answers without
            evidence; ``None`` evaluates only responses that carry it.
        threshold: override the calibration's threshold.
        grounding: with ``contexts``, score with the grounding feature added to the guard's
            calibration, as :class:`SpillguardQueryEngine` does (an answer whose span is not in
            the contexts or the query is flagged); ``False``: the calibration as is.
    """

    def __init__(
        self, llm: SpillguardLLM | Guard | None = None, *, threshold: float | None = None, grounding: bool = True
    ) -> None:
        if llm is not None and not isinstance(llm, (SpillguardLLM, Guard)):
            raise InvalidInputError(
                f"`llm` must be a SpillguardLLM or a guardrail.Guard, got {type(llm).__name__}: {llm!r}"
            )
        self._guard = llm.guard if isinstance(llm, SpillguardLLM) else llm
        self._threshold = None if threshold is None else check_finite("threshold", threshold)
        self._grounding = check_bool("grounding", grounding)

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
                "score it; pass `llm=` (a SpillguardLLM or Guard) to SpillguardEvaluator"
            )
        check_text("query", query)
        check_text("response", response)
        assert query is not None and response is not None
        contexts = _contexts(contexts)
        prompt = _prompt(query, contexts)
        guard = self._guard.with_grounding() if self._grounding and contexts else self._guard
        verdict = guard.check([{"role": "user", "content": prompt}], response, localize_in=query)
        return _result(query, response, contexts, verdict.score, self._threshold_of(verdict), verdict.span.text)

    def _threshold_of(self, verdict: Verdict) -> float:
        return verdict.threshold if self._threshold is None else self._threshold


def _contexts(contexts: object) -> tuple[str, ...]:
    """``contexts`` as a tuple of passages: a list or tuple of strings, or ``None`` for none (a
    single string would be read as one passage per character)."""
    if contexts is None:
        return ()
    if not isinstance(contexts, (list, tuple)) or not all(isinstance(c, str) for c in contexts):
        raise InvalidInputError(f"`contexts` must be a list of str (the retrieved passages), got {contexts!r}")
    return tuple(contexts)


def _prompt(query: str, contexts: Sequence[str]) -> str:
    if not contexts:
        return query
    joined = "\n\n".join(contexts)
    rule = "---------------------"
    return f"Context information is below.\n{rule}\n{joined}\n{rule}\nQuery: {query}\nAnswer: "


def _from_metadata(query: str | None, response: Response | None, threshold: float | None) -> EvaluationResult | None:
    """The result read from a response's own evidence (``None`` when it carries none).

    Evidence that is not sealed, or is not about the response's text, fails: it cannot be judged.
    """
    data = (getattr(response, "metadata", None) or {}).get(METADATA_KEY)
    if response is None or data is None:
        return None
    contexts = [n.get_content() for n in response.source_nodes]
    try:
        evidence = Evidence.from_dict(data).check(str(response.response), what="the response")
    except UnscoredResponseError as exc:
        return EvaluationResult(
            query=query,
            contexts=contexts,
            response=str(response.response),
            passing=False,
            score=None,
            feedback=str(exc),
        )
    limit = evidence.threshold if threshold is None else threshold
    return _result(query, evidence.answer, contexts, evidence.score, limit, evidence.span_text)


def _result(
    query: str | None, response: str, contexts: Sequence[str] | None, score: float | None, threshold: float, span: str
) -> EvaluationResult:
    value = score if score is not None and math.isfinite(score) else None
    passing = value is not None and value <= threshold
    if value is None:
        feedback = f"the answer is empty and cannot be scored, so it fails (threshold {threshold:.3f})"
    else:
        verb = "at or below" if passing else "above"
        feedback = f"spillguard score {value:.3f} is {verb} the threshold {threshold:.3f} (scored span {span!r})"
    return EvaluationResult(
        query=query,
        contexts=list(contexts) if contexts is not None else None,
        response=response,
        passing=passing,
        score=value,
        feedback=feedback,
    )
