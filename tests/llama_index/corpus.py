"""A tiny offline corpus for the LlamaIndex tests: three paragraphs, two questions, an embedding."""

from __future__ import annotations

import hashlib
import math
import re

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding

DOCUMENTS = [
    "The Harrowgate lighthouse was built in 1871 by the engineer Miriam Okafor.",
    "The ferry from Harrowgate to the island of Skarn takes 50 minutes.",
    "The Harrowgate Gulls football club plays at Tidewater Park.",
]
Q_LIGHTHOUSE = "Who built the Harrowgate lighthouse?"
Q_FERRY = "How long does the ferry to Skarn take?"
FLAG_ALL = -1e9
ALLOW_ALL = 1e9


class HashEmbedding(BaseEmbedding):
    """Deterministic hashed bag of words: enough for retrieval over a few short documents."""

    dim: int = 256

    @classmethod
    def class_name(cls) -> str:
        return "HashEmbedding"

    def _vector(self, text: str) -> Embedding:
        vector = [0.0] * self.dim
        for word in re.findall(r"\w+", text.lower()):
            vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [v / norm for v in vector]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._vector(text)
