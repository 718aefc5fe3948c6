"""Every Python snippet of docs/quickstart.md runs, in order, on the bundled model (the one that
needs the reader's own model folder is marked and skipped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from guardrail import Action, Verdict
from guardrail.grounding import ungrounded_note
from tests.docs import python_blocks, run_snippets

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("closed_event_loop")]

DOC = Path(__file__).resolve().parents[2] / "docs" / "quickstart.md"


def test_every_quickstart_snippet_runs(real_guard: Any, capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, Any] = {"__name__": "docs_quickstart"}
    run_snippets(DOC, namespace)
    assert len(python_blocks(DOC)) >= 6
    assert isinstance(namespace["verdict"], Verdict)
    built, painted = namespace["built"], namespace["painted"]  # the RAG section's claims
    assert built.span.text == "Miriam Okafor" and built.action is Action.ALLOW and built.notes == ()
    assert painted.action is Action.FLAG and painted.notes == (ungrounded_note(painted.span.text),)
    out = capsys.readouterr().out
    assert "Action." in out or "allow" in out or "flag" in out  # the printed verdicts
