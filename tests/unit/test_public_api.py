"""The public surface is small, listed in __all__, and free of host frameworks."""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType

import guardrail

PUBLIC = [
    "Action", "Attempt", "Calibration", "CalibrationError", "CaptureError", "ContextLengthError",
    "ExplicitSpan", "Guard", "HallucinationDetected", "HeuristicLocalizer", "InvalidInputError",
    "LLMExtractionLocalizer", "ModelError", "NonFiniteLogitsError", "Policy", "Span",
    "SpillguardError", "TokenScores", "TokenStep", "Verdict", "WholeAnswer",
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


def test_core_never_imports_a_host_framework() -> None:
    code = (
        "import importlib, pkgutil, sys, guardrail\n"
        "for m in pkgutil.walk_packages(guardrail.__path__, 'guardrail.'):\n"
        "    importlib.import_module(m.name)\n"
        "hosts = sorted(m for m in sys.modules if m.split('.')[0] in ('langchain_core', 'langchain', 'llama_index'))\n"
        "assert not hosts, hosts\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
