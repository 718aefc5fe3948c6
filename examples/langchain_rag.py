"""A small RAG chain over local documents, guarded by spilled energy (no network).

The retriever is a tiny keyword-overlap retriever written as a ``BaseRetriever``.
Run: python examples/langchain_rag.py
"""

import re

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnablePassthrough

from guardrail import Policy
from langchain_spillguard import ChatSpillguard, SpillguardRunnable

DOCUMENTS = [
    Document("Nairobi is the capital of Kenya.", metadata={"id": "kenya"}),
    Document("Canberra is the capital city of Australia.", metadata={"id": "australia"}),
    Document("The Eiffel Tower is a wrought-iron tower in Paris, France.", metadata={"id": "eiffel"}),
    Document("Mount Kilimanjaro is the highest mountain in Africa.", metadata={"id": "kilimanjaro"}),
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


def main() -> list[str]:
    retriever = KeywordRetriever(documents=DOCUMENTS)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Context:\n{context}\nAnswer the question in one full sentence."), ("human", "{question}")]
    )
    context = retriever | (lambda docs: "\n".join(d.page_content for d in docs))
    answer = SpillguardRunnable(
        {"context": context, "question": RunnablePassthrough()} | prompt | ChatSpillguard(max_tokens=24),
        policy=Policy(on_hallucination="abstain"),
    )
    chain = answer | StrOutputParser()
    answers = []
    # Chad is in no document: the model answers from memory, wrongly, and the guard abstains.
    for question in [
        "What is the capital of Australia?",
        "What is the capital of Kenya?",
        "What is the capital of Chad?",
    ]:
        answers.append(chain.invoke(question))
        print(f"Q: {question}\nA: {answers[-1]}")
    return answers


if __name__ == "__main__":
    main()
