"""The public surface is small, listed in __all__, and has one exception root."""

from __future__ import annotations

from types import ModuleType

import guardrail

PUBLIC = [
    "METADATA_KEY",
    "Action",
    "Attempt",
    "AttemptLoop",
    "Calibration",
    "CalibrationError",
    "CaptureError",
    "ContextLengthError",
    "DatasetError",
    "Decision",
    "Evidence",
    "ExplicitSpan",
    "Guard",
    "HallucinationDetected",
    "HeuristicLocalizer",
    "InvalidInputError",
    "Judged",
    "LLMExtractionLocalizer",
    "ModelError",
    "NoContextError",
    "NonFiniteLogitsError",
    "NotGuardedError",
    "Policy",
    "RetryStep",
    "Span",
    "SpillguardError",
    "TokenScores",
    "TokenStep",
    "UnscoredResponseError",
    "Verdict",
    "WholeAnswer",
    "arun_attempts",
    "run_attempts",
]


def test_public_api_is_pinned() -> None:
    assert guardrail.__all__ == PUBLIC
    exported = sorted(n for n, v in vars(guardrail).items() if not n.startswith("_") and not isinstance(v, ModuleType))
    assert exported == sorted(PUBLIC)


def test_exception_tree_has_one_root() -> None:
    errors = [getattr(guardrail, n) for n in PUBLIC if n.endswith(("Error", "Detected"))]
    assert all(issubclass(e, guardrail.SpillguardError) for e in errors)
    assert issubclass(guardrail.InvalidInputError, ValueError)
    assert issubclass(guardrail.CalibrationError, ValueError)
