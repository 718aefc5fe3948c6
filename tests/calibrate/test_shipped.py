"""The shipped calibrations (default, 11-task, RAG), chosen leave-one-task-out, state their goal and expectations."""

from __future__ import annotations

from pathlib import Path

import pytest

import guardrail
from guardrail.calibrate.summary import _expected
from guardrail.calibration import Calibration

DATA = Path(guardrail.__file__).parent / "data"


@pytest.mark.parametrize("name", ["default_calibration.json", "loto_calibration.json", "rag_calibration.json"])
def test_shipped_calibration_states_goal_and_expectations(name: str) -> None:
    calibration = Calibration.load(DATA / name)
    assert calibration.goal.startswith("false-flag-rate=")
    limit = float(calibration.goal.split("=")[1])
    report = calibration.report
    assert report is not None and report.false_flag_rate is not None and report.false_flag_rate <= limit
    assert report.recall > 0 and "leave-one-task-out" in (report.selection or "")
    assert calibration.model is not None and calibration.model.name == "SmolLM2-135M-Instruct-Q4_1"


def test_evaluate_says_the_rag_files_expectations_predate_its_grounding() -> None:
    default, rag = Calibration.bundled("default"), Calibration.bundled("rag")
    assert _expected(rag) == {**(_expected(default) or {}), "selection": rag.report.selection, "before_grounding": True}  # type: ignore[union-attr]
    assert (_expected(default) or {})["before_grounding"] is False
