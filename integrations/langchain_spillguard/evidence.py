"""What a guarded answer carries in LangChain messages, and how to read it back.

A :class:`~langchain_spillguard.ChatSpillguard` answer holds, in ``AIMessage.response_metadata``
(and in its ``generation_info``):

- ``"spillguard"``: the verdict, JSON-ready (:meth:`guardrail.Verdict.to_dict`): ``action``,
  ``answer``, ``text``, ``score`` (``None`` for an empty answer, which is never allowed),
  ``threshold``, ``hallucinated``, ``span``, ``calibration`` and every attempt with its
  per-token ``tokens``, ``spilled_energy``, ``logprob``, ... arrays;
- ``"logprobs"``: OpenAI-shaped ``{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}``
  of the chosen answer, for tools that read logprobs (``top_logprobs`` is always empty);
- ``"model_name"``, ``"model_provider"`` and ``"finish_reason"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration

from guardrail.verdict import Verdict

__all__ = ["DECODING_KEY", "METADATA_KEY", "Evidence", "evidence_of", "logprobs_of", "verdict_metadata"]

METADATA_KEY = "spillguard"
"""Key of the verdict in ``response_metadata``."""

DECODING_KEY = "spillguard_decoding"
"""Key, in a run's config ``metadata``, of a decoding change for the guarded models of that run."""

STEPS_KEY = "spillguard_steps"
"""Key of the per-token energies in streamed chunks (one token late)."""


@dataclass(frozen=True)
class Evidence:
    """The spillguard verdict read back from a message.

    Attributes:
        answer: the model's answer (also when the text shown is an abstention).
        text: the message text the verdict produced.
        action: ``"allow"``, ``"flag"`` or ``"abstain"``.
        score: the answer's score, higher = more likely hallucinated; ``inf`` if unscorable.
        threshold: the calibrated threshold.
        data: the whole ``response_metadata["spillguard"]`` dict.
    """

    answer: str
    text: str
    action: str
    score: float
    threshold: float
    data: Mapping[str, Any]

    @property
    def hallucinated(self) -> bool:
        """Whether the answer scored above the threshold (an unscorable answer always does)."""
        return not self.score <= self.threshold

    def flagged_by(self, threshold: float | None) -> bool:
        """Whether the answer is above ``threshold`` (default: the calibrated threshold)."""
        return not self.score <= (self.threshold if threshold is None else threshold)

    @classmethod
    def from_metadata(cls, data: Mapping[str, Any]) -> Evidence:
        """Parse ``response_metadata["spillguard"]``."""
        score = data.get("score")
        return cls(
            answer=str(data.get("answer", "")),
            text=str(data.get("text", "")),
            action=str(data.get("action", "")),
            score=math.inf if score is None else float(score),
            threshold=float(data["threshold"]),
            data=data,
        )


def evidence_of(output: object) -> Evidence | None:
    """The spillguard evidence of a message or generation, or ``None`` if it carries none.

    Args:
        output: an ``AIMessage`` (or chunk), a ``ChatGeneration``, or a ``response_metadata``
            mapping.
    """
    if isinstance(output, ChatGeneration):
        metadata: object = {**(output.generation_info or {}), **output.message.response_metadata}
    elif isinstance(output, BaseMessage):
        metadata = output.response_metadata
    else:
        metadata = output
    if not isinstance(metadata, Mapping):
        return None
    data = metadata.get(METADATA_KEY)
    if not isinstance(data, Mapping) or "threshold" not in data:
        return None
    return Evidence.from_metadata(data)


def logprobs_of(verdict: Verdict) -> dict[str, list[dict[str, Any]]]:
    """OpenAI-shaped logprobs of the chosen answer's tokens."""
    best = verdict.best
    return {
        "content": [
            {"token": token, "logprob": float(lp), "bytes": list(token.encode("utf-8")), "top_logprobs": []}
            for token, lp in zip(best.tokens, best.scores.logprob, strict=True)
        ]
    }


def verdict_metadata(verdict: Verdict) -> dict[str, Any]:
    """The ``generation_info`` / ``response_metadata`` entries of a verdict."""
    return {METADATA_KEY: verdict.to_dict(), "logprobs": logprobs_of(verdict)}
