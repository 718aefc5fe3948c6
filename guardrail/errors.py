"""Exceptions raised by spillguard.

One root, a short tree::

    SpillguardError
    ├── InvalidInputError (ValueError)     bad argument or input text; names the argument
    │   └── ContextLengthError             prompt + new tokens exceed the model's context
    ├── ModelError (TypeError)             model/tokenizer unusable: no logits, vocab mismatch
    ├── CaptureError (RuntimeError)        scoring failed while the model ran
    │   └── NonFiniteLogitsError           NaN or inf in the raw logits: never a silent "allow"
    ├── CalibrationError (ValueError)      bad, tampered or foreign calibration file
    └── HallucinationDetected              opt-in: raised by ``Verdict.raise_for_hallucination``

Decisions are return values; :class:`HallucinationDetected` is only raised when asked for, and
it carries the evidence (the whole :class:`~guardrail.verdict.Verdict`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from guardrail.verdict import Verdict

__all__ = [
    "CalibrationError",
    "CaptureError",
    "ContextLengthError",
    "HallucinationDetected",
    "InvalidInputError",
    "ModelError",
    "NonFiniteLogitsError",
    "SpillguardError",
]


class SpillguardError(Exception):
    """Root of every exception spillguard raises on purpose."""


class InvalidInputError(SpillguardError, ValueError):
    """An argument or an input text is unusable; the message names it and shows the value."""


class ContextLengthError(InvalidInputError):
    """The prompt plus the tokens to generate do not fit the model's context window."""


class ModelError(SpillguardError, TypeError):
    """The model or tokenizer cannot be scored (no logits, vocabulary mismatch, ...)."""


class CaptureError(SpillguardError, RuntimeError):
    """Scoring failed while the model ran (hooks not reached, unsupported decoding, ...)."""


class NonFiniteLogitsError(CaptureError):
    """The raw logits held NaN or inf where a score needs them."""


class CalibrationError(SpillguardError, ValueError):
    """A calibration file is malformed, tampered with, of an unknown version or for another model."""


class HallucinationDetected(SpillguardError):
    """The answer scored above the threshold; raised only on request.

    Attributes:
        verdict: the full evidence (answer, per-token scores, span, score, threshold, attempts).
    """

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        super().__init__(
            f"answer {verdict.answer!r} looks hallucinated: score {verdict.score:.3f} > "
            f"threshold {verdict.threshold:.3f} (scored span {verdict.span.text!r})"
        )
