"""Each LangChain example runs end to end with the real bundled model (in this process, so the
model loads once; ``python examples/langchain_xxx.py`` runs the same ``main``)."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest

from guardrail import Calibration

pytest.importorskip("langchain_core")

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _main(name: str) -> Any:
    return runpy.run_path(str(EXAMPLES / name))["main"]


def test_examples_are_short() -> None:
    for path in EXAMPLES.glob("langchain_*.py"):
        assert len(path.read_text().splitlines()) < 80, path.name


def test_qa_callback_example_flags_the_wrong_answer(real_guard: Any, capsys: pytest.CaptureFixture[str]) -> None:
    handler = _main("langchain_qa_callback.py")()
    assert [r.prompt for r in handler.flagged.values()] == ["What is the capital of Honduras?"]
    assert "flagged" in capsys.readouterr().out


def test_retry_example_regenerates(real_guard: Any) -> None:
    verdict = _main("langchain_retry.py")()
    attempts = verdict["guard"]["attempts"]
    assert len(attempts) >= 2 and attempts[0]["decoding"] == "greedy" and attempts[1]["decoding"].startswith("sample")
    assert verdict["score"] == min(a["score"] for a in attempts)


def test_abstain_example_abstains_on_the_wrong_answer(real_guard: Any) -> None:
    shown = _main("langchain_abstain.py")()
    assert "Paris" in shown[0] and shown[1] == "I don't know."


def test_rag_example_scores_the_answer_span_not_the_context(
    real_guard: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    found = _main("langchain_rag.py")()
    assert [span for _, span in found][:3] == ["Canberra", "Nairobi", "1911"]
    out = capsys.readouterr().out
    assert "built in [1911]." in out
    answers = out.split("Q: ")[1:]
    assert all(a.rstrip().endswith("-> allow") for a in answers[:3])  # copied from the documents
    assert answers[3].rstrip().endswith("-> flag")  # a designer the documents do not name
    assert f"threshold {Calibration.bundled('rag').threshold:.2f}" in out  # the RAG calibration gates it


def test_agent_example_abstains_on_the_wrong_answer(real_guard: Any) -> None:
    pytest.importorskip("langchain.agents")
    france, honduras = _main("langchain_agent.py")()
    assert "Paris" in france["messages"][-1].content and france["spillguard"]["action"] == "allow"
    assert honduras["messages"][-1].content == "I don't know." and "Bahia" in honduras["spillguard"]["answer"]
