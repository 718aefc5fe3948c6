"""A small RAG chain over local documents, guarded by spilled energy (no network).

The prompt has the common RAG shape: the retrieved context and the question in one human
message. ``question_key`` tells the guard which part is the question, so the scored span is the
answer ("1911"), not words copied from the context. The retriever is a tiny keyword-overlap
``BaseRetriever``. ``Calibration.bundled("rag")`` is the default detector plus the grounding
check: an answer whose span is not written in the prompt is flagged. It lets the three answers
copied from the documents through ("built in 1911") and flags the invented designer of the
lighthouse, which the documents do not name. Run: python examples/langchain_rag.py
"""

import re

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnablePassthrough

from guardrail import Calibration
from langchain_spillguard import ChatSpillguard, SpillguardRunnable

DOCUMENTS = [
    Document("Nairobi is the capital of Kenya.", metadata={"id": "kenya"}),
    Document("Canberra is the capital city of Australia.", metadata={"id": "australia"}),
    Document(
        "The Harrowgate Lighthouse was built in 1911. It stands on the northern cliffs of Wexley Bay "
        "and was automated in 1985.",
        metadata={"id": "lighthouse"},
    ),
]
QUESTIONS = [
    "What is the capital of Australia?",
    "What is the capital of Kenya?",
    "In which year was the Harrowgate Lighthouse built?",
    "Who designed the Harrowgate Lighthouse?",  # not in the documents
]


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


class KeywordRetriever(BaseRetriever):
    """Ranks documents by the number of words they share with the query."""

    documents: list[Document]
    k: int = 1

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        ranked = sorted(self.documents, key=lambda d: len(words(d.page_content) & words(query)), reverse=True)
        return ranked[: self.k]


def main() -> list[tuple[str, str]]:
    retriever = KeywordRetriever(documents=DOCUMENTS)
    prompt = ChatPromptTemplate.from_messages(
        [("human", "Answer the question using the context.\n\nContext:\n{context}\n\nQuestion: {question}")]
    )
    context = retriever | (lambda docs: "\n".join(d.page_content for d in docs))
    chain = (
        {"context": context, "question": RunnablePassthrough()}
        | prompt
        | ChatSpillguard(max_tokens=24, calibration=Calibration.bundled("rag"))
    )
    guarded = SpillguardRunnable(chain, question_key="question")  # the string input is the question
    found = []
    for question in QUESTIONS:
        verdict = guarded.invoke(question).response_metadata["spillguard"]
        span, answer = verdict["span"], verdict["answer"]
        marked = f"{answer[: span['char_start']]}[{span['text']}]{answer[span['char_end'] :]}"
        print(f"Q: {question}\nA: {marked}\n   score {verdict['score']:.2f}, threshold {verdict['threshold']:.2f}")
        print(f"   -> {verdict['action']}")
        found.append((answer, span["text"]))
    return found


if __name__ == "__main__":
    main()
