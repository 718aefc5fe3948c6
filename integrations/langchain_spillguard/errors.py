"""Exceptions of the LangChain integration, all under :class:`guardrail.SpillguardError`.

Decisions are return values; these are raised only when asked for (``raise_on_hallucination``
on the chat model or the guard, ``raise_error=True`` on the callback handler), so that
``with_retry(retry_if_exception_type=(HallucinationFlagged,))`` and
``with_fallbacks(..., exceptions_to_handle=(HallucinationFlagged,))`` compose natively.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from uuid import UUID

from guardrail.errors import ModelError, SpillguardError

if TYPE_CHECKING:
    from guardrail.verdict import Verdict

__all__ = ["HallucinationFlagged", "NotGuardedError", "UnscoredResponseError"]


class HallucinationFlagged(SpillguardError):
    """A LangChain run produced an answer that scored above the threshold.

    Attributes:
        evidence: the ``response_metadata["spillguard"]`` dict of the flagged answer
            (answer, score, threshold, span, per-token scores of every attempt).
        run_id: the LangChain run that produced it, when known.
        verdict: the core :class:`~guardrail.verdict.Verdict`, when raised by the chat model.
    """

    def __init__(
        self,
        evidence: Mapping[str, Any],
        *,
        run_id: UUID | None = None,
        verdict: Verdict | None = None,
        message: str | None = None,
    ) -> None:
        self.evidence = dict(evidence)
        self.run_id = run_id
        self.verdict = verdict
        super().__init__(message or _describe(self.evidence, run_id))

    @property
    def score(self) -> float:
        """The flagged answer's score (``inf`` when it could not be scored)."""
        score = self.evidence.get("score")
        return math.inf if score is None else float(score)

    @property
    def threshold(self) -> float | None:
        """The threshold the score was compared with."""
        threshold = self.evidence.get("threshold")
        return None if threshold is None else float(threshold)


class UnscoredResponseError(HallucinationFlagged):
    """A response carried no spillguard scores, so it cannot be judged and is never allowed.

    Subclasses :class:`HallucinationFlagged` so that fallbacks for flagged answers also catch it.
    """

    def __init__(self, what: str, *, run_id: UUID | None = None) -> None:
        super().__init__(
            {"score": None, "threshold": None, "unscored": what},
            run_id=run_id,
            message=(
                f"{what} carries no spillguard scores (no response_metadata['spillguard']), so it "
                "cannot be judged; produce it with ChatSpillguard and keep the AIMessage "
                "(put output parsers after the guard)" + (f" [run {run_id}]" if run_id else "")
            ),
        )


class NotGuardedError(ModelError):
    """A runnable that can never carry spillguard scores was given to the guard."""


def _describe(evidence: Mapping[str, Any], run_id: UUID | None) -> str:
    score = evidence.get("score")
    threshold = evidence.get("threshold")
    shown = "inf (empty answer)" if score is None else f"{float(score):.3f}"
    limit = "?" if threshold is None else f"{float(threshold):.3f}"
    span = (evidence.get("span") or {}).get("text", "")
    where = f" [run {run_id}]" if run_id else ""
    return (
        f"answer {evidence.get('answer', '')!r} looks hallucinated: score {shown} > threshold "
        f"{limit} (scored span {span!r}){where}"
    )
