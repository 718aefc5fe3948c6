"""The public surface is small, listed in __all__, and has one exception root."""

from __future__ import annotations

from types import ModuleType

import guardrail

PUBLIC = [
    "Action",
    "Attempt",
    "Calibration",
    "CalibrationError",
    "CaptureError",
    "ContextLengthError",
    "ExplicitSpan",
    "Guard",
    "HallucinationDetected",
    "HeuristicLocalizer",
    "InvalidInputError",
    "LLMExtractionLocalizer",
    "ModelError",
    "NonFiniteLogitsError",
    "Policy",
    "Span",
    "SpillguardError",
    "TokenScores",
    "TokenStep",
    "Verdict",
    "WholeAnswer",
]


def test_public_api_is_pinned() -> None:
    assert guardrail.__all__ == PUBLIC
    exported = sorted(n for n, v in vars(guardrail).items() if not n.startswith("_") and not isinstance(v, ModuleType))
    assert exported == PUBLIC


def test_exception_tree_has_one_root() -> None:
    errors = [getattr(guardrail, n) for n in PUBLIC if n.endswith(("Error", "Detected"))]
    assert all(issubclass(e, guardrail.SpillguardError) for e in errors)
    assert issubclass(guardrail.InvalidInputError, ValueError)
    assert issubclass(guardrail.CalibrationError, ValueError)
