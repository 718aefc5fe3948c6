"""Fixtures of the LlamaIndex tests: the guarded bundled model and an index over the corpus."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, VectorStoreIndex

from guardrail import Guard
from llama_index_spillguard import SpillguardLLM
from tests.llama_index.corpus import DOCUMENTS, HashEmbedding


@pytest.fixture(scope="module")
def llm(real_guard: Guard) -> SpillguardLLM:
    """The bundled model behind ``SpillguardLLM``, 16 new tokens per answer, greedy."""
    return SpillguardLLM(real_guard, generate_kwargs={"max_new_tokens": 16})


@pytest.fixture(scope="module")
def index() -> VectorStoreIndex:
    """A vector index over :data:`tests.llama_index.corpus.DOCUMENTS` (hashed embedding)."""
    return VectorStoreIndex.from_documents([Document(text=t) for t in DOCUMENTS], embed_model=HashEmbedding())
