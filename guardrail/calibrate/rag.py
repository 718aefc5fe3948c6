"""Retrieval-augmented prompts: the shapes the integrations send (the ``rag:SOURCE`` dev tasks
that use them are in :mod:`guardrail.calibrate.datasets`).

Shapes (:data:`SHAPES`), each a list of chat messages with ``{context}`` and ``{question}``:

- ``llamaindex``: LlamaIndex's default text-QA prompt for chat models (its system message and
  its ``text_qa`` user message, word for word), what a query engine over a chat LLM sends;
- ``langchain``: one human message holding instructions, question and context (the widely used
  LangChain RAG prompt);
- ``langchain-system``: the context in a system message, the question as the human message (the
  shape of ``examples/langchain_rag.py``).
"""

from __future__ import annotations

from guardrail.errors import InvalidInputError

__all__ = ["SHAPES", "render"]

LLAMAINDEX_SYSTEM = (
    "You are an expert Q&A system that is trusted around the world.\n"
    "Always answer the query using the provided context information, and not prior knowledge.\n"
    "Some rules to follow:\n"
    "1. Never directly reference the given context in your answer.\n"
    "2. Avoid statements like 'Based on the context, ...' or 'The context information ...' or anything along "
    "those lines."
)
LLAMAINDEX_TEXT_QA = (
    "Context information is below.\n---------------------\n{context}\n---------------------\n"
    "Given the context information and not prior knowledge, answer the query.\nQuery: {question}\nAnswer: "
)
LANGCHAIN_RAG = (
    "You are an assistant for question-answering tasks. Use the following pieces of retrieved context to "
    "answer the question. If you don't know the answer, just say that you don't know. Use three sentences "
    "maximum and keep the answer concise.\nQuestion: {question} \nContext: {context} \nAnswer:"
)

SHAPES: dict[str, tuple[tuple[str, str], ...]] = {
    "llamaindex": (("system", LLAMAINDEX_SYSTEM), ("user", LLAMAINDEX_TEXT_QA)),
    "langchain": (("user", LANGCHAIN_RAG),),
    "langchain-system": (
        ("system", "Context:\n{context}\nAnswer the question in one full sentence."),
        ("user", "{question}"),
    ),
}


def render(template: str | None, context: str, question: str) -> list[dict[str, str]]:
    """The chat messages of one RAG prompt.

    Args:
        template: a name of :data:`SHAPES` (default ``llamaindex``), or a format string with
            ``{context}`` and ``{question}`` sent as one user message.
        context: the retrieved passages.
        question: the user's query.
    """
    name = template or "llamaindex"
    if name in SHAPES:
        messages = SHAPES[name]
    elif "{context}" in name and "{question}" in name:
        messages = (("user", name),)
    else:
        raise InvalidInputError(
            f"`template` must name a prompt shape ({', '.join(SHAPES)}) or be a format string with "
            f"{{context}} and {{question}}, got {template!r}"
        )
    out = []
    for role, text in messages:
        try:
            content = text.replace("{context}", context).replace("{question}", question)
        except (TypeError, AttributeError) as exc:
            raise InvalidInputError(f"`context` and `question` must be str, got {context!r}, {question!r}") from exc
        out.append({"role": role, "content": content})
    return out
