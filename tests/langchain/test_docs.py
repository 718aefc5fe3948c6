"""Every Python snippet of docs/langchain.md runs, in order, on the bundled model, and every
value a snippet line shows in its comment (``expr  # 1.09``, ``expr  # 'Paris'``) is what the
expression gives now (numbers to the digits shown)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain.agents")

from tests.docs import python_blocks, run_snippets

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "langchain.md"


def test_every_snippet_runs_and_shows_what_it_gives(real_guard: Any) -> None:
    checked = run_snippets(DOC, {"__name__": "docs_langchain"})
    assert len(python_blocks(DOC)) >= 8 and checked >= 12


def test_the_documented_numbers_are_the_shipped_calibration(real_guard: Any) -> None:
    """Prose numbers next to the snippets (the threshold) are the shipped calibration's."""
    text = DOC.read_text()
    assert f"threshold={real_guard.calibration.threshold:.2f}" in text
    assert f"threshold ({real_guard.calibration.threshold:.2f})" in text
    assert "9.73" not in text and "threshold 1.0" not in text
