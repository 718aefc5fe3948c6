"""What a guarded answer carries in LangChain messages, and how to read it back.

A :class:`~langchain_spillguard.ChatSpillguard` answer holds, in ``AIMessage.response_metadata``
(and in its ``generation_info``):

- ``"spillguard"`` (:data:`guardrail.METADATA_KEY`): the sealed verdict,
  :meth:`guardrail.Verdict.to_dict`: ``action``, ``answer``, ``text``, ``score`` (``None`` for an
  empty answer, which is never allowed), ``threshold``, ``hallucinated``, ``span``,
  ``calibration`` and every attempt (per-token arrays only with ``logprobs=True``);
- ``"logprobs"`` (with ``logprobs=True``): OpenAI-shaped ``{"content": [{"token", "logprob",
  "bytes", "top_logprobs"}]}`` of the chosen answer (``top_logprobs`` is always empty);
- ``"model_name"``, ``"model_provider"`` and ``"finish_reason"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration

from guardrail import METADATA_KEY, Evidence, Verdict

__all__ = ["METADATA_KEY", "QUESTION_KEY", "STEPS_KEY", "STEP_KEY", "Evidence", "evidence_of", "logprobs_of"]

STEP_KEY = "spillguard_step"
"""Key, in a run's config ``metadata``, of the :class:`guardrail.RetryStep` (as a dict) that the
guarded chat models of that run generate (set by :class:`~langchain_spillguard.SpillguardRunnable`)."""

QUESTION_KEY = "spillguard_question"
"""Key, in a run's config ``metadata``, of the text the guarded chat models of that run treat as
the question when localizing the answer (``Guard.ask(localize_in=...)``): in RAG, the user's
query rather than the prompt that also holds the retrieved context. Set it yourself
(``config={"metadata": {QUESTION_KEY: query}}``, inherited by every child run) or let
``SpillguardRunnable(question_key="question")`` set it from the chain input."""

STEPS_KEY = "spillguard_steps"
"""Key of the per-token energies in streamed chunks (with ``logprobs=True``; one token late)."""


def evidence_of(output: object) -> Evidence | None:
    """The spillguard evidence of a message or generation, or ``None`` if it carries none.

    Args:
        output: an ``AIMessage`` (or chunk), a ``ChatGeneration``, or a ``response_metadata``
            mapping.

    Raises:
        UnscoredResponseError: the metadata is there but malformed.
    """
    if isinstance(output, ChatGeneration):
        metadata: object = {**(output.generation_info or {}), **output.message.response_metadata}
    elif isinstance(output, BaseMessage):
        metadata = output.response_metadata
    else:
        metadata = output
    if not isinstance(metadata, Mapping) or METADATA_KEY not in metadata:
        return None
    return Evidence.from_dict(metadata[METADATA_KEY])


def logprobs_of(verdict: Verdict) -> dict[str, list[dict[str, Any]]]:
    """OpenAI-shaped logprobs of the chosen answer's tokens."""
    best = verdict.best
    return {
        "content": [
            {"token": token, "logprob": float(lp), "bytes": list(token.encode("utf-8")), "top_logprobs": []}
            for token, lp in zip(best.tokens, best.scores.logprob, strict=True)
        ]
    }
