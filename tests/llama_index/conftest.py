"""Fixtures of the LlamaIndex tests: the guarded bundled model and an index over the corpus."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.instrumentation import get_dispatcher

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


@pytest.fixture
def restored_globals() -> Iterator[None]:
    """LlamaIndex's global ``Settings`` (LLM, embedding) and root event handlers, as they were."""
    saved = (Settings._llm, Settings._embed_model)
    handlers = list(get_dispatcher().event_handlers)
    yield
    Settings._llm, Settings._embed_model = saved
    get_dispatcher().event_handlers[:] = handlers
