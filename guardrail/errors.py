"""Exceptions raised by spillguard, its toolkit, its command line and its host adapters.

One root, one tree, for the core and every adapter alike::

    SpillguardError
    ├── InvalidInputError (ValueError)     bad argument or input text; names the argument
    │   ├── ContextLengthError             prompt + new tokens exceed the model's context
    │   └── NoContextError (LookupError)   a RAG pipeline retrieved nothing to answer from
    ├── ModelError (TypeError)             model/tokenizer unusable: no logits, vocab mismatch
    │   └── NotGuardedError                a model, chain or engine that yields no spillguard verdict
    ├── CaptureError (RuntimeError)        scoring failed while the model ran
    │   └── NonFiniteLogitsError           NaN or inf in the raw logits: never a silent "allow"
    ├── CalibrationError (ValueError)      bad, tampered or foreign calibration (file or values)
    ├── DatasetError (OSError)             a labelled dataset cannot be fetched or read (toolkit)
    └── HallucinationDetected              opt-in: the answer scored above the threshold
        └── UnscoredResponseError          an answer without valid spillguard evidence

Decisions are return values; :class:`HallucinationDetected` is only raised when asked for
(``Verdict.raise_for_hallucination()``, or an adapter's ``raise_on_hallucination``), and it
carries the evidence. :class:`UnscoredResponseError` subclasses it so that whatever handles
flagged answers (a LangChain fallback, say) also handles answers that cannot be judged: an
unscored answer is never allowed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from guardrail.verdict import Evidence, Verdict

__all__ = [
    "CalibrationError",
    "CaptureError",
    "ContextLengthError",
    "DatasetError",
    "HallucinationDetected",
    "InvalidInputError",
    "ModelError",
    "NoContextError",
    "NonFiniteLogitsError",
    "NotGuardedError",
    "SpillguardError",
    "UnscoredResponseError",
]


class SpillguardError(Exception):
    """Root of every exception spillguard raises on purpose."""


class InvalidInputError(SpillguardError, ValueError):
    """An argument or an input text is unusable; the message names it and shows the value."""


class ContextLengthError(InvalidInputError):
    """The prompt plus the tokens to generate do not fit the model's context window."""


class NoContextError(InvalidInputError, LookupError):
    """A retrieval pipeline found no source (an empty index?), so no answer was generated."""


class ModelError(SpillguardError, TypeError):
    """The model or tokenizer cannot be scored (no logits, vocabulary mismatch, ...)."""


class NotGuardedError(ModelError):
    """A model, chain or engine was given that can never yield a spillguard verdict."""


class CaptureError(SpillguardError, RuntimeError):
    """Scoring failed while the model ran (hooks not reached, unsupported decoding, ...)."""


class NonFiniteLogitsError(CaptureError):
    """The raw logits held NaN or inf where a score needs them."""


class CalibrationError(SpillguardError, ValueError):
    """A calibration is malformed, tampered with, of an unknown version or for another model."""


class DatasetError(SpillguardError, OSError):
    """A labelled dataset cannot be fetched or read: not fetched yet, no network, a corrupt or
    foreign archive, a missing system package."""


class HallucinationDetected(SpillguardError):
    """The answer scored above the threshold; raised only on request.

    Args:
        evidence: the :class:`~guardrail.Verdict`, or the :class:`~guardrail.Evidence` read back
            from a host's metadata.
        run_id: the host run that produced the answer, when known (LangChain).

    Attributes:
        evidence: the :class:`~guardrail.Evidence` (answer, text, action, score, threshold, span,
            attempts); ``None`` only for an :class:`UnscoredResponseError`.
        verdict: the full :class:`~guardrail.Verdict` with per-token scores, when in hand.
        run_id: as given.
    """

    def __init__(self, evidence: Verdict | Evidence | None, *, run_id: UUID | None = None, message: str = "") -> None:
        from guardrail.verdict import Verdict  # the verdict module imports this one

        self.verdict: Verdict | None = evidence if isinstance(evidence, Verdict) else None
        self.evidence: Evidence | None = evidence.evidence if isinstance(evidence, Verdict) else evidence
        self.run_id = run_id
        super().__init__(message or _describe(self.evidence, run_id))

    @property
    def score(self) -> float:
        """The flagged answer's score (``inf`` when it could not be scored)."""
        return self.evidence.score if self.evidence is not None else math.inf

    @property
    def threshold(self) -> float | None:
        """The threshold the score was compared with (``None`` when unscored)."""
        return self.evidence.threshold if self.evidence is not None else None


class UnscoredResponseError(HallucinationDetected):
    """An answer carries no valid spillguard evidence, so it cannot be judged and is never allowed.

    Raised where an adapter would otherwise have to trust text it did not score: a response
    without spillguard metadata, metadata that does not belong to the returned text (a later
    step rewrote it, or it was forged), or an engine whose final text no guarded call produced.
    """

    def __init__(self, what: str, why: str, *, run_id: UUID | None = None) -> None:
        self.what, self.why = what, why
        where = f" [run {run_id}]" if run_id else ""
        super().__init__(None, run_id=run_id, message=f"{what} cannot be judged: {why}{where}")


def _describe(evidence: Any, run_id: UUID | None) -> str:
    if evidence is None:
        return "an answer was flagged"
    shown = f"{evidence.score:.3f}" if math.isfinite(evidence.score) else "inf (empty or unscorable answer)"
    where = f" [run {run_id}]" if run_id else ""
    return (
        f"answer {evidence.answer!r} looks hallucinated: score {shown} > threshold {evidence.threshold:.3f} "
        f"(scored span {evidence.span_text!r}){where}"
    )
