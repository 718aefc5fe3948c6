"""Verdicts as LlamaIndex response fields: ``additional_kwargs`` and ``logprobs``."""

from __future__ import annotations

import math
from typing import Any

from llama_index.core.base.llms.types import LogProb

from guardrail import METADATA_KEY, Verdict

__all__ = ["METADATA_KEY", "verdict_evidence", "verdict_logprobs"]


def verdict_evidence(verdict: Verdict, *, query_id: str | None = None) -> dict[str, Any]:
    """JSON-ready, sealed evidence of one LLM call, as put under ``additional_kwargs["spillguard"]``.

    Keys: those of :meth:`guardrail.Verdict.to_dict` (``action``, ``hallucinated``, ``score``
    (higher = more likely hallucinated; ``None`` for an empty answer), ``threshold``, ``answer``,
    ``text``, ``span``, ``calibration``, ``attempts``, ``chosen``, ``seal``) and ``query_id`` (the
    guarded query attempt the call belonged to, or ``None``). Per-token values are in the
    response's ``logprobs`` and in its ``raw`` verdict.
    """
    return {**verdict.to_dict(per_token=False), "query_id": query_id}


def verdict_logprobs(verdict: Verdict) -> list[list[LogProb]]:
    """Per-token log-probabilities of the chosen answer (raw logits, temperature 1).

    One inner list per answer token, holding only the chosen token (no top alternatives).
    """
    best = verdict.best
    values = best.scores.logprob.tolist()
    return [
        [LogProb(token=token, logprob=float(lp) if math.isfinite(lp) else -math.inf, bytes=list(token.encode("utf-8")))]
        for token, lp in zip(best.tokens, values, strict=True)
    ]
