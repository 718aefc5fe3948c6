"""Verdicts as LlamaIndex response fields: ``additional_kwargs`` and ``logprobs``."""

from __future__ import annotations

import math
from typing import Any

from llama_index.core.base.llms.types import LogProb

from guardrail import Verdict

__all__ = ["EVIDENCE_KEY", "verdict_evidence", "verdict_logprobs"]

EVIDENCE_KEY = "spilled_energy"
"""Key of the evidence in ``additional_kwargs`` and in ``Response.metadata``."""


def verdict_evidence(verdict: Verdict, *, query_id: str | None = None) -> dict[str, Any]:
    """JSON-ready evidence of one LLM call, as put under ``additional_kwargs["spilled_energy"]``.

    Keys: ``action``, ``hallucinated``, ``score`` (higher = more likely hallucinated; ``None``
    for an empty answer), ``threshold``, ``answer``, ``text``, ``span``, ``calibration``,
    ``attempts`` (the guard's own attempts: answer, score, decoding, tokens and per-token
    metrics), ``chosen`` and ``query_id`` (the guarded query the call belonged to, or ``None``).
    """
    return {**verdict.to_dict(), "query_id": query_id}


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
